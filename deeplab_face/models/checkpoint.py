"""Import TF DeepLab model-zoo and TF-slim ImageNet checkpoints (TF1 Saver format).

Keras layers are named after their TF-Slim scopes with '/' written as '__' (layers.py),
so the name map is mechanical, one rule per weight kind:

    Conv2D / Conv2DTranspose  kernel -> <scope>/weights   bias -> <scope>/biases
    DepthwiseConv2D           kernel -> <scope>/depthwise_weights
    BatchNormalization        gamma, beta, moving_mean, moving_variance -> <scope>/<same>

`global_step` and optimiser slots (Momentum, Adam, RMSProp, ExponentialMovingAverage) are
skipped (tf1_checkpoint.py, the reader every TF1 import shares). Any other difference
(missing, unexpected, mis-shaped names) raises CheckpointError with counts and the first few
names, on one line. A checkpoint without head variables (an ImageNet backbone) loads the
backbone only, ignoring the ImageNet classifier scopes, and reports the head as intentionally
not loaded. Import mode "backbone"
(TF DeepLab's initialize_last_layer=False) restores the trunk and the matching head but never
the logits (e.g. 21 PASCAL classes -> 5 face classes). A head configuration that differs from
the model's (checkpoint_config.py: shown by names and shapes, or recorded by a saved graph) is
an error naming both.

Table 1's VGG16 rows take slim's ImageNet `vgg_16.ckpt` (their backbones.BACKBONES records):
FCN-8s loads conv1..conv5 and fc6/fc7 (convolutionalised, same shapes), DeepLab-V2 conv1..conv5
only; fc8 and `vgg_16/mean_rgb` are skipped (see load_tf1_checkpoint for the conv-only case).

Errors are one line starting with the path (or the prefix read): a path that does not exist, a
file that is not a TF1 checkpoint, a TF2 object-based checkpoint, or a name mismatch.

This module reads TF1 checkpoints, so it imports TensorFlow (model modules do not).
"""
import re

import keras

from deeplab_face.errors import CheckpointError, ConfigError
from deeplab_face.models.backbones import BACKBONES, DEEPLAB_V3PLUS, Backbone
from deeplab_face.models.checkpoint_config import (describe, detect_head, flags_for,
                                                   recorded_head)
from deeplab_face.models.deeplab_v3plus import HEAD_OPTIONS
from deeplab_face.models.layers import SCOPE_SEP
from deeplab_face.models.tf1_checkpoint import leaf_layers, mismatches, read_tf1_checkpoint, read_values

IMPORT_MODES = ("all", "backbone")
LOGITS_SCOPE_NAME = "logits"  # model.py LOGITS_SCOPE_NAME: `logits/semantic[_i]`

# (layer class, Keras weight name) -> TF-slim variable name under the layer's scope
_WEIGHT_NAMES = {
    (keras.layers.Conv2D, "kernel"): "weights",
    (keras.layers.Conv2D, "bias"): "biases",
    (keras.layers.Conv2DTranspose, "kernel"): "weights",
    (keras.layers.Conv2DTranspose, "bias"): "biases",
    (keras.layers.DepthwiseConv2D, "kernel"): "depthwise_weights",
    (keras.layers.DepthwiseConv2D, "bias"): "biases",
    (keras.layers.BatchNormalization, "gamma"): "gamma",
    (keras.layers.BatchNormalization, "beta"): "beta",
    (keras.layers.BatchNormalization, "moving_mean"): "moving_mean",
    (keras.layers.BatchNormalization, "moving_variance"): "moving_variance",
}


def tf1_variable_map(model):
    """{TF1 variable name: Keras variable} for every weight of `model` (nested models walked)."""
    mapping = {}
    for layer in leaf_layers(model):
        for variable in layer.weights:
            key = (type(layer), variable.path.split("/")[-1])
            if key not in _WEIGHT_NAMES:
                raise CheckpointError(f"layer {layer.name!r}: no TF1 name rule for weight "
                                      f"{variable.path!r}")
            scope = layer.name.replace(SCOPE_SEP, "/")
            mapping[f"{scope}/{_WEIGHT_NAMES[key]}"] = variable
    return mapping


def _in_scope(name, scopes):
    return any(name == s or name.startswith(s + "/") for s in scopes)


def load_tf1_checkpoint(model, path, mode="all", restore_head=True):
    """Load a TF1 DeepLab / TF-slim checkpoint into a segmenter built by build_segmenter.

    Modes (IMPORT_MODES; TF DeepLab train.py's initialize_last_layer / last_layers):
    - "all" (evaluation's default): all or nothing. Every weight the model expects must be there
      with its shape, or CheckpointError lists what is missing / unexpected / mis-shaped and
      nothing is assigned; a head configuration that names and shapes show to differ
      (checkpoint_config.detect_head) is one error naming both configurations.
    - "backbone": the trunk all or nothing, the head (restore_head=True, TF's
      last_layers_contain_logits_only) wherever a name and its shape match, the logits
      (`logits/...`) never, whatever the class count. What stays at initialisation is listed.
    In both modes a `multi_grid` (and, in "all", atrous rates) recorded by a graph beside the
    checkpoint (checkpoint_config.recorded_head) must equal the model's, or it is an error
    naming both; options that the checkpoint neither shows nor records are listed as unverified.

    An ImageNet (backbone-only) checkpoint loads the backbone scope in either mode; its
    classifier scopes are skipped by design (backbones.BACKBONES). For slim's `vgg_16.ckpt`:
    `fcn8s_vgg16` loads conv1_1..conv5_3 and fc6/fc7 as convolutions, so a conv-only VGG16
    checkpoint is an error naming the missing fc6/fc7 (FCN-8s would otherwise silently start
    118M of its 134M parameters from scratch); `deeplab_v2_vgg16` loads conv1_1..conv5_3 only
    (its ASPP-L fc6_i/fc7_i differ in shape from ImageNet's fc6/fc7), so a conv-only checkpoint
    is enough. fc8 and `mean_rgb` are never loaded.

    Args:
      model: the composed segmenter (or any model whose layers carry TF scope names).
      path: checkpoint prefix (e.g. `.../model.ckpt`), one of its files, a V1 checkpoint file
        (slim `vgg_16.ckpt`), or a directory holding one.
      mode: "all" or "backbone".
      restore_head: in "backbone" mode, False restores the trunk only (TF DeepLab's
        initialize_last_layer=False with last_layers_contain_logits_only=False).
    Returns:
      dict: `loaded` (count), `mode`, `head` (what happened to the head), `reinitialised`
      (model names left as initialised), `skipped` (checkpoint names not loaded), `note` (what a
      VGG16 import leaves out, else None), `head_differences` (in "backbone" mode, the two head
      configurations when they differ, else None), `recorded` (what a saved graph records),
      `unverified` ({option: the model's value} that nothing in the checkpoint confirms),
      `checkpoint` (the prefix read).
    Raises:
      CheckpointError: one line naming the checkpoint: unreadable, missing / unexpected /
        mis-shaped names (counts and the first names of each), or another configuration.
      ConfigError: an unknown mode, or "backbone" for a model without a known trunk scope.
    """
    if mode not in IMPORT_MODES:
        raise ConfigError(f"import mode {mode!r} not in {list(IMPORT_MODES)}")
    prefix, shapes, reader = read_tf1_checkpoint(path)
    try:
        variables = tf1_variable_map(model)
    except CheckpointError as e:
        raise CheckpointError(f"{prefix}: {e}") from None
    args = getattr(model, "segmenter_args", {})
    backbone = args.get("backbone")
    what = f"the {backbone or model.name} model"
    record = BACKBONES.get(backbone) or Backbone(str(backbone), build=None)  # no record: no scopes
    if mode == "backbone" and record.scope is None:
        raise ConfigError(f"import mode 'backbone': no trunk scope known for {what}")
    backbone_only = record.scope is not None and all(_in_scope(n, (record.scope,)) for n in shapes)
    whole = mode == "all" and not backbone_only  # the checkpoint's head defines the model's
    head_restored = not backbone_only and (mode == "all" or restore_head)
    report = dict(mode=mode, head="loaded", note=None, head_differences=None, recorded={},
                  unverified={}, checkpoint=prefix)
    head = {k: args[k] for k in HEAD_OPTIONS} if backbone in DEEPLAB_V3PLUS else None
    if head is not None:
        _check_recorded_head(report, prefix, args, head, whole, head_restored)
    expected = _expected_weights(report, prefix, variables, shapes, record, head, whole,
                                 backbone_only, restore_head, what)
    report["reinitialised"] = sorted(set(variables) - set(expected))
    report["skipped"] = sorted(set(shapes) - set(expected))
    values = read_values(prefix, reader, sorted(expected))
    for name, variable in expected.items():
        variable.assign(values[name])
    report["loaded"] = len(expected)
    return report


def _check_recorded_head(report, prefix, args, head, whole, head_restored):
    """Fills report["recorded"] (what a saved graph records) and report["unverified"] (options
    nothing confirms), and checks the recorded options against the model's `head`."""
    report["recorded"] = recorded_head(prefix, args["backbone"], args["output_stride"], head)
    report["unverified"] = {k: head[k] for k in ("multi_grid", "atrous_rates")
                            if head[k] and k not in report["recorded"]
                            and (k == "multi_grid" or head_restored)}
    _check_recorded(prefix, report["recorded"], head, ("multi_grid", "atrous_rates")
                    if whole else ("multi_grid",))


def _expected_weights(report, prefix, variables, shapes, record, head, whole, backbone_only,
                      restore_head, what):
    """{TF1 name: variable} of the weights to load, checked against the checkpoint's `shapes`:
    every weight for a `whole` import, else the trunk and (_match_head) the matching head layers;
    what happens to the head goes into `report`."""
    scope, skipped_scopes = record.scope, record.skipped_scopes
    trunk = {n for n in variables if scope and _in_scope(n, (scope,))}
    available = {n: s for n, s in shapes.items()
                 if whole or not _in_scope(n, skipped_scopes)}
    if whole:
        _check_whole(prefix, variables, available, head, what)
        return variables
    expected = {n: variables[n] for n in trunk}
    _check_trunk(prefix, expected, available, record,
                 what if backbone_only else f"{what} in its {scope} trunk")
    if backbone_only:
        report.update(head="not loaded: backbone-only checkpoint", note=record.import_note)
    else:
        _match_head(report, variables, expected, available, scope, restore_head, head)
    return expected


def _check_whole(prefix, variables, available, head, what):
    """Mode "all" on a whole model's checkpoint: its head configuration and every weight with its
    shape, or one CheckpointError line (another class count hints at mode "backbone")."""
    if head is not None:
        _check_detected(prefix, variables, available, head)
    problems, _, misshaped = mismatches(variables, available)
    if problems:
        hint = ""
        if any(_in_scope(m.split(" ")[0], (LOGITS_SCOPE_NAME,)) for m in misshaped):
            hint = ("; another number of classes: import with mode='backbone' "
                    "(deeplab_face.train --initialize_last_layer=false)")
        raise CheckpointError(f"{prefix}: does not match {what}: " + "; ".join(problems) + hint)


def _check_trunk(prefix, expected, available, record, what):
    """The trunk's weights (`expected`) against the checkpoint's names under the trunk scope, all
    or nothing; missing names add the backbone record's hint (slim's VGG16 checkpoints)."""
    problems, missing, _ = mismatches(expected, {n: s for n, s in available.items()
                                                 if _in_scope(n, (record.scope,))})
    if problems:
        hint = "; " + record.missing_hint if missing and record.missing_hint else ""
        raise CheckpointError(f"{prefix}: does not match {what}: " + "; ".join(problems) + hint)


def _match_head(report, variables, expected, available, scope, restore_head, head):
    """Backbone mode: add the head layers whose weights all match by name and shape (never the
    logits; a layer is restored whole or not at all)."""
    head_names = [n for n in variables if not _in_scope(n, (scope, LOGITS_SCOPE_NAME))]
    if not restore_head:
        report["head"] = "not restored (trunk only)"
        return
    units = {}  # slim layer scope -> its weights (kernel, biases, BatchNorm): restored whole
    for name in head_names:
        units.setdefault(re.sub(r"(/BatchNorm)?/[^/]+$", "", name), []).append(name)
    for names in units.values():
        if all(n in available and tuple(available[n]) == tuple(variables[n].shape)
               for n in names):
            expected.update({n: variables[n] for n in names})
    restored = sum(n in expected for n in head_names)
    report["head"] = f"{restored} of {len(head_names)} head weights restored, logits not"
    if head is None:
        return
    model_shapes = {n: tuple(v.shape) for n, v in variables.items()}
    ours, theirs = detect_head(model_shapes), detect_head(available)
    rates = report["recorded"].get("atrous_rates", head["atrous_rates"])
    if ours != theirs or rates != head["atrous_rates"]:
        theirs = dict(theirs, atrous_rates=rates) if rates != head["atrous_rates"] else theirs
        report["head_differences"] = (f"checkpoint: {describe(theirs, available)}; "
                                      f"model: {describe(_model_head(head), model_shapes)}")


def _model_head(head):
    return {k: v for k, v in head.items() if k != "multi_grid"}


def _check_detected(prefix, variables, available, head):
    """Mode "all": the head options that names and shapes show must be the model's."""
    model_shapes = {n: tuple(v.shape) for n, v in variables.items()}
    ours, theirs = detect_head(model_shapes), detect_head(available)
    if ours == theirs:
        return
    differing = {k: theirs[k] for k in theirs if theirs[k] != ours[k]}
    problems, _, _ = mismatches(variables, available)
    raise CheckpointError(
        f"{prefix}: head configuration differs: checkpoint has {describe(theirs, available)}; "
        f"the model has {describe(_model_head(head), model_shapes)}; build the model with "
        f"{flags_for(differing)} ({'; '.join(problems)})")


def _check_recorded(prefix, recorded, head, keys):
    """The options in `keys` that a graph beside the checkpoint records must be the model's."""
    for key in keys:
        if key in recorded and recorded[key] != head[key]:
            raise CheckpointError(
                f"{prefix}: {key} differs: {recorded['path']} records {key}={recorded[key]} "
                f"(graph at output stride {recorded['output_stride']}), the model has "
                f"{key}={head[key]}; build the model with {flags_for({key: recorded[key]})}")
