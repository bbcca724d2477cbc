"""MobileNet-V2 as TF DeepLab uses it (slim nets/mobilenet/mobilenet_v2.py V2_DEF).

Built up to `layer_18` (`Conv_1` is not built), SAME padding everywhere (DeepLab
does not set use_explicit_padding for MobileNet), ReLU6, BN decay 0.997 / eps 1e-3.
Output stride 16: layer_15 runs at stride 1 and layers 16-18 at rate 2
(mobilenet_base's current_stride/rate bookkeeping).
"""
from keras import layers

from deeplab_face.models.layers import conv_bn, depthwise_bn, tf_name

SCOPE = "MobilenetV2"

# (expansion factor, output channels, stride) of layers 2..18 (layer_1 is the 3x3 stride-2 `Conv`).
_EXPANDED_CONVS = (
    (1, 16, 1),
    (6, 24, 2), (6, 24, 1),
    (6, 32, 2), (6, 32, 1), (6, 32, 1),
    (6, 64, 2), (6, 64, 1), (6, 64, 1), (6, 64, 1),
    (6, 96, 1), (6, 96, 1), (6, 96, 1),
    (6, 160, 2), (6, 160, 1), (6, 160, 1),
    (6, 320, 1),
)


def _expanded_conv(x, expansion, filters, stride, rate, scope, bn):
    """ops.expanded_conv: [expand 1x1 + BN + ReLU6] -> depthwise 3x3 + BN + ReLU6 -> project 1x1 + BN."""
    inputs = x
    in_channels = int(x.shape[-1])
    inner = in_channels * expansion  # _make_divisible(., 8) is the identity for these widths
    if inner > in_channels:
        x = conv_bn(x, inner, 1, scope + "/expand", bn, activation="relu6")
    x = depthwise_bn(x, scope + "/depthwise", bn, 3, stride, rate, activation="relu6",
                     explicit_padding=False)
    depthwise_output = x
    x = conv_bn(x, filters, 1, scope + "/project", bn, activation=None)
    if stride == 1 and in_channels == filters:
        x = layers.Add(name=tf_name(scope + "/add"))([x, inputs])
    return x, depthwise_output


def mobilenet_v2(images, output_stride, bn, multi_grid=None):
    """MobileNet-V2 trunk on images already scaled to [-1, 1] (no multi-grid block: TF DeepLab's
    feature_extractor.py does not pass multi_grid to MobileNet; deeplab_v3plus.py refuses one).

    Returns (features at `output_stride`, {endpoint name: tensor}); endpoint names
    follow DeepLab's (`layer_4/depthwise_output` is the decoder's low-level input).
    """
    endpoints = {}
    current_stride, rate = 2, 1
    x = conv_bn(images, 32, 3, SCOPE + "/Conv", bn, stride=2, activation="relu6",
                explicit_padding=False)
    for index, (expansion, filters, stride) in enumerate(_EXPANDED_CONVS):
        layer_number = index + 2
        scope = SCOPE + ("/expanded_conv" if index == 0 else f"/expanded_conv_{index}")
        if current_stride == output_stride:
            layer_stride, layer_rate = 1, rate
            rate *= stride
        else:
            layer_stride, layer_rate = stride, 1
            current_stride *= stride
        x, depthwise_output = _expanded_conv(x, expansion, filters, layer_stride, layer_rate,
                                             scope, bn)
        endpoints[f"layer_{layer_number}/depthwise_output"] = depthwise_output
        endpoints[f"layer_{layer_number}"] = x
    return x, endpoints
