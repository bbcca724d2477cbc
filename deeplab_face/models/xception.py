"""Xception-65 as TF DeepLab has it (core/xception.py).

Root: entry_flow/conv1_1 3x3 stride 2 (explicit padding), conv1_2 3x3 64. Each
xception module has three separable convs (`separable_convN_depthwise` +
`_pointwise`, BN after each half); the ReLU comes *before* each separable conv,
except in exit_flow/block2 where it follows each BN. Strided separable convs pad
with fixed_padding (grows with the rate) and run VALID. BN decay 0.9997 / eps 1e-3.
The last block (exit_flow/block2) takes the multi_grid unit rates: each of its three separable
convs runs at rate * multi_grid[i] (xception.py: unit_rate_list=multi_grid).
"""
from keras import layers

from deeplab_face.models.layers import conv_bn, depthwise_bn, tf_name

SCOPE = "xception_65"

# (block scope, depth list, skip connection, activation inside separable convs, units, stride)
_BLOCKS = (
    ("entry_flow/block1", (128, 128, 128), "conv", False, 1, 2),
    ("entry_flow/block2", (256, 256, 256), "conv", False, 1, 2),
    ("entry_flow/block3", (728, 728, 728), "conv", False, 1, 2),
    ("middle_flow/block1", (728, 728, 728), "sum", False, 16, 1),
    ("exit_flow/block1", (728, 1024, 1024), "conv", False, 1, 2),
    ("exit_flow/block2", (1536, 1536, 2048), "none", True, 1, 1),
)


def _xception_module(x, depth_list, skip, activation_inside, stride, rate, scope, bn, endpoints,
                     unit_rates=(1, 1, 1)):
    """xception_module; records each `separable_convN_pointwise` (BN output) in `endpoints`."""
    residual = x
    for i in range(3):
        name = f"{scope}/separable_conv{i + 1}"
        if not activation_inside:
            residual = layers.Activation("relu", name=tf_name(name + "/relu"))(residual)
        act = "relu" if activation_inside else None
        residual = depthwise_bn(residual, name + "_depthwise", bn, 3,
                                stride=stride if i == 2 else 1, rate=rate * unit_rates[i],
                                activation=act)
        residual = conv_bn(residual, depth_list[i], 1, name + "_pointwise", bn, activation=act)
        endpoints[name.split("/", 1)[1] + "_pointwise"] = residual
    if skip == "conv":
        shortcut = conv_bn(x, depth_list[-1], 1, scope + "/shortcut", bn, stride=stride,
                           activation=None)
        return layers.Add(name=tf_name(scope + "/add"))([residual, shortcut])
    if skip == "sum":
        return layers.Add(name=tf_name(scope + "/add"))([residual, x])
    return residual


def xception_65(images, output_stride, bn, multi_grid):
    """Xception-65 trunk on images scaled to [-1, 1].

    Returns (features at `output_stride`, {endpoint: tensor}); the decoder's input is
    `entry_flow/block2/unit_1/xception_module/separable_conv2_pointwise`.
    """
    endpoints = {}
    x = conv_bn(images, 32, 3, SCOPE + "/entry_flow/conv1_1", bn, stride=2)
    x = conv_bn(x, 64, 3, SCOPE + "/entry_flow/conv1_2", bn)
    target_stride = output_stride // 2  # the root already took stride 2
    current_stride, rate = 1, 1
    for block, depths, skip, activation_inside, units, stride in _BLOCKS:
        unit_rates = tuple(multi_grid) if block == _BLOCKS[-1][0] else (1, 1, 1)
        for index in range(units):
            name = f"{block}/unit_{index + 1}/xception_module"
            module_endpoints = {}
            if current_stride == target_stride:
                x = _xception_module(x, depths, skip, activation_inside, 1, rate,
                                     f"{SCOPE}/{name}", bn, module_endpoints, unit_rates)
                rate *= stride
            else:
                x = _xception_module(x, depths, skip, activation_inside, stride, 1,
                                     f"{SCOPE}/{name}", bn, module_endpoints, unit_rates)
                current_stride *= stride
            for key, tensor in module_endpoints.items():
                endpoints[key] = tensor
            endpoints[name] = x
    return x, endpoints
