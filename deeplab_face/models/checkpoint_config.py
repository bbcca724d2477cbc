"""What a TF1 DeepLab checkpoint says about the head options it was built with (issue 14).

From names and shapes (every checkpoint; model.py's scopes):
- `aspp_with_batch_norm`: the ASPP module exists (`concat_projection/weights`);
- `atrous_rates`, as a count: `aspp{i}_depthwise` (separable) or `aspp{i}` (plain 3x3) for
  i >= 1, which also sizes `concat_projection`'s input (256 x (2 + count)); without the ASPP
  module, get_branch_logits' `logits/semantic_{i}` branches;
- `aspp_with_separable_conv`, `decoder_use_separable_conv`: which of those names exist;
- `decoder_output_stride`: `decoder/feature_projection0` exists (stride 4, the only decoder
  endpoint of these backbones).

Recorded only in a graph saved beside the checkpoint, `<prefix>.meta` (TF1 Saver's default) or
the zoo's `frozen_inference_graph.pb`: the dilation of each convolution, hence `multi_grid` (the
last block's unit rates) and the atrous rate values. Slim writes a dilated conv either as a
Conv2D / DepthwiseConv2dNative with a `dilations` attribute or wrapped in SpaceToBatchND with a
constant block shape; both are read. A graph's output stride follows from one probe layer of
the trunk (the last stride-2 layer before the multi-grid block): stride 2 there means output
stride 32 and a base rate of 1, otherwise the next block runs at twice the probe's rate.
Neither the names nor a graph record anything else, so options that are neither are reported
as unverified, never silently assumed.

This module reads TF protobufs, so it imports TensorFlow (model modules do not).
"""
import os

from deeplab_face.models.deeplab_v3plus import HEAD_OPTIONS

NOMINAL_STRIDE = 32  # every trunk here: five stride-2 stages
FROZEN_GRAPH = "frozen_inference_graph.pb"  # beside model.ckpt in the zoo's tarballs
_CONV_OPS = ("Conv2D", "DepthwiseConv2dNative")

# backbone -> (probe layer: the last nominally strided layer before the multi-grid block,
#              the multi-grid block's three dilated layers; resnet_v1_beta.py block4 conv2,
#              xception.py exit_flow/block2 separable convs; MobileNet-V2 has none)
RECORDED_LAYERS = {
    "resnet_v1_50_beta": (
        "resnet_v1_50/block3/unit_6/bottleneck_v1/conv2",
        tuple(f"resnet_v1_50/block4/unit_{u}/bottleneck_v1/conv2" for u in (1, 2, 3))),
    "xception_65": (
        "xception_65/exit_flow/block1/unit_1/xception_module/separable_conv3_depthwise",
        tuple(f"xception_65/exit_flow/block2/unit_1/xception_module/separable_conv{i}_depthwise"
              for i in (1, 2, 3))),
    "mobilenet_v2": ("MobilenetV2/expanded_conv_13/depthwise", ()),  # layer_15
}


def detect_head(shapes):
    """{option: value} of the head options that names and shapes show ({name: shape} of a
    checkpoint or of a model's tf1_variable_map). `atrous_rates` is a count here."""
    aspp = "concat_projection/weights" in shapes
    separable, count = None, 0
    if aspp:
        while (f"aspp{count + 1}_depthwise/depthwise_weights" in shapes
               or f"aspp{count + 1}/weights" in shapes):
            count += 1
        separable = "aspp1_depthwise/depthwise_weights" in shapes if count else None
    else:
        while f"logits/semantic_{count + 1}/weights" in shapes:
            count += 1
        count = count + 1 if count else 0
    decoder = "decoder/feature_projection0/weights" in shapes
    return dict(aspp_with_batch_norm=aspp, atrous_rates=count, aspp_with_separable_conv=separable,
                decoder_output_stride=4 if decoder else None,
                decoder_use_separable_conv=(
                    "decoder/decoder_conv0_depthwise/depthwise_weights" in shapes
                    if decoder else None))


def _recorded_nodes(prefix):
    """(path, [NodeDef]) of the graph saved beside a checkpoint, or (None, [])."""
    from tensorflow.core.framework import graph_pb2
    from tensorflow.core.protobuf import meta_graph_pb2
    candidates = ((prefix + ".meta", meta_graph_pb2.MetaGraphDef),
                  (os.path.join(os.path.dirname(prefix), FROZEN_GRAPH), graph_pb2.GraphDef))
    for path, proto in candidates:
        if not os.path.isfile(path):
            continue
        message = proto()
        try:
            with open(path, "rb") as f:
                message.ParseFromString(f.read())
        except Exception:  # DecodeError: not that proto; nothing recorded there
            continue
        graph = message.graph_def if proto is meta_graph_pb2.MetaGraphDef else message
        return path, list(graph.node)
    return None, []


def _in_layer(node_name, scope):
    # Training graphs prefix op names with a name scope (`clone_0/...`), variables not.
    return node_name.startswith(scope + "/") or f"/{scope}/" in node_name


def _layer_geometry(nodes, consts, scope):
    """(dilation, stride) of the layer under `scope`, or None when the graph has no conv there."""
    import tensorflow as tf
    dilation, stride, found = 1, 1, False
    for node in nodes:
        if not _in_layer(node.name, scope):
            continue
        if node.op in _CONV_OPS:
            found = True
            dilation = max([dilation, *node.attr["dilations"].list.i[1:2]])
            stride = max([stride, *node.attr["strides"].list.i[1:2]])
        elif node.op == "SpaceToBatchND" and len(node.input) > 1:
            block = consts.get(node.input[1].split(":")[0])
            if block is not None:
                dilation = max(dilation, int(tf.make_ndarray(block).max()))
    return (dilation, stride) if found else None


def recorded_head(prefix, backbone, output_stride, head):
    """What a graph beside the checkpoint records: {"path", "output_stride", "multi_grid",
    "atrous_rates" (rescaled to `output_stride`, the model's, as common.py scales them)}, keys
    present only where recorded; {} when there is no graph or the backbone has no probe."""
    if backbone not in RECORDED_LAYERS:
        return {}
    path, nodes = _recorded_nodes(prefix)
    if not nodes:
        return {}
    consts = {n.name: n.attr["value"].tensor for n in nodes if n.op == "Const"}
    probe, grid_layers = RECORDED_LAYERS[backbone]
    geometry = _layer_geometry(nodes, consts, probe)
    if geometry is None:
        return {}
    base = 1 if geometry[1] > 1 else 2 * geometry[0]
    graph_stride = NOMINAL_STRIDE // base
    recorded = dict(path=path, output_stride=graph_stride)
    grid = [_layer_geometry(nodes, consts, layer) for layer in grid_layers]
    if grid and None not in grid:
        recorded["multi_grid"] = [_whole(d / base) for d, _ in grid]
    separable = head["aspp_with_separable_conv"]
    rates = []
    for i in range(1, len(head["atrous_rates"]) + 1):
        geometry = _layer_geometry(nodes, consts, f"aspp{i}_depthwise" if separable else f"aspp{i}")
        if geometry is None:
            break
        rates.append(_whole(geometry[0] * graph_stride / output_stride))
    if rates and head["aspp_with_batch_norm"]:
        recorded["atrous_rates"] = rates
    return recorded


def _whole(value):
    return int(value) if float(value).is_integer() else value


def describe(head, shapes=None):
    """`option=value` list for a message: counts of atrous rates read as `<n rates>`."""
    parts = []
    for key in HEAD_OPTIONS:
        if key not in head:
            continue
        value = head[key]
        if key == "atrous_rates" and isinstance(value, int):
            value = f"<{value} rates>" if value else "[]"
        parts.append(f"{key}={value}")
    projection = (shapes or {}).get("concat_projection/weights")
    if projection is not None:
        parts.append(f"concat_projection/weights {list(projection)}")
    return ", ".join(parts)


def flags_for(detected):
    """deeplab_face.train flags that build the detected head (unknown rate values shown as
    `<n rates>`; an option that does not apply, None, is left out except the decoder's)."""
    flags = []
    for key, value in detected.items():
        if key == "atrous_rates":
            value = (",".join(map(str, value)) if isinstance(value, list)
                     else (f"<{value} rates>" if value else ""))
        elif value is None:
            if key != "decoder_output_stride":
                continue
            value = "none"
        elif isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, list):
            value = ",".join(map(str, value))
        flags.append(f"--{key}={value}")
    return " ".join(flags)
