"""DVSNet's released weights (reference/dvsnet.md "Checkpoints and variable names").

Two things live here:
- `load_decision_checkpoint(network, path)`: DVSNet's decision network (scope `decision`, 10
  variables) from a TF1 Saver checkpoint into `rl_scheduler.dvsnet_decision`'s Keras model,
  through the explicit map `DECISION_VARIABLES`; Adam slots, global_step and the other
  networks' variables are ignored.
- `load_dvsnet_release(checkpoint_path)`: the three networks of DVSNet's "Checkpoint all in one"
  (DeepLab-Fast N, FlowNets F, decision network), built at DVSNet's sizes and loaded:

  - DeepLab-Fast (`deeplab_fast_resnet101`, split "logits"): one region, 576x1088 (a
    1024x2048 quadrant grown by the 64-px overlap); fc_out logits 36x68.
  - FlowNets 3/8 (`scale_head="dvsnet"`, `normalization="scale_only"`, 19-channel scale): the
    region halved, 288x544 (DeepFeatureFlow's `flow_resolution="half"`); conv6_1 5x9x384.
  - decision network: conv6_1 resized to 4x8 with TF1's bilinear (`resize_bilinear_tf1`);
    the predicted confidence score in percent.

This module reads TF1 checkpoints, so it imports TensorFlow (through the checkpoint readers).
"""
import collections

import numpy as np

from deeplab_face.errors import CheckpointError
from deeplab_face.models.tf1_checkpoint import assign_exact, read_tf1_checkpoint
from deeplab_face.models.deeplab_fast import DVSNET_NUM_CLASSES, DVSNET_REGION_SIZE
from rl_scheduler.dvsnet_decision import build_decision_network

DECISION_SCOPE = "decision"
# Keras layer of build_decision_network -> DVSNet's slim scope under `decision/` (decisionmodel.py).
DECISION_LAYERS = (("conv", "Conv"), ("fc0", "fully_connected"), ("fc1", "fully_connected_1"),
                   ("fc2", "fully_connected_2"), ("score", "fully_connected_3"))
DECISION_VARIABLES = {f"{DECISION_SCOPE}/{scope}/{tf1_name}": (layer, attribute)
                      for layer, scope in DECISION_LAYERS
                      for attribute, tf1_name in (("kernel", "weights"), ("bias", "biases"))}
DVSNET_DEVIATION_SIZE = (4, 8)  # conv6_1 resized to 4x8 before the decision net (inference.py)
DVSNET_OVERLAP = 64  # px each quadrant grows toward the frame centre; a multiple of 8
DVSNET_BORDER = "clamp"  # DVSNet's warp clamps at the border (flow_utils.warp)

DVSNetRelease = collections.namedtuple("DVSNetRelease", "segmenter flow_net decision_net reports")
DVSNetRelease.__doc__ = """DVSNet's networks: segmenter (build_segmenter model, split "logits"),
flow_net (build_flownet, input = half the region), decision_net (None when not asked for), and
reports: dict of the three loaders' reports."""


def decision_variable_map(network):
    """{DVSNet variable name: Keras variable} of a `build_decision_network` model (10 names)."""
    mapping = {}
    for name, (layer_name, attribute) in DECISION_VARIABLES.items():
        try:
            layer = network.get_layer(layer_name)
        except ValueError:
            raise CheckpointError(f"decision network {network.name!r}: no layer {layer_name!r} "
                                  "(not built by rl_scheduler.dvsnet_decision)") from None
        mapping[name] = getattr(layer, attribute)
    return mapping


def load_decision_checkpoint(network, path):
    """Assign DVSNet's `decision/*` variables of the TF1 checkpoint at `path` to `network`.

    Args:
      network: `build_decision_network((4, 8, 384))` (or another deviation shape whose flattened
        conv output has the checkpoint's 3072 inputs).
      path: checkpoint prefix, a file of it, or a directory holding one.
    Returns dict(loaded=10, skipped=<other variables>, checkpoint=<prefix>).
    Raises CheckpointError (one line) naming the missing, unexpected and mis-shaped variables;
    nothing is assigned unless all 10 fit.
    """
    prefix, shapes, reader = read_tf1_checkpoint(path)  # drops global_step and Adam slots
    variables = decision_variable_map(network)
    available = {n: s for n, s in shapes.items() if n.split("/")[0] == DECISION_SCOPE}
    return assign_exact(prefix, shapes, reader, variables, available, "the DVSNet decision network")


def _axis_taps_tf1(out_size, in_size):
    """TF1 `resize_bilinear` (align_corners=False, no half-pixel centres) taps along one axis."""
    positions = np.arange(out_size, dtype=np.float64) * (in_size / out_size)
    lower = np.minimum(np.floor(positions).astype(np.int64), in_size - 1)
    upper = np.minimum(lower + 1, in_size - 1)
    return lower, upper, (positions - lower).astype(np.float32)


def resize_bilinear_tf1(features, size):
    """DVSNet's `tf.image.resize_bilinear(conv6_1, [4, 8])` in numpy: (B, h, w, C) -> (B, *size, C).

    The legacy TF1 mapping (source = destination * in / out), which DVSNet's decision net was
    trained on; Keras' Resizing uses half-pixel centres and gives other values.
    """
    features = np.asarray(features, np.float32)
    for axis, out_size in ((1, int(size[0])), (2, int(size[1]))):
        in_size = features.shape[axis]
        if in_size == out_size:
            continue
        lower, upper, weight = _axis_taps_tf1(out_size, in_size)
        shape = [1, 1, 1, 1]
        shape[axis] = out_size
        low = np.take(features, lower, axis=axis)
        high = np.take(features, upper, axis=axis)
        features = low + (high - low) * weight.reshape(shape)
    return features


def build_dvsnet_networks(region_size=DVSNET_REGION_SIZE, num_classes=DVSNET_NUM_CLASSES,
                          decision=True):
    """Random-weight DeepLab-Fast, FlowNets and decision net at DVSNet's layout for `region_size`.

    region_size: (h, w) of one region (576x1088 for Cityscapes); the flow net is built at half
    of it floored to multiples of 64 (as `flownet2s.dff.flow_input_size(..., "half")`), 288x544.
    Returns (segmenter, flow_net, decision_net or None).
    """
    from deeplab_face import build_segmenter
    from flownet2s import build_flownet
    from flownet2s.dff import flow_input_size

    height, width = int(region_size[0]), int(region_size[1])
    segmenter = build_segmenter("deeplab_fast_resnet101", num_classes, (height, width),
                                split="logits")
    flow_size = (flow_input_size(height, "half"), flow_input_size(width, "half"))
    flow_net = build_flownet(width=0.375, feature_channels=num_classes, input_size=list(flow_size),
                             scale_head="dvsnet", normalization="scale_only")
    decision_net = None
    if decision:
        channels = int(flow_net.output["conv6_1"].shape[-1])  # 384 = 1024 * 3/8
        decision_net = build_decision_network(DVSNET_DEVIATION_SIZE + (channels,))
        decision_net.deviation_tap = "conv6_1"  # DVSNet feeds conv6_1 (after its LeakyReLU)
    return segmenter, flow_net, decision_net


def load_dvsnet_release(checkpoint_path, num_classes=DVSNET_NUM_CLASSES, region_size=DVSNET_REGION_SIZE,
                        decision=True):
    """DVSNet's "all in one" checkpoint -> `DVSNetRelease` (reference/dvsnet.md).

    Args:
      checkpoint_path: TF1 Saver prefix or directory holding DeepLab-Fast (no scope, 550
        variables), `FlowNets/*` (40) and, when `decision`, `decision/*` (10).
      num_classes: 19 Cityscapes train ids (the checkpoint's fc_out and predict_scale).
      region_size: one region: 576x1088 = a 512x1024 quadrant grown by 64 px toward the centre.
        The flow net takes it halved (288x544); the decision net takes conv6_1 resized to 4x8.
      decision: also load the decision network (False for the "without decision network"
        checkpoint, e.g. when the RL policy schedules).
    Raises CheckpointError naming what does not fit.
    """
    from deeplab_face.models.dvsnet_checkpoint import load_dvsnet_checkpoint
    from flownet2s.checkpoint import load_tf1_checkpoint as load_flow_checkpoint

    segmenter, flow_net, decision_net = build_dvsnet_networks(region_size, num_classes, decision)
    reports = {"segmenter": load_dvsnet_checkpoint(segmenter, checkpoint_path),
               "flow_net": load_flow_checkpoint(flow_net, checkpoint_path, scope="FlowNets")}
    if "FlowNets/predict_scale/weights" not in reports["flow_net"]["loaded"]:
        raise CheckpointError(f"{checkpoint_path}: FlowNets/predict_scale missing or not of the "
                              f"{num_classes}-class scale head's shape")
    if decision:
        reports["decision_net"] = load_decision_checkpoint(decision_net, checkpoint_path)
    return DVSNetRelease(segmenter, flow_net, decision_net, reports)
