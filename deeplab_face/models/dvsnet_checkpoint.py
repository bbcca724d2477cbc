"""Load DVSNet's released segmentation weights (TF1 Saver) into DeepLab-Fast (reference/dvsnet.md).

DVSNet's checkpoints ("all in one" and "without decision network") hold three networks side by
side. This loader takes the segmentation net only: 550 variables with no scope,

    <conv>/weights (HWIO), <head conv>/biases        e.g. conv1/weights [7,7,3,64]
    <bn>/{beta,gamma,moving_mean,moving_variance}    e.g. bn_conv1/gamma (no BatchNorm/ level)

and skips what belongs to other loaders: `FlowNets/*` (flownet2s), `decision/*` (rl_scheduler),
names containing `warp` (DVSNet's inference.py leaves them out of the segmentation restore too),
`global_step` and optimiser slots. Keras layer names equal DVSNet's scopes (deeplab_fast.py), so
the map below is one rule per weight kind. Any other difference raises CheckpointError on one
line with counts and the first names of what is missing, unexpected or mis-shaped; nothing is
assigned unless everything fits.

This module reads TF1 checkpoints, so it imports TensorFlow (model modules do not).
"""
import keras

from deeplab_face.errors import CheckpointError
from deeplab_face.models.tf1_checkpoint import assign_exact, leaf_layers, read_tf1_checkpoint

# Scopes of DVSNet's other networks, loaded elsewhere (flownet2s, rl_scheduler).
OTHER_NETWORK_SCOPES = ("FlowNets", "decision")

# layer class -> ((Keras attribute, DVSNet variable name under the layer's scope), ...)
_WEIGHT_NAMES = {
    keras.layers.Conv2D: (("kernel", "weights"), ("bias", "biases")),
    keras.layers.BatchNormalization: (("gamma", "gamma"), ("beta", "beta"),
                                      ("moving_mean", "moving_mean"),
                                      ("moving_variance", "moving_variance")),
}


def dvsnet_variable_map(model):
    """{DVSNet variable name: Keras variable} for every weight of a DeepLab-Fast model.

    `model` is the composed segmenter, its feature_net, or any model holding those layers.
    """
    mapping = {}
    for layer in leaf_layers(model):
        rules = _WEIGHT_NAMES.get(type(layer), ())
        for attribute, variable_name in rules:
            variable = getattr(layer, attribute, None)
            if variable is not None:
                mapping[f"{layer.name}/{variable_name}"] = variable
        if len(layer.weights) != sum(getattr(layer, a, None) is not None for a, _ in rules):
            raise CheckpointError(f"layer {layer.name!r} ({type(layer).__name__}): weights with "
                                  "no DVSNet name rule")
    return mapping


def is_segmentation_variable(name):
    """True for the names this loader reads (after global_step/optimiser slots are dropped)."""
    if name.split("/")[0] in OTHER_NETWORK_SCOPES:
        return False
    return "warp" not in name


def load_dvsnet_checkpoint(model, path):
    """Assign DVSNet's segmentation variables to a DeepLab-Fast model.

    Args:
      model: a model built by `deeplab_fast.build_deeplab_fast*` (or `build_segmenter` with it);
        its class count must match the checkpoint's (`fc_out/weights`).
      path: checkpoint prefix (e.g. `.../model.ckpt-60000`) or a directory holding one.
    Returns:
      dict: `loaded` (count), `skipped` (other networks' variable count), `checkpoint` (prefix).
    Raises:
      CheckpointError: unreadable checkpoint, or missing / unexpected / mis-shaped names.
    """
    prefix, shapes, reader = read_tf1_checkpoint(path)
    variables = dvsnet_variable_map(model)
    available = {n: s for n, s in shapes.items() if is_segmentation_variable(n)}
    return assign_exact(prefix, shapes, reader, variables, available, f"the DeepLab-Fast model {model.name!r}")
