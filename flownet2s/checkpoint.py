"""Initialise FlowNet2-S / FlowNet2-s from a TF1 checkpoint through an explicit name map.

Sources (flownet_dff.md "Checkpoint names"):
- sampepose/flownet2-tf FlowNet2-S (full width): `FlowNetS/<layer>/weights|biases`;
- DVSNet's FlowNet2-s (3/8 width): `FlowNets/<layer>/weights|biases`, plus `predict_scale`.
Keras layers carry the TF1 layer names, and HWIO / transposed [h, w, out, in] kernels match
Keras's layouts (tensorflow.md), so the map is `<scope>/<layer>/weights -> layer.kernel`,
`<scope>/<layer>/biases -> layer.bias`. `tf.train.Checkpoint.restore` restores nothing from a
TF1 file into Keras 3 layers, hence this loader. Deconvolutions have no biases there.

Reading, the skipped training variables (global_step, optimiser slots) and the all-or-nothing
check are deeplab_face.models.tf1_checkpoint's, as for every TF1 import: any missing, unexpected
or mis-shaped flow-net variable raises one CheckpointError line naming the checkpoint and them.
The scale-field head is task-specific (DVSNet's has 19 Cityscapes classes): it is loaded when
the checkpoint has a `predict_scale` of the model's shape, and otherwise left at its identity
initialisation (weights 0, bias 1) and reported under "skipped".
"""
from deeplab_face.errors import CheckpointError
from deeplab_face.models.tf1_checkpoint import assign_exact, read_tf1_checkpoint
from flownet2s.model import scale_head_layer_names

SCOPES = ("FlowNetS", "FlowNets")
CHECKPOINT_SCALE_HEAD = "predict_scale"


def _detect_scope(names, path):
    found = [s for s in SCOPES if any(n.startswith(s + "/") for n in names)]
    if len(found) != 1:
        raise CheckpointError(f"{path}: expected variables under exactly one of {list(SCOPES)}, "
                              f"found {found or 'none'}")
    return found[0]


def checkpoint_map(model, scope):
    """{TF1 name: (layer, weight index)} for the flow net's layers (scale head excluded)."""
    scale_layers = set(scale_head_layer_names(model))
    mapping = {}
    for layer in model.layers:
        if not layer.weights or layer.name in scale_layers:
            continue
        mapping[f"{scope}/{layer.name}/weights"] = (layer, 0)
        if len(layer.weights) > 1:
            mapping[f"{scope}/{layer.name}/biases"] = (layer, 1)
    return mapping


def _scale_head_variables(model, scope, shapes):
    """{TF1 name: variable} of DVSNet's `predict_scale` when the model has it and the checkpoint's
    weights and biases both have its shapes; else {} (the head keeps its initialisation)."""
    if CHECKPOINT_SCALE_HEAD not in scale_head_layer_names(model):
        return {}
    layer = model.get_layer(CHECKPOINT_SCALE_HEAD)
    names = [f"{scope}/{CHECKPOINT_SCALE_HEAD}/{p}" for p in ("weights", "biases")]
    if len(layer.weights) != 2 or not all(n in shapes and tuple(shapes[n]) == tuple(w.shape)
                                          for n, w in zip(names, layer.weights)):
        return {}
    return dict(zip(names, layer.weights))


def load_tf1_checkpoint(model, path, scope=None):
    """Copy a FlowNetS TF1 checkpoint into `model` (flownet2s.build_flownet); returns a report.

    Args:
      path: checkpoint prefix, one of its files, or a directory (latest checkpoint).
      scope: "FlowNetS" or "FlowNets"; detected when None.
    Returns dict(scope, prefix, loaded=[names], skipped=[names]).
    """
    prefix, shapes, reader = read_tf1_checkpoint(path)
    scope = scope or _detect_scope(shapes, prefix)
    in_scope = {n: s for n, s in shapes.items() if n.startswith(scope + "/")}
    variables = {name: layer.weights[index] for name, (layer, index) in checkpoint_map(model, scope).items()}
    variables.update(_scale_head_variables(model, scope, in_scope))
    skipped = sorted(n for n in in_scope if n.startswith(f"{scope}/{CHECKPOINT_SCALE_HEAD}/")
                     and n not in variables)
    available = {n: s for n, s in in_scope.items() if n not in skipped}
    width = getattr(model, "flownet_args", {}).get("width", "?")
    assign_exact(prefix, shapes, reader, variables, available, f"the flow net (width {width})")
    return dict(scope=scope, prefix=prefix, loaded=sorted(variables), skipped=skipped)
