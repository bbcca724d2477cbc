"""Import TF DeepLab model-zoo and TF-slim ImageNet checkpoints (TF1 Saver format).

Keras layers are named after their TF-Slim scopes with '/' written as '__' (layers.py),
so the name map is mechanical, one rule per weight kind:

    Conv2D / Conv2DTranspose  kernel -> <scope>/weights   bias -> <scope>/biases
    DepthwiseConv2D           kernel -> <scope>/depthwise_weights
    BatchNormalization        gamma, beta, moving_mean, moving_variance -> <scope>/<same>

`global_step` and optimiser slots (Momentum, Adam, RMSProp, ExponentialMovingAverage) are
skipped. Any other difference (missing, unexpected, mis-shaped names) raises
CheckpointError with counts and the first few names, on one line. A checkpoint without
head variables (an ImageNet backbone) loads the backbone only, ignoring the ImageNet
classifier scopes, and reports the head as intentionally not loaded. `reinit_logits=True`
leaves `logits/semantic` as initialised (e.g. 21 PASCAL classes -> 5 face classes).

This module reads TF1 checkpoints, so it imports TensorFlow (model modules do not).
"""
import glob
import os

import keras

from deeplab_face.errors import CheckpointError
from deeplab_face.models.backbones import BACKBONES
from deeplab_face.models.deeplab_v3plus import LOGITS_SCOPE
from deeplab_face.models.layers import SCOPE_SEP

_SKIP_WORDS = ("Momentum", "Adam", "Adam_1", "RMSProp", "RMSProp_1", "ExponentialMovingAverage",
               "Adagrad")
_SKIP_NAMES = ("global_step", "beta1_power", "beta2_power")
_SHOW = 4  # names listed per category in an error line

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


def _leaf_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def tf1_variable_map(model):
    """{TF1 variable name: Keras variable} for every weight of `model` (nested models walked)."""
    mapping = {}
    for layer in _leaf_layers(model):
        for variable in layer.weights:
            key = (type(layer), variable.path.split("/")[-1])
            if key not in _WEIGHT_NAMES:
                raise CheckpointError(f"layer {layer.name!r}: no TF1 name rule for weight "
                                      f"{variable.path!r}")
            scope = layer.name.replace(SCOPE_SEP, "/")
            mapping[f"{scope}/{_WEIGHT_NAMES[key]}"] = variable
    return mapping


def _resolve(path):
    """A checkpoint prefix from a prefix, or a directory holding one."""
    if os.path.isdir(path):
        latest = _latest_checkpoint(path)
        if latest:
            return latest
        indexes = sorted(glob.glob(os.path.join(path, "*.index")))
        if len(indexes) != 1:
            raise CheckpointError(f"{path}: expected one TF1 checkpoint (*.index), "
                                  f"found {len(indexes)}")
        return indexes[0][: -len(".index")]
    return path


def _latest_checkpoint(directory):
    import tensorflow as tf
    return tf.train.latest_checkpoint(directory)


def read_tf1_checkpoint(path):
    """(prefix, {name: shape}, reader) of a TF1 checkpoint, skipping global_step and optimiser slots."""
    import tensorflow as tf
    prefix = _resolve(path)
    try:
        reader = tf.train.load_checkpoint(prefix)
    except Exception as e:  # NotFoundError, DataLossError, ValueError ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable TF1 checkpoint ({first})") from None
    shapes = {}
    for name, shape in reader.get_variable_to_shape_map().items():
        if name in _SKIP_NAMES or any(part in _SKIP_WORDS for part in name.split("/")):
            continue
        shapes[name] = tuple(shape)
    return prefix, shapes, reader


def _backbone_scopes(backbone):
    """(backbone scope, ImageNet classifier scopes) of a build_segmenter name, or None."""
    if backbone in BACKBONES:
        return BACKBONES[backbone].scope, BACKBONES[backbone].classifier_scopes
    try:  # Table 1's VGG rows (vgg.py) keep their own table
        from deeplab_face.models.vgg import CHECKPOINT_SCOPES
    except ImportError:
        return None
    if backbone in CHECKPOINT_SCOPES:
        entry = CHECKPOINT_SCOPES[backbone]
        return entry["scope"], tuple(entry["classifier_scopes"])
    return None


def _in_scope(name, scopes):
    return any(name == s or name.startswith(s + "/") for s in scopes)


def _summary(label, names):
    names = sorted(names)
    if not names:
        return None
    shown = ", ".join(names[:_SHOW]) + (", ..." if len(names) > _SHOW else "")
    return f"{len(names)} {label} ({shown})"


def load_tf1_checkpoint(model, path, reinit_logits=False):
    """Load a TF1 DeepLab / TF-slim checkpoint into a segmenter built by build_segmenter.

    Args:
      model: the composed segmenter (or any model whose layers carry TF scope names).
      path: checkpoint prefix (e.g. `.../model.ckpt`) or a directory holding one.
      reinit_logits: keep `logits/semantic` as initialised (fine-tune a 21-class checkpoint
        for 5 face classes); the checkpoint's own logits are then ignored.
    Returns:
      dict: `loaded` (count), `head` ("loaded" or "not loaded: backbone-only checkpoint"),
      `reinitialised` (names left as initialised), `checkpoint` (the prefix read).
    Raises:
      CheckpointError: unreadable checkpoint, or missing / unexpected / mis-shaped names.
    """
    prefix, shapes, reader = read_tf1_checkpoint(path)
    variables = tf1_variable_map(model)
    backbone = getattr(model, "segmenter_args", {}).get("backbone")
    scopes = _backbone_scopes(backbone)
    ignored = set()
    reinitialised = []
    if reinit_logits:
        reinitialised = sorted(n for n in variables if _in_scope(n, (LOGITS_SCOPE,)))
        ignored.update(n for n in shapes if _in_scope(n, (LOGITS_SCOPE,)))
    head_state = "loaded"
    if scopes is not None:
        scope, classifier_scopes = scopes
        backbone_names = {n for n in variables if _in_scope(n, (scope,))}
        checkpoint_head = [n for n in shapes if not _in_scope(n, (scope,))]
        if not checkpoint_head:
            # An ImageNet backbone: the head stays as initialised by design.
            head_state = "not loaded: backbone-only checkpoint"
            reinitialised = sorted(set(variables) - backbone_names)
            ignored.update(n for n in shapes if _in_scope(n, classifier_scopes))
    expected = {n: v for n, v in variables.items() if n not in reinitialised}
    available = {n: s for n, s in shapes.items() if n not in ignored}
    missing = set(expected) - set(available)
    unexpected = set(available) - set(expected)
    misshaped = [f"{n} {list(available[n])}!={list(expected[n].shape)}"
                 for n in sorted(set(expected) & set(available))
                 if tuple(available[n]) != tuple(expected[n].shape)]
    problems = [p for p in (_summary("missing", missing), _summary("unexpected", unexpected),
                            _summary("mis-shaped", misshaped)) if p]
    if problems:
        hint = ""
        if any(_in_scope(m.split(" ")[0], (LOGITS_SCOPE,)) for m in misshaped):
            hint = "; pass reinit_logits=True (--reinit_logits) for another number of classes"
        raise CheckpointError(f"{prefix}: does not match the {backbone or model.name} model: "
                              + "; ".join(problems) + hint)
    for name, variable in expected.items():
        variable.assign(reader.get_tensor(name))
    return dict(loaded=len(expected), head=head_state, reinitialised=reinitialised,
                checkpoint=prefix)
