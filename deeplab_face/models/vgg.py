"""Table 1's VGG16 rows: FCN-8s and DeepLab-V2 (ASPP-L), backend-neutral Keras 3.

The paper gives no details for these rows (reference/deeplab.md, "Other Table 1 rows"); we build the
standard variants from the original papers:

- FCN-8s (Long et al., shelhamer/fcn.berkeleyvision.org): fully convolutional VGG16 (fc6 as a 7x7
  conv with 4096 filters, fc7 1x1 4096), 1x1 score layers on conv7, pool4 and pool3, fused by 2x
  learned transposed convs (bilinear init), then a fixed 8x bilinear upsampling.
- DeepLab-V2 VGG16 ASPP-L (Chen et al.): pool4 and pool5 3x3 at stride 1, conv5 atrous at rate 2
  (output stride 8), four branches fc6 (3x3, rates 6/12/18/24, 1024) -> fc7 (1x1, 1024) -> fc8
  (1x1, C), summed.

Padding (documented deviation from Caffe's FCN): Caffe FCN pads the input by 100 pixels, runs fc6
VALID and crops every score map by hand-computed offsets. We use SAME padding everywhere instead
(2x2 max pools in SAME mode = Caffe's ceil-mode pooling), so a map at stride 2^k has ceil(S / 2^k)
cells: for S = 16k + 1 that is (S - 1) / 2^k + 1 (65 -> 33, 17, 9, 5, 3). A 2x transposed conv
(kernel 4, VALID) of an m-cell map gives 2m + 2 cells whose cell 1 + 2i is centred on input cell i;
we crop [1, 1 + n) to meet the finer n-cell map (the FCN "crop" layers with a fixed offset of 1).
DeepLab-V2's 3x3 pools with SAME padding are its prototxt's pad-1 pools (513 -> 257 -> 129 -> 65).

Input scaling: frames are RGB in [0, 255]; both models subtract the ILSVRC mean of Caffe VGG in RGB
order (slim's `vgg_preprocessing`: R 123.68, G 116.78, B 103.94) and do not rescale, so slim
`vgg_16` ImageNet weights (RGB) fit. Layers follow slim `vgg_16` scopes with "/" written as "__"
(Keras 3 forbids "/" in layer names): `vgg_16__conv1__conv1_1` ... `vgg_16__fc7`.

Split: `feature_net` ends before the final upsampling (the C-channel score map at stride 8,
(S - 1) / 8 + 1 cells for S = 16k + 1); `task_net` is the align-corners resize to S plus softmax.
The output stride of both models is fixed by the architecture (8): the `output_stride` argument is
accepted for a uniform builder signature and must be 8, 16 (the generic default) or None.
Split names "decoder" and "logits" (DeepLab-V3+'s) both mean this split point here.
"""
import keras
import numpy as np
from keras import layers, ops

from deeplab_face.errors import ConfigError
from deeplab_face.models.layers import BilinearResize, crop_hw, tf_name

VGG_MEAN_RGB = (123.68, 116.78, 103.94)  # slim vgg_preprocessing _R_MEAN, _G_MEAN, _B_MEAN
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # (filters, convs) of conv1..conv5
FCN_FC_FILTERS = 4096  # fc6 7x7 / fc7 1x1 (FCN-8s)
ASPP_L_RATES = (6, 12, 18, 24)  # DeepLab-V2 ASPP-L fc6 rates
ASPP_L_FILTERS = 1024
DROPOUT_RATE = 0.5  # after fc6 and fc7 (both papers)
SCOPE = "vgg_16"
# Both split names of DeepLab-V3+ mean the same here (no decoder): before the final upsampling.
VGG_SPLITS = ("decoder", "logits")


def _name(*scopes):
    return tf_name("/".join(scopes))


@keras.saving.register_keras_serializable(package="deeplab_face")
class SubtractMean(layers.Layer):
    """x - mean per channel (Caffe VGG preprocessing, RGB order)."""

    def __init__(self, mean=VGG_MEAN_RGB, **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)

    def call(self, x):
        return x - ops.convert_to_tensor(np.asarray(self.mean, "float32"), dtype=x.dtype)

    def get_config(self):
        return {**super().get_config(), "mean": list(self.mean)}


@keras.saving.register_keras_serializable(package="deeplab_face")
class BilinearUpsampleInitializer(keras.initializers.Initializer):
    """Bilinear kernel for a C -> C transposed conv, channel-diagonal (FCN's `upsample_filt`)."""

    def __call__(self, shape, dtype=None):
        size, _, out_channels, in_channels = shape  # Conv2DTranspose kernel: (h, w, out, in)
        factor = (size + 1) // 2
        center = factor - 1 if size % 2 == 1 else factor - 0.5
        og = np.arange(size, dtype="float64")
        filt_1d = 1.0 - np.abs(og - center) / factor
        filt = np.outer(filt_1d, filt_1d)
        kernel = np.zeros((size, size, out_channels, in_channels), "float32")
        for c in range(min(out_channels, in_channels)):
            kernel[:, :, c, c] = filt
        return ops.convert_to_tensor(kernel, dtype=dtype or "float32")

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package="deeplab_face")
class CropToMatch(layers.Layer):
    """Crops `x` to the spatial size of `reference`, starting at a fixed offset (FCN's crop layer)."""

    def __init__(self, offset=1, **kwargs):
        super().__init__(**kwargs)
        self.offset = int(offset)

    def call(self, inputs):
        x, reference = inputs
        h, w = reference.shape[1], reference.shape[2]
        return x[:, self.offset:self.offset + h, self.offset:self.offset + w, :]

    def compute_output_shape(self, input_shapes):
        x_shape, ref_shape = input_shapes
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])

    def get_config(self):
        return {**super().get_config(), "offset": self.offset}


def _check_args(output_stride, split):
    if output_stride not in (8, 16, None):
        raise ConfigError(f"--output_stride={output_stride}: the VGG models have a fixed output stride 8")
    if split not in VGG_SPLITS:
        raise ConfigError(f"--split={split}: the VGG models support only {VGG_SPLITS}")


def _vgg16_body(x, pool_stride=(2, 2, 2, 2, 2), pool_size=2, conv5_rate=1):
    """slim vgg_16 conv1..pool5; returns pool3, pool4, pool5."""
    taps = {}
    for block, (filters, convs) in enumerate(VGG16_BLOCKS, start=1):
        rate = conv5_rate if block == 5 else 1
        for unit in range(1, convs + 1):
            x = layers.Conv2D(filters, 3, padding="same", dilation_rate=rate, activation="relu",
                              name=_name(SCOPE, f"conv{block}", f"conv{block}_{unit}"))(x)
        x = layers.MaxPooling2D(pool_size, strides=pool_stride[block - 1], padding="same",
                                name=_name(SCOPE, f"pool{block}"))(x)
        taps[block] = x
    return taps[3], taps[4], taps[5]


def _task_net(feature_shape, crop_size):
    """Final upsampling to the crop (align-corners bilinear, DeepLab convention) + softmax.

    As in DeepLab-V3+'s task_net, the Softmax is the last layer and its input is the upsampled
    logits (the training loss reads the logits there).
    """
    features = keras.Input(feature_shape, name="features")
    logits = BilinearResize(crop_hw(crop_size), name="upsample_logits")(features)
    probabilities = layers.Softmax(axis=-1, name="probabilities")(logits)
    return keras.Model(features, probabilities, name="task_net")


def build_fcn8s_vgg16(num_classes, crop_size, output_stride=16, split="decoder"):
    """FCN-8s on VGG16 -> (feature_net, task_net); frames (B, S, S, 3) in [0, 255].

    `crop_size` is S or (h, w). feature_net gives (B, ceil(h/8), ceil(w/8), C) fused scores.
    """
    _check_args(output_stride, split)
    height, width = crop_hw(crop_size)
    frames = keras.Input((height, width, 3), name="frames")
    x = SubtractMean(name="subtract_mean")(frames)
    pool3, pool4, pool5 = _vgg16_body(x)
    # fc6 as a 7x7 conv (SAME, see the module docstring), fc7 1x1; dropout as in FCN.
    x = layers.Conv2D(FCN_FC_FILTERS, 7, padding="same", activation="relu", name=_name(SCOPE, "fc6"))(pool5)
    x = layers.Dropout(DROPOUT_RATE, name="dropout6")(x)
    x = layers.Conv2D(FCN_FC_FILTERS, 1, activation="relu", name=_name(SCOPE, "fc7"))(x)
    x = layers.Dropout(DROPOUT_RATE, name="dropout7")(x)
    # Score layers start at zero (FCN's initialisation); the 2x upsamplings start bilinear and learn.
    score_fr = layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name="score_fr")(x)
    upscore2 = layers.Conv2DTranspose(num_classes, 4, strides=2, use_bias=False,
                                      kernel_initializer=BilinearUpsampleInitializer(),
                                      name="upscore2")(score_fr)
    score_pool4 = layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name="score_pool4")(pool4)
    upscore2 = CropToMatch(1, name="upscore2_crop")([upscore2, score_pool4])
    fuse_pool4 = layers.Add(name="fuse_pool4")([upscore2, score_pool4])
    upscore_pool4 = layers.Conv2DTranspose(num_classes, 4, strides=2, use_bias=False,
                                           kernel_initializer=BilinearUpsampleInitializer(),
                                           name="upscore_pool4")(fuse_pool4)
    score_pool3 = layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name="score_pool3")(pool3)
    upscore_pool4 = CropToMatch(1, name="upscore_pool4_crop")([upscore_pool4, score_pool3])
    fuse_pool3 = layers.Add(name="fuse_pool3")([upscore_pool4, score_pool3])
    feature_net = keras.Model(frames, fuse_pool3, name="feature_net")
    task_net = _task_net(tuple(fuse_pool3.shape[1:]), crop_size)
    return feature_net, task_net


def build_deeplab_v2_vgg16(num_classes, crop_size, output_stride=16, split="decoder"):
    """DeepLab-V2 ASPP-L on VGG16 (OS 8) -> (feature_net, task_net); frames in [0, 255]."""
    _check_args(output_stride, split)
    height, width = crop_hw(crop_size)
    frames = keras.Input((height, width, 3), name="frames")
    x = SubtractMean(name="subtract_mean")(frames)
    # 3x3 pools (pad 1) at strides 2, 2, 2, 1, 1 and conv5 at rate 2: output stride 8.
    _, _, pool5 = _vgg16_body(x, pool_stride=(2, 2, 2, 1, 1), pool_size=3, conv5_rate=2)
    branches = []
    for i, rate in enumerate(ASPP_L_RATES, start=1):
        b = layers.Conv2D(ASPP_L_FILTERS, 3, padding="same", dilation_rate=rate, activation="relu",
                          name=f"fc6_{i}")(pool5)
        b = layers.Dropout(DROPOUT_RATE, name=f"drop6_{i}")(b)
        b = layers.Conv2D(ASPP_L_FILTERS, 1, activation="relu", name=f"fc7_{i}")(b)
        b = layers.Dropout(DROPOUT_RATE, name=f"drop7_{i}")(b)
        b = layers.Conv2D(num_classes, 1, name=f"fc8_{i}",
                          kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))(b)
        branches.append(b)
    scores = layers.Add(name="fc8_sum")(branches)  # ASPP-L branches are summed
    feature_net = keras.Model(frames, scores, name="feature_net")
    task_net = _task_net(tuple(scores.shape[1:]), crop_size)
    return feature_net, task_net
