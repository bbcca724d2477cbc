"""Initialise FlowNet2-S / FlowNet2-s from a TF1 checkpoint through an explicit name map.

Sources (flownet_dff.md "Checkpoint names"):
- sampepose/flownet2-tf FlowNet2-S (full width): `FlowNetS/<layer>/weights|biases`;
- DVSNet's FlowNet2-s (3/8 width): `FlowNets/<layer>/weights|biases`, plus `predict_scale`.
Keras layers carry the TF1 layer names, and HWIO / transposed [h, w, out, in] kernels match
Keras's layouts (tensorflow.md), so the map is `<scope>/<layer>/weights -> layer.kernel`,
`<scope>/<layer>/biases -> layer.bias`. `tf.train.Checkpoint.restore` restores nothing from a
TF1 file into Keras 3 layers, hence this loader. Deconvolutions have no biases there.

Any missing, unexpected or mis-shaped flow-net variable raises CheckpointError listing them.
The scale-field head is task-specific (DVSNet's has 19 Cityscapes classes): it is loaded when
the checkpoint has a `predict_scale` of the model's shape, and otherwise left at its identity
initialisation (weights 0, bias 1) and reported under "skipped".
"""
import os

import numpy as np

from deeplab_face.errors import CheckpointError
from flownet2s.model import scale_head_layer_names

SCOPES = ("FlowNetS", "FlowNets")
# Variables a TF1 training run saves next to the model's: not model weights.
IGNORED_MARKERS = ("global_step", "/Adam", "/Momentum", "/RMSProp", "beta1_power", "beta2_power",
                   "/ExponentialMovingAverage", "learning_rate")
CHECKPOINT_SCALE_HEAD = "predict_scale"


def _reader(path):
    import tensorflow as tf
    prefix = tf.train.latest_checkpoint(path) if os.path.isdir(path) else path
    if not prefix:
        raise CheckpointError(f"{path}: no TF1 checkpoint found in this directory")
    try:
        return tf.train.load_checkpoint(prefix), prefix
    except Exception as e:  # NotFoundError, DataLossError, ...: one line naming the file
        raise CheckpointError(f"{prefix}: not a readable TF checkpoint "
                              f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


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


def load_tf1_checkpoint(model, path, scope=None):
    """Copy a FlowNetS TF1 checkpoint into `model` (flownet2s.build_flownet); returns a report.

    Args:
      path: checkpoint prefix or directory (latest checkpoint).
      scope: "FlowNetS" or "FlowNets"; detected when None.
    Returns dict(scope, prefix, loaded=[names], skipped=[names]).
    """
    reader, prefix = _reader(path)
    shapes = reader.get_variable_to_shape_map()
    names = {n for n in shapes if not any(m in n for m in IGNORED_MARKERS)}
    scope = scope or _detect_scope(names, prefix)
    names = {n for n in names if n.startswith(scope + "/")}
    mapping = checkpoint_map(model, scope)
    scale_names = {n for n in names if n.startswith(f"{scope}/{CHECKPOINT_SCALE_HEAD}/")}

    missing = sorted(set(mapping) - names)
    unexpected = sorted(names - set(mapping) - scale_names)
    misshaped = sorted(f"{n} {list(shapes[n])} vs {list(layer.weights[i].shape)}"
                       for n, (layer, i) in mapping.items()
                       if n in names and tuple(shapes[n]) != tuple(layer.weights[i].shape))
    if missing or unexpected or misshaped:
        parts = [f"{label}: {', '.join(items)}" for label, items in
                 (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if items]
        raise CheckpointError(f"{prefix}: does not fit the flow net (width "
                              f"{getattr(model, 'flownet_args', {}).get('width', '?')}): " + "; ".join(parts))

    values = {}
    for name, (layer, index) in mapping.items():
        values.setdefault(layer.name, [w.numpy() if hasattr(w, "numpy") else np.asarray(w)
                                       for w in layer.get_weights()])
        values[layer.name][index] = reader.get_tensor(name)
    for layer_name, weights in values.items():
        model.get_layer(layer_name).set_weights(weights)
    loaded, skipped = sorted(mapping), sorted(scale_names)
    if "predict_scale" in scale_head_layer_names(model) and scale_names:
        layer = model.get_layer("predict_scale")
        tensors = [reader.get_tensor(f"{scope}/{CHECKPOINT_SCALE_HEAD}/{p}") for p in ("weights", "biases")
                   if f"{scope}/{CHECKPOINT_SCALE_HEAD}/{p}" in names]
        if len(tensors) == 2 and all(tuple(t.shape) == tuple(w.shape)
                                     for t, w in zip(tensors, layer.weights)):
            layer.set_weights(tensors)
            loaded, skipped = sorted(loaded + list(scale_names)), []
    return dict(scope=scope, prefix=prefix, loaded=loaded, skipped=skipped)
