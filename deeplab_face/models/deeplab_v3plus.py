"""DeepLab-V3+ head (TF DeepLab model.py): ASPP, concat projection, decoder, logits.

Scopes are the model-zoo ones (top level: `image_pooling`, `aspp0`, `aspp{1,2,3}_depthwise`
/ `_pointwise`, `concat_projection`, `decoder/...`, `logits/semantic`), so checkpoints map
mechanically. Every resize is align-corners bilinear (reference/deeplab.md trap 1).

The network N = task_net . feature_net (§3.1). The split is one named option:
- "decoder" (default): feature_net ends at the decoder's last 256-channel stride-4 map;
  task_net = 1x1 logits conv + upsample to crop size + softmax.
- "logits": feature_net ends at the stride-4 logits; task_net = upsample + softmax.
"""
import keras
from keras import layers

from deeplab_face.errors import ConfigError
from deeplab_face.models.backbones import BACKBONES, HEAD_BN
from deeplab_face.models.layers import (BilinearResize, ZeroMeanUnitRange, conv_bn,
                                        scale_dimension, split_separable_conv_bn, tf_name)

ASPP_DEPTH = 256
DECODER_DEPTH = 256
DECODER_PROJECTION_DEPTH = 48
DECODER_OUTPUT_STRIDE = 4
CONCAT_PROJECTION_KEEP_PROB = 0.9
# Atrous rates per output stride (6/12/18 at 16, doubled at 8).
ATROUS_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}
SPLITS = ("decoder", "logits")
LOGITS_SCOPE = "logits/semantic"


def crop_hw(crop_size):
    """(h, w) from an int or a pair."""
    if isinstance(crop_size, (list, tuple)):
        return int(crop_size[0]), int(crop_size[1])
    return int(crop_size), int(crop_size)


def _aspp(features, rates):
    """ASPP with image pooling; branch order fixes the concat_projection kernel rows (trap 7)."""
    # Image-level feature: mean over the whole crop-size map (DeepLab's avg_pool with a
    # crop-sized kernel), 1x1 conv + BN + ReLU, align-corners resize back (trap 8).
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="image_pooling__mean")(features)
    pooled = conv_bn(pooled, ASPP_DEPTH, 1, "image_pooling", HEAD_BN)
    pooled = BilinearResize(name="image_pooling__resize")([pooled, features])
    branches = [pooled, conv_bn(features, ASPP_DEPTH, 1, "aspp0", HEAD_BN)]
    for i, rate in enumerate(rates, 1):
        branches.append(split_separable_conv_bn(features, ASPP_DEPTH, f"aspp{i}", HEAD_BN, rate=rate))
    x = layers.Concatenate(name="aspp_concat")(branches)
    x = conv_bn(x, ASPP_DEPTH, 1, "concat_projection", HEAD_BN)
    return layers.Dropout(1.0 - CONCAT_PROJECTION_KEEP_PROB, name="concat_projection_dropout")(x)


def _decoder(aspp, low_level, decoder_size):
    """refine_by_decoder: 48-channel projection of the low-level map, concat, two separable 3x3 256."""
    projection = conv_bn(low_level, DECODER_PROJECTION_DEPTH, 1, "decoder/feature_projection0",
                         HEAD_BN)
    upsampled = BilinearResize(decoder_size, name="decoder__resize_aspp")(aspp)
    projection = BilinearResize(decoder_size, name="decoder__resize_low_level")(projection)
    x = layers.Concatenate(name="decoder__concat")([upsampled, projection])
    x = split_separable_conv_bn(x, DECODER_DEPTH, "decoder/decoder_conv0", HEAD_BN)
    return split_separable_conv_bn(x, DECODER_DEPTH, "decoder/decoder_conv1", HEAD_BN)


def logits_conv(num_classes):
    """`logits/semantic`: 1x1 conv with bias, no BN (trap 4); TF initialises it N(0, 0.01)."""
    return layers.Conv2D(num_classes, 1, use_bias=True, name=tf_name(LOGITS_SCOPE),
                         kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01))


def task_head(feature_shape, num_classes, crop_size, with_logits_conv):
    """task_net: [1x1 logits conv] + align-corners upsample to crop size + softmax.

    The Softmax is the last layer and its input is the upsampled logits
    (segmenter.py builds the training `logits_model` from that).
    """
    features = keras.Input(shape=feature_shape, name="features")
    x = logits_conv(num_classes)(features) if with_logits_conv else features
    x = BilinearResize(crop_hw(crop_size), name="upsample_logits")(x)
    probabilities = layers.Softmax(name="probabilities")(x)
    return keras.Model(features, probabilities, name="task_net")


def build_deeplab_v3plus(backbone, num_classes, crop_size, output_stride=16, split="decoder"):
    """DeepLab-V3+ on `backbone` (a key of BACKBONES); returns (feature_net, task_net).

    feature_net takes RGB frames in [0, 255] of shape (crop, crop, 3) and scales them
    to [-1, 1] inside (trap 5).
    """
    if backbone not in BACKBONES:
        raise ConfigError(f"--backbone: unknown DeepLab-V3+ backbone {backbone!r}; "
                          f"choose from {sorted(BACKBONES)}")
    if output_stride not in ATROUS_RATES:
        raise ConfigError(f"--output_stride: {output_stride} not supported; choose 8 or 16")
    if split not in SPLITS:
        raise ConfigError(f"split: {split!r} not in {SPLITS}")
    spec = BACKBONES[backbone]
    height, width = crop_hw(crop_size)
    frames = keras.Input(shape=(height, width, 3), name="frames")
    images = ZeroMeanUnitRange(name="preprocess")(frames)
    features, endpoints = spec.builder(images, output_stride, spec.bn)
    aspp = _aspp(features, ATROUS_RATES[output_stride])
    decoder_size = (scale_dimension(height, 1.0 / DECODER_OUTPUT_STRIDE),
                    scale_dimension(width, 1.0 / DECODER_OUTPUT_STRIDE))
    decoded = _decoder(aspp, endpoints[spec.low_level_endpoint], decoder_size)
    if split == "logits":
        decoded = logits_conv(num_classes)(decoded)
    feature_net = keras.Model(frames, decoded, name="feature_net")
    task_net = task_head(tuple(decoded.shape[1:]), num_classes, (height, width),
                         with_logits_conv=(split == "decoder"))
    return feature_net, task_net
