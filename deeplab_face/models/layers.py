"""Backend-neutral building blocks shared by the DeepLab backbones and head.

TF DeepLab resizes with `align_corners=True` everywhere (core/utils.py) and pads
strided convolutions explicitly before a VALID convolution (fixed_padding /
conv2d_same). Keras's own resizing layers are half-pixel, so the resize here is
written with `keras.ops`: align-corners bilinear interpolation is separable, so it
is two small interpolation matrices applied along height and width (or, for the
flow net's inputs and outputs, two gathers per axis).

Layers are named after their TF-Slim scopes with '/' written as `SCOPE_SEP`
(Keras 3 names cannot contain '/'), which makes the checkpoint map mechanical.
"""
import keras
import numpy as np
from keras import layers, ops

SCOPE_SEP = "__"


def tf_name(scope):
    """Keras layer name for a TF-Slim scope: 'a/b/c' -> 'a__b__c'."""
    return scope.replace("/", SCOPE_SEP)


def crop_hw(crop_size):
    """(h, w) from an int or a pair."""
    if isinstance(crop_size, (list, tuple)):
        return int(crop_size[0]), int(crop_size[1])
    return int(crop_size), int(crop_size)


def scale_dimension(dim, scale):
    """TF DeepLab's size rule: int((dim - 1) * scale + 1); 513 at 1/16 -> 33, at 1.25 -> 641."""
    return int((float(dim) - 1.0) * scale + 1.0)


def align_corners_matrix(out_size, in_size):
    """(out_size, in_size) float32 matrix of align-corners bilinear weights along one axis."""
    matrix = np.zeros((out_size, in_size), np.float32)
    if in_size == 1 or out_size == 1:
        matrix[:, 0] = 1.0  # TF maps every output to the first input in these cases
        return matrix
    positions = np.arange(out_size, dtype=np.float64) * (in_size - 1) / (out_size - 1)
    lower = np.minimum(np.floor(positions).astype(np.int64), in_size - 1)
    upper = np.minimum(lower + 1, in_size - 1)
    frac = (positions - lower).astype(np.float32)
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, lower), 1.0 - frac)
    np.add.at(matrix, (rows, upper), frac)
    return matrix


RESIZE_METHODS = ("matmul", "gather")


def _axis_taps(out_size, in_size):
    """Align-corners bilinear taps along one axis: lower index, upper index, upper weight."""
    if out_size == 1 or in_size == 1:
        zeros = np.zeros(out_size, np.int32)
        return zeros, zeros, np.zeros(out_size, np.float32)
    positions = np.arange(out_size, dtype=np.float64) * (in_size - 1) / (out_size - 1)
    lower = np.minimum(np.floor(positions).astype(np.int32), in_size - 1)
    upper = np.minimum(lower + 1, in_size - 1)
    return lower, upper, (positions - lower).astype(np.float32)


def resize_align_corners(images, size, method="matmul"):
    """Bilinear resize of NHWC `images` to `size` (h, w) with align_corners=True.

    Input spatial dimensions must be static. Matches
    tf.compat.v1.image.resize_bilinear(images, size, align_corners=True).

    `method` applies the same weights two ways, equal up to float rounding (about 2e-7 of the values), not bit
    for bit, so each caller keeps the form its stages were trained and measured with:
    "matmul" (the model layers, multi-scale evaluation): two interpolation matrices; "gather"
    (flownet2s.dff): two gathers per axis, cheaper where the matrix form costs as much as the
    flow net (3-channel frames 513 -> 512, the 256-channel scale field 128 -> 129).
    """
    if method not in RESIZE_METHODS:
        raise ValueError(f"resize method {method!r} not in {list(RESIZE_METHODS)}")
    if method == "gather":
        return _resize_gather(images, size)
    in_h, in_w = int(images.shape[1]), int(images.shape[2])
    out_h, out_w = int(size[0]), int(size[1])
    if (in_h, in_w) == (out_h, out_w):
        return images
    channels = int(images.shape[3])
    rows = ops.convert_to_tensor(align_corners_matrix(out_h, in_h), dtype=images.dtype)
    cols = ops.convert_to_tensor(align_corners_matrix(out_w, in_w), dtype=images.dtype)
    # Two batched matmuls on reshaped views, no transposes (einsum was ~40x slower on TF CPU).
    x = images
    if out_h != in_h:
        x = ops.matmul(rows[None], ops.reshape(x, (-1, in_h, in_w * channels)))
        x = ops.reshape(x, (-1, out_h, in_w, channels))
    if out_w != in_w:
        x = ops.matmul(cols[None], ops.reshape(x, (-1, in_w, channels)))
        x = ops.reshape(x, (-1, out_h, out_w, channels))
    return x


def _resize_gather(images, size):
    """resize_align_corners' "gather" form: low + (high - low) * weight along each axis."""
    out_h, out_w = int(size[0]), int(size[1])
    for axis, out_size in ((1, out_h), (2, out_w)):
        in_size = int(images.shape[axis])
        if in_size == out_size:
            continue
        lower, upper, weight = _axis_taps(out_size, in_size)
        shape = [1, 1, 1, 1]
        shape[axis] = out_size
        weight = ops.convert_to_tensor(weight.reshape(shape), dtype=images.dtype)
        low = ops.take(images, ops.convert_to_tensor(lower), axis=axis)
        high = ops.take(images, ops.convert_to_tensor(upper), axis=axis)
        images = low + (high - low) * weight
    return images


@keras.saving.register_keras_serializable(package="deeplab_face")
class BilinearResize(layers.Layer):
    """Align-corners bilinear resize to a fixed (height, width), or to the size of a second input.

    Called as `BilinearResize(size=(h, w))(x)` or `BilinearResize()([x, like])`,
    in which case `x` is resized to `like`'s spatial size.
    """

    def __init__(self, size=None, **kwargs):
        super().__init__(**kwargs)
        self.size = None if size is None else (int(size[0]), int(size[1]))

    def _target(self, inputs):
        if isinstance(inputs, (list, tuple)):
            return inputs[0], (int(inputs[1].shape[1]), int(inputs[1].shape[2]))
        if self.size is None:
            raise ValueError("BilinearResize needs `size` or a second input to match")
        return inputs, self.size

    def call(self, inputs):
        images, size = self._target(inputs)
        return resize_align_corners(images, size)

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)):
            images, like = input_shape
            return (images[0], like[1], like[2], images[3])
        return (input_shape[0], self.size[0], self.size[1], input_shape[3])

    def get_config(self):
        config = super().get_config()
        config["size"] = self.size
        return config


@keras.saving.register_keras_serializable(package="deeplab_face")
class ZeroMeanUnitRange(layers.Layer):
    """Pixels [0, 255] -> [-1, 1] as TF DeepLab's _preprocess_zero_mean_unit_range: x * 2/255 - 1.

    (keras.layers.Rescaling is a TF-data layer that needs TensorFlow on every backend.)
    """

    def call(self, inputs):
        return ops.cast(inputs, self.compute_dtype) * (2.0 / 255.0) - 1.0

    def compute_output_shape(self, input_shape):
        return input_shape


def batch_norm(x, scope, bn):
    """TF-Slim BatchNorm under `scope`; `bn` = (momentum, epsilon) (Keras momentum = TF decay)."""
    momentum, epsilon = bn
    return layers.BatchNormalization(momentum=momentum, epsilon=epsilon,
                                     name=tf_name(scope + "/BatchNorm"))(x)


def fixed_padding(x, kernel_size, rate=1):
    """TF DeepLab fixed_padding: pad total k_eff - 1 (k_eff = k + (k-1)(rate-1)), begin = total // 2."""
    effective = kernel_size + (kernel_size - 1) * (rate - 1)
    total = effective - 1
    begin = total // 2
    if total == 0:
        return x
    return layers.ZeroPadding2D(((begin, total - begin), (begin, total - begin)))(x)


def conv_bn(x, filters, kernel_size, scope, bn, stride=1, rate=1, activation="relu",
            explicit_padding=True):
    """slim.conv2d + BatchNorm (+ activation) as conv2d_same does it.

    Stride 2 with explicit_padding pads (fixed_padding) then runs VALID, as
    resnet_utils.conv2d_same; otherwise SAME.
    """
    if stride > 1 and explicit_padding and kernel_size > 1:
        x = fixed_padding(x, kernel_size, rate)
        padding = "valid"
    else:
        padding = "same"
    x = layers.Conv2D(filters, kernel_size, strides=stride, dilation_rate=rate, padding=padding,
                      use_bias=False, name=tf_name(scope))(x)
    x = batch_norm(x, scope, bn)
    if activation is not None:
        x = layers.Activation(activation, name=tf_name(scope + "/activation"))(x)
    return x


def depthwise_bn(x, scope, bn, kernel_size=3, stride=1, rate=1, activation="relu",
                 explicit_padding=True):
    """slim.separable_conv2d(num_outputs=None) + BatchNorm (+ activation): `<scope>/depthwise_weights`."""
    if stride > 1 and explicit_padding:
        x = fixed_padding(x, kernel_size, rate)
        padding = "valid"
    else:
        padding = "same"
    x = layers.DepthwiseConv2D(kernel_size, strides=stride, dilation_rate=rate, padding=padding,
                               use_bias=False, name=tf_name(scope))(x)
    x = batch_norm(x, scope, bn)
    if activation is not None:
        x = layers.Activation(activation, name=tf_name(scope + "/activation"))(x)
    return x


def split_separable_conv_bn(x, filters, scope, bn, rate=1, stride=1, activation="relu",
                            explicit_padding=True):
    """`<scope>_depthwise` (3x3 + BN + act) then `<scope>_pointwise` (1x1 + BN + act), as TF DeepLab."""
    x = depthwise_bn(x, scope + "_depthwise", bn, 3, stride, rate, activation, explicit_padding)
    return conv_bn(x, filters, 1, scope + "_pointwise", bn, activation=activation)

