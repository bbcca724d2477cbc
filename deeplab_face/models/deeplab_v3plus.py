"""DeepLab-V3+ head (TF DeepLab model.py): ASPP, concat projection, decoder, logits.

Scopes are the model-zoo ones (top level: `image_pooling`, `aspp0`, `aspp{1,2,3}_depthwise`
/ `_pointwise`, `concat_projection`, `decoder/...`, `logits/semantic`), so checkpoints map
mechanically. Every resize is align-corners bilinear (reference/deeplab.md trap 1).

The head takes TF DeepLab's common.py options (HEAD_DEFAULTS), resolved by `resolve_head` and
stored in the segmenter's config so that a checkpoint reloads into the same function:
- `atrous_rates`: None = 6/12/18 at OS16, 12/24/36 at OS8 (today's head); [] = no atrous
  branches (common.py's None, the zoo's MobileNet-V2): ASPP keeps image pooling and aspp0,
  so `concat_projection` takes 512 channels.
- `decoder_output_stride`: 4, or None = no decoder (logits at the output stride).
- `multi_grid`: the unit rates of the trunk's last block (backbones.py holds the defaults).
- `aspp_with_batch_norm`: False skips the whole ASPP module (model.py extract_features returns
  the trunk's features) and the logits become a sum of one 1x1 conv per atrous rate
  (get_branch_logits: `logits/semantic`, `logits/semantic_1`, ...).
- `aspp_with_separable_conv`: False makes each atrous branch one 3x3 conv `aspp{i}`.
- `decoder_use_separable_conv`: False makes the decoder slim.repeat(2, conv2d 3x3):
  `decoder/decoder_conv0/decoder_conv0_{1,2}`.

The network N = task_net . feature_net (§3.1). The split is one named option:
- "decoder" (default): feature_net ends at the head's last map before the logits (the decoder's
  256-channel stride-4 map when there is a decoder); task_net = logits conv(s) + upsample to
  crop size + softmax.
- "logits": feature_net ends at the logits; task_net = upsample + softmax.
"""
import keras
from keras import layers

from deeplab_face.errors import ConfigError
from deeplab_face.models.backbones import BACKBONES, DEEPLAB_V3PLUS, HEAD_BN
from deeplab_face.models.layers import (BilinearResize, ZeroMeanUnitRange, conv_bn, crop_hw,
                                        scale_dimension, split_separable_conv_bn, tf_name)

ASPP_DEPTH = 256
DECODER_DEPTH = 256
DECODER_PROJECTION_DEPTH = 48
# feature_extractor.py's DECODER_END_POINTS: one stride-4 endpoint for each backbone here.
DECODER_OUTPUT_STRIDES = (4,)
CONCAT_PROJECTION_KEEP_PROB = 0.9
# Atrous rates per output stride (6/12/18 at 16, doubled at 8).
ATROUS_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}
SPLITS = ("decoder", "logits")
LOGITS_SCOPE = "logits/semantic"
MULTI_GRID_UNITS = 3  # resnet_v1_beta.py: "Expect multi_grid to have length 3."

# common.py's head options; defaults build today's head (ASPP 6/12/18 at OS16 + OS4 decoder).
HEAD_DEFAULTS = dict(atrous_rates=None, decoder_output_stride=4, multi_grid=None,
                     aspp_with_batch_norm=True, aspp_with_separable_conv=True,
                     decoder_use_separable_conv=True)
HEAD_OPTIONS = tuple(HEAD_DEFAULTS)


def _positive_ints(flag, values, length=None):
    try:
        ints = [int(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"--{flag}: {values!r} is not a list of integers") from None
    if any(v < 1 for v in ints) or (length is not None and len(ints) != length):
        count = f"{length} " if length else ""
        raise ConfigError(f"--{flag}: {values!r}: expected {count}positive integers")
    return ints


def resolve_head(backbone, output_stride, **options):
    """The head options with defaults filled in, as JSON-ready values (lists, None, bools).

    Raises ConfigError (one line naming the option) for an unknown option or a bad value.
    """
    if output_stride not in ATROUS_RATES:
        raise ConfigError(f"--output_stride: {output_stride} not supported; choose 8 or 16")
    unknown = sorted(set(options) - set(HEAD_OPTIONS))
    if unknown:
        raise ConfigError(f"head options: unknown {unknown}; choose from {list(HEAD_OPTIONS)}")
    head = dict(HEAD_DEFAULTS, **options)
    rates = head["atrous_rates"]
    head["atrous_rates"] = (list(ATROUS_RATES[output_stride]) if rates is None
                            else _positive_ints("atrous_rates", rates))
    if head["decoder_output_stride"] is not None:
        if head["decoder_output_stride"] not in DECODER_OUTPUT_STRIDES:
            raise ConfigError(f"--decoder_output_stride: {head['decoder_output_stride']!r} not "
                              f"supported; choose {list(DECODER_OUTPUT_STRIDES)} or none")
        head["decoder_output_stride"] = int(head["decoder_output_stride"])
    default_grid = BACKBONES[backbone].trunk.multi_grid
    if default_grid is None and head["multi_grid"] is not None:
        raise ConfigError(f"--multi_grid: {backbone} has no multi-grid block "
                          f"(got {head['multi_grid']!r})")
    if default_grid is not None:
        grid = default_grid if head["multi_grid"] is None else head["multi_grid"]
        head["multi_grid"] = _positive_ints("multi_grid", grid, MULTI_GRID_UNITS)
    for key in ("aspp_with_batch_norm", "aspp_with_separable_conv", "decoder_use_separable_conv"):
        if not isinstance(head[key], bool):
            raise ConfigError(f"--{key}: {head[key]!r} is not true or false")
    return head


def _aspp(features, rates, separable):
    """ASPP with image pooling; branch order fixes the concat_projection kernel rows (trap 7)."""
    # Image-level feature: mean over the whole crop-size map (DeepLab's avg_pool with a
    # crop-sized kernel), 1x1 conv + BN + ReLU, align-corners resize back (trap 8).
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="image_pooling__mean")(features)
    pooled = conv_bn(pooled, ASPP_DEPTH, 1, "image_pooling", HEAD_BN)
    pooled = BilinearResize(name="image_pooling__resize")([pooled, features])
    branches = [pooled, conv_bn(features, ASPP_DEPTH, 1, "aspp0", HEAD_BN)]
    for i, rate in enumerate(rates, 1):
        if separable:
            branches.append(split_separable_conv_bn(features, ASPP_DEPTH, f"aspp{i}", HEAD_BN,
                                                    rate=rate))
        else:  # slim.conv2d(features, depth, 3, rate=rate, scope=aspp{i}), SAME padding
            branches.append(conv_bn(features, ASPP_DEPTH, 3, f"aspp{i}", HEAD_BN, rate=rate))
    x = layers.Concatenate(name="aspp_concat")(branches)
    x = conv_bn(x, ASPP_DEPTH, 1, "concat_projection", HEAD_BN)
    return layers.Dropout(1.0 - CONCAT_PROJECTION_KEEP_PROB, name="concat_projection_dropout")(x)


def _decoder(aspp, low_level, decoder_size, separable):
    """refine_by_decoder: 48-channel projection of the low-level map, concat, two 3x3 256 convs
    (split separable `decoder_conv{0,1}`, or slim.repeat's `decoder_conv0/decoder_conv0_{1,2}`)."""
    projection = conv_bn(low_level, DECODER_PROJECTION_DEPTH, 1, "decoder/feature_projection0",
                         HEAD_BN)
    upsampled = BilinearResize(decoder_size, name="decoder__resize_aspp")(aspp)
    projection = BilinearResize(decoder_size, name="decoder__resize_low_level")(projection)
    x = layers.Concatenate(name="decoder__concat")([upsampled, projection])
    if separable:
        x = split_separable_conv_bn(x, DECODER_DEPTH, "decoder/decoder_conv0", HEAD_BN)
        return split_separable_conv_bn(x, DECODER_DEPTH, "decoder/decoder_conv1", HEAD_BN)
    for unit in (1, 2):
        x = conv_bn(x, DECODER_DEPTH, 3, f"decoder/decoder_conv0/decoder_conv0_{unit}", HEAD_BN)
    return x


def logits_branches(head):
    """get_branch_logits: one 1x1 logits conv, or one per atrous rate without ASPP batch norm."""
    if head["aspp_with_batch_norm"] or not head["atrous_rates"]:
        return 1
    return len(head["atrous_rates"])


def logits_layers(x, num_classes, branches=1):
    """`logits/semantic[_i]`: 1x1 convs with bias, no BN (trap 4), N(0, 0.01) init, summed.

    With a 1x1 kernel (common.py's logits_kernel_size default) a branch's atrous rate changes
    nothing, so every branch is a plain 1x1 conv.
    """
    outputs = []
    for i in range(branches):
        scope = LOGITS_SCOPE + (f"_{i}" if i else "")
        outputs.append(layers.Conv2D(
            num_classes, 1, use_bias=True, name=tf_name(scope),
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01))(x))
    return outputs[0] if branches == 1 else layers.Add(name="logits__sum")(outputs)


def task_head(feature_shape, num_classes, crop_size, logits_branches_count):
    """task_net: [logits conv(s)] + align-corners upsample to crop size + softmax.

    `logits_branches_count` 0 = the features are already logits (split "logits"). The Softmax
    is the last layer and its input is the upsampled logits (segmenter.py builds the training
    `logits_model` from that).
    """
    features = keras.Input(shape=feature_shape, name="features")
    x = features
    if logits_branches_count:
        x = logits_layers(features, num_classes, logits_branches_count)
    x = BilinearResize(crop_hw(crop_size), name="upsample_logits")(x)
    probabilities = layers.Softmax(name="probabilities")(x)
    return keras.Model(features, probabilities, name="task_net")


def build_deeplab_v3plus(backbone, num_classes, crop_size, output_stride=16, split="decoder",
                         **head):
    """DeepLab-V3+ on `backbone` (one of DEEPLAB_V3PLUS); returns (feature_net, task_net).

    `head`: common.py options (HEAD_DEFAULTS; module docstring). feature_net takes RGB frames
    in [0, 255] of shape (crop, crop, 3) and scales them to [-1, 1] inside (trap 5).
    """
    if backbone not in DEEPLAB_V3PLUS:
        raise ConfigError(f"--backbone: unknown DeepLab-V3+ backbone {backbone!r}; "
                          f"choose from {sorted(DEEPLAB_V3PLUS)}")
    if split not in SPLITS:
        raise ConfigError(f"split: {split!r} not in {SPLITS}")
    head = resolve_head(backbone, output_stride, **head)
    trunk = BACKBONES[backbone].trunk
    height, width = crop_hw(crop_size)
    frames = keras.Input(shape=(height, width, 3), name="frames")
    images = ZeroMeanUnitRange(name="preprocess")(frames)
    x, endpoints = trunk.builder(images, output_stride, trunk.bn, head["multi_grid"])
    if head["aspp_with_batch_norm"]:
        x = _aspp(x, head["atrous_rates"], head["aspp_with_separable_conv"])
    if head["decoder_output_stride"] is not None:
        stride = head["decoder_output_stride"]
        decoder_size = (scale_dimension(height, 1.0 / stride), scale_dimension(width, 1.0 / stride))
        x = _decoder(x, endpoints[trunk.low_level_endpoint], decoder_size,
                     head["decoder_use_separable_conv"])
    branches = logits_branches(head)
    if split == "logits":
        x = logits_layers(x, num_classes, branches)
    feature_net = keras.Model(frames, x, name="feature_net")
    task_net = task_head(tuple(x.shape[1:]), num_classes, (height, width),
                         branches if split == "decoder" else 0)
    return feature_net, task_net
