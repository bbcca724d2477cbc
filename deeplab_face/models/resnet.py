"""ResNet-50 "beta" as TF DeepLab has it (core/resnet_v1_beta.py).

Root: three 3x3 convs (conv1_1 stride 2, conv1_2, conv1_3 128) instead of one 7x7,
then a 3x3 stride-2 SAME max pool. Bottleneck units: conv1 1x1, conv2 3x3
(conv2d_same: explicit padding when strided), conv3 1x1 linear, shortcut, ReLU after
the sum. The stride of blocks 1-3 sits on their last unit; block4's three units take the
multi_grid unit rates (backbones.py holds the default, [1, 2, 4]; resnet_v1_beta.py requires
three of them). BN decay 0.95 / eps 1e-5 (feature_extractor.py).
"""
from keras import layers

from deeplab_face.models.layers import conv_bn, tf_name

SCOPE = "resnet_v1_50"


def _blocks(multi_grid):
    """(block scope, [(depth, bottleneck depth, stride, unit rate) per unit]) for ResNet-50."""
    def beta_block(base, units, stride):
        return [(base * 4, base, 1, 1)] * (units - 1) + [(base * 4, base, stride, 1)]
    return (
        ("block1", beta_block(64, 3, 2)),
        ("block2", beta_block(128, 4, 2)),
        ("block3", beta_block(256, 6, 2)),
        ("block4", [(2048, 512, 1, unit_rate) for unit_rate in multi_grid]),
    )


def _bottleneck(x, depth, depth_bottleneck, stride, rate, scope, bn):
    """bottleneck_v1; returns (output, conv3 output before the add: a DeepLab endpoint)."""
    if int(x.shape[-1]) == depth:
        # resnet_utils.subsample: 1x1 VALID max pool with the stride
        shortcut = x if stride == 1 else layers.MaxPooling2D(
            1, strides=stride, padding="valid", name=tf_name(scope + "/shortcut"))(x)
    else:
        shortcut = conv_bn(x, depth, 1, scope + "/shortcut", bn, stride=stride, activation=None)
    residual = conv_bn(x, depth_bottleneck, 1, scope + "/conv1", bn)
    residual = conv_bn(residual, depth_bottleneck, 3, scope + "/conv2", bn, stride=stride, rate=rate)
    conv3 = conv_bn(residual, depth, 1, scope + "/conv3", bn, activation=None)
    out = layers.Add(name=tf_name(scope + "/add"))([shortcut, conv3])
    return layers.Activation("relu", name=tf_name(scope + "/relu"))(out), conv3


def resnet_v1_50_beta(images, output_stride, bn, multi_grid):
    """ResNet-50 beta trunk on images scaled to [-1, 1].

    Returns (features at `output_stride`, {endpoint: tensor}) with endpoint names as
    DeepLab's (`block1/unit_2/bottleneck_v1/conv3` feeds the decoder).
    """
    endpoints = {}
    x = conv_bn(images, 64, 3, SCOPE + "/conv1_1", bn, stride=2)
    x = conv_bn(x, 64, 3, SCOPE + "/conv1_2", bn)
    x = conv_bn(x, 128, 3, SCOPE + "/conv1_3", bn)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name=tf_name(SCOPE + "/pool1"))(x)
    # stack_blocks_dense, with the root's stride 4 already taken
    target_stride = output_stride // 4
    current_stride, rate = 1, 1
    for block, units in _blocks(multi_grid):
        for index, (depth, depth_bottleneck, stride, unit_rate) in enumerate(units):
            name = f"{block}/unit_{index + 1}/bottleneck_v1"
            if current_stride == target_stride:
                x, conv3 = _bottleneck(x, depth, depth_bottleneck, 1, rate * unit_rate,
                                       f"{SCOPE}/{name}", bn)
                rate *= stride
            else:
                x, conv3 = _bottleneck(x, depth, depth_bottleneck, stride, unit_rate,
                                       f"{SCOPE}/{name}", bn)
                current_stride *= stride
            endpoints[f"{name}/conv3"] = conv3
            endpoints[name] = x
    return x, endpoints
