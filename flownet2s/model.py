"""FlowNetSimple as in FlowNet 2.0 (FlowNet2-S / FlowNet2-s), backend-neutral Keras 3.

Layout (flownet_dff.md "Layers", DVSNet `model/flownetmodel.py`): a contracting part
conv1..conv6_1 with explicit symmetric padding before VALID convolutions (Caffe
practice; TF SAME pads asymmetrically at stride 2), LeakyReLU 0.1 after every conv and
deconv, and a refinement part where concatN = [convN(_1), deconvN, upsampled flow]
feeds the next flow prediction. `predict_flow2` sits at stride 4 of the input and is
multiplied by 20 (FlowNet's training scale), giving displacements in input pixels.

Width multiplier: 0.375 = FlowNet2-s (the paper's §3.1 F, "up to 140 fps", DVSNet's
`FlowNets`), 1.0 = FlowNet2-S (38.68 M parameters without the scale head).

Layers carry the TF1 variable scope names (`conv1`, `predict_flow6`, `deconv5`,
`upsample_flow6to5`, `predict_scale`), so the checkpoint map (flownet2s.checkpoint) is
one name per layer.
"""

import keras
import numpy as np
from keras import layers, ops

from deeplab_face.stage import load_stage_weights, read_stage_config
from deeplab_face.errors import CheckpointError, ConfigError

FLOWNET2_S_WIDTH = 0.375       # "FlowNet2-s" (lower case), the paper's F (§3.1)
FLOW_SCALE = 20.0              # predict_flow x 20 = displacement in flow-input pixels
LEAKY_SLOPE = 0.1
FLOW_STRIDE = 4                # predict_flow2's stride relative to the input
INPUT_MULTIPLE = 64            # conv6's stride: input sides are multiples of it

# Full-width (FlowNet2-S) channels; the width multiplier scales every one of them.
ENCODER = (  # name, kernel, stride, channels
    ("conv1", 7, 2, 64), ("conv2", 5, 2, 128), ("conv3", 5, 2, 256), ("conv3_1", 3, 1, 256),
    ("conv4", 3, 2, 512), ("conv4_1", 3, 1, 512), ("conv5", 3, 2, 512), ("conv5_1", 3, 1, 512),
    ("conv6", 3, 2, 1024), ("conv6_1", 3, 1, 1024))
DECODER = (  # level, skip connection, deconv channels
    (5, "conv5_1", 512), (4, "conv4_1", 256), (3, "conv3_1", 128), (2, "conv2", 64))

# Pair normalisations (flownet_dff.md "Input normalisation"). The net sees [current, key]
# (current first, as DVSNet and DFF feed it), in the channel order of the weights' origin.
NORMALIZATIONS = {
    # flownet2-pytorch / tensorpack: minus the per-channel mean over both frames, /255;
    # reproduces the Caffe AEE of the FlowNet 2.0 release (default).
    "pair_mean": dict(channels="bgr", mean="pair"),
    # sampepose/flownet2-tf and DVSNet's FlowNets: /255, no mean, BGR.
    "scale_only": dict(channels="bgr", mean=None),
    # Deep Feature Flow: RGB minus the fixed means below, /255.
    "dff": dict(channels="rgb", mean=(123.15, 115.90, 103.06)),
}
DEFAULT_NORMALIZATION = "pair_mean"
SCALE_HEADS = ("dff", "dvsnet")
# Multi-scale outputs (build_flownet(multiscale=True)): predict_flowN at stride 2^N, raw (flow / 20,
# in input pixels), the five terms of FlowNet's training loss (FlowNet 2.0 / FlowNetS Caffe
# `train.prototxt`: loss weights 0.32, 0.08, 0.02, 0.01, 0.005 from predict_flow6 to predict_flow2).
MULTISCALE_LEVELS = (6, 5, 4, 3, 2)


def scaled(channels, width):
    return max(1, int(round(channels * width)))


@keras.saving.register_keras_serializable(package="flownet2s")
class PairNormalization(layers.Layer):
    """[key, current] frames in [0, 255] RGB -> the normalised 6-channel [current, key] input."""

    def __init__(self, normalization=DEFAULT_NORMALIZATION, **kwargs):
        super().__init__(**kwargs)
        if normalization not in NORMALIZATIONS:
            raise ConfigError(f"--normalization: {normalization!r} not in {sorted(NORMALIZATIONS)}")
        self.normalization = normalization

    def call(self, inputs):
        key_frame, current_frame = inputs
        spec = NORMALIZATIONS[self.normalization]
        pair = ops.concatenate([ops.cast(current_frame, "float32"),
                                ops.cast(key_frame, "float32")], axis=-1)
        if spec["mean"] == "pair":
            # One mean per colour channel over both frames and all pixels (per example).
            per_frame = ops.mean(pair, axis=(1, 2), keepdims=True)
            colour_mean = 0.5 * (per_frame[..., :3] + per_frame[..., 3:])
            pair = pair - ops.concatenate([colour_mean, colour_mean], axis=-1)
        elif spec["mean"] is not None:
            pair = pair - ops.convert_to_tensor(list(spec["mean"]) * 2, "float32")
        pair = pair / 255.0
        if spec["channels"] == "bgr":
            pair = ops.concatenate([pair[..., 2::-1], pair[..., 5:2:-1]], axis=-1)
        return pair

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape[0])
        return shape[:-1] + (6,)

    def get_config(self):
        config = super().get_config()
        config["normalization"] = self.normalization
        return config


@keras.saving.register_keras_serializable(package="flownet2s")
class CropTo(layers.Layer):
    """DVSNet's `antipad`: crop a VALID 4x4/s2 deconvolution's output (2n + 2) to `size`.

    One row/column goes from the top/left; the rest from the bottom/right (2 when the target
    is odd), which equals Caffe's pad-1 deconvolution followed by a parity crop.
    """

    def __init__(self, size, **kwargs):
        super().__init__(**kwargs)
        self.size = (int(size[0]), int(size[1]))

    def call(self, x):
        return x[:, 1:1 + self.size[0], 1:1 + self.size[1], :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size[0], self.size[1], input_shape[3])

    def get_config(self):
        config = super().get_config()
        config["size"] = self.size
        return config


@keras.saving.register_keras_serializable(package="flownet2s")
class ConstantScale(layers.Layer):
    """x * factor (keras.layers.Rescaling is a preprocessing layer that needs TensorFlow)."""

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = float(factor)

    def call(self, x):
        return x * self.factor

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["factor"] = self.factor
        return config


def _conv(x, name, filters, kernel, stride=1, activation=True):
    """Explicit symmetric padding (k-1)/2, then a VALID convolution (+ LeakyReLU 0.1)."""
    pad = (kernel - 1) // 2
    x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    x = layers.Conv2D(filters, kernel, strides=stride, padding="valid", name=name)(x)
    if activation:
        x = layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=f"{name}_relu")(x)
    return x


def _deconv(x, name, filters, size, activation=True):
    """4x4 stride-2 transposed conv, no bias (flownet2-tf/DVSNet), cropped to `size`."""
    x = layers.Conv2DTranspose(filters, 4, strides=2, padding="valid", use_bias=False, name=name)(x)
    x = CropTo(size, name=f"{name}_crop")(x)
    if activation:
        x = layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=f"{name}_relu")(x)
    return x


def _hw(tensor):
    return int(tensor.shape[1]), int(tensor.shape[2])


def input_hw(input_size):
    if isinstance(input_size, (list, tuple)):
        return int(input_size[0]), int(input_size[1])
    return int(input_size), int(input_size)


# Kept whole: the FlowNetS layer list, in the network's order.
def build_flownet(width=FLOWNET2_S_WIDTH, feature_channels=256, input_size=512, scale_head="dff",
                  normalization=DEFAULT_NORMALIZATION, multiscale=False):
    """FlowNet2-s (width 0.375) / FlowNet2-S (1.0) with a scale-field head (§3.1, DFF).

    Args:
      width: channel multiplier of FlowNet2-S.
      feature_channels: channels C of the scale field (the warped features' channels).
      input_size: s or (h, w) of both frames; multiples of 64 (other sizes work through the
        deconvolutions' parity crops, as at 513 in flownet_dff.md).
      scale_head: "dff" (1x1 conv on concat2 -> C) or "dvsnet" (`predict_scale`, 3x3 on
        concat2 -> C). Both start at weights 0, bias 1 (scale field = 1).
      normalization: a key of NORMALIZATIONS.
      multiscale: also return `predict_flow6` .. `predict_flow2` (raw, i.e. flow / 20 in input
        pixels, at strides 64 .. 4) for FlowNet's multi-scale loss (flownet2s.pretrain). Adds
        outputs only: the layers and the weights layout are the same as without it.

    Returns a Keras model on [key_frame, current_frame] (B, h, w, 3) RGB in [0, 255] returning
    dict `flow` (B, h/4, w/4, 2) in input pixels (x, y), `scale` (B, h/4, w/4, C), `conv6`,
    `conv6_1` (after their LeakyReLU). The build arguments are in `model.flownet_args`.
    """
    if scale_head not in SCALE_HEADS:
        raise ConfigError(f"--scale_head: {scale_head!r} not in {list(SCALE_HEADS)}")
    if not width > 0:
        raise ConfigError(f"--width={width}: must be positive")
    height, width_px = input_hw(input_size)
    key_frame = keras.Input((height, width_px, 3), name="key_frame")
    current_frame = keras.Input((height, width_px, 3), name="current_frame")
    x = PairNormalization(normalization, name="pair_normalization")([key_frame, current_frame])

    taps = {}
    for name, kernel, stride, channels in ENCODER:
        x = _conv(x, name, scaled(channels, width), kernel, stride)
        taps[name] = x

    # Refinement (flownet_dff.md "Refinement"): deconv and upsampled flow meet the skip.
    flow = _conv(taps["conv6_1"], "predict_flow6", 2, 3, activation=False)
    predictions = {"predict_flow6": flow}
    concat = taps["conv6_1"]
    for level, skip, channels in DECODER:
        size = _hw(taps[skip])
        deconv = _deconv(concat, f"deconv{level}", scaled(channels, width), size)
        upsampled = _deconv(flow, f"upsample_flow{level + 1}to{level}", 2, size, activation=False)
        concat = layers.Concatenate(name=f"concat{level}")([taps[skip], deconv, upsampled])
        flow = _conv(concat, f"predict_flow{level}", 2, 3, activation=False)
        predictions[f"predict_flow{level}"] = flow
    flow = ConstantScale(FLOW_SCALE, name="flow")(flow)

    # Scale field S (DFF §3.1 / DVSNet predict_scale): linear, starts as the identity.
    init = dict(kernel_initializer="zeros", bias_initializer="ones")
    if scale_head == "dvsnet":
        padded = layers.ZeroPadding2D(1, name="predict_scale_pad")(concat)
        scale = layers.Conv2D(feature_channels, 3, padding="valid", name="predict_scale", **init)(padded)
    else:
        scale = layers.Conv2D(feature_channels, 1, name="scale_conv", **init)(concat)

    outputs = {"flow": flow, "scale": scale, "conv6": taps["conv6"], "conv6_1": taps["conv6_1"]}
    if multiscale:
        outputs.update(predictions)
    model = keras.Model([key_frame, current_frame], outputs, name="flownet2s")
    args = dict(width=float(width), feature_channels=int(feature_channels),
                input_size=input_size if isinstance(input_size, int) else [height, width_px],
                scale_head=scale_head, normalization=normalization)
    if multiscale:  # recorded only when set, so stage configs written from flownet_args keep their keys
        args["multiscale"] = True
    object.__setattr__(model, "flownet_args", args)
    return model


def scale_head_layer_names(model):
    """Names of the scale-field head's layers (not part of FlowNet2-S proper)."""
    return [layer.name for layer in model.layers if layer.name in ("predict_scale", "scale_conv")]


def count_flow_parameters(model):
    """Parameters of FlowNetS proper: everything but the scale-field head."""
    skip = set(scale_head_layer_names(model))
    return sum(int(np.prod(w.shape)) for layer in model.layers if layer.name not in skip
               for w in layer.weights)


def resized_flownet(flow_net, input_size):
    """The same network (same weights) built for another input size (weights are size-free)."""
    args = dict(flow_net.flownet_args, input_size=input_size)
    if input_hw(args["input_size"]) == input_hw(flow_net.flownet_args["input_size"]):
        return flow_net
    model = build_flownet(**args)
    model.set_weights(flow_net.get_weights())
    return model


def copy_flow_weights(source, target, what="flow net"):
    """Copies FlowNetS proper (every layer but the scale-field head) from `source` to `target` by
    layer name; weights are size-free, so the input sizes may differ. The scale heads are left as
    they are: their channels follow the segmenter's features, and pretraining on flow (which has no
    features to scale) leaves them at their identity start anyway."""
    skip = set(scale_head_layer_names(source)) | set(scale_head_layer_names(target))
    for layer in target.layers:
        if layer.name in skip or not layer.weights:
            continue
        try:
            weights = source.get_layer(layer.name).get_weights()
            layer.set_weights(weights)
        except ValueError as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(f"{what}: layer {layer.name} does not fit ({first})") from None
    return target


def load_flownet(stage_dir):
    """Flow net built from `<stage_dir>/config.json` with `<stage_dir>/final.weights.h5`."""
    config = read_stage_config(stage_dir, "flow stage")
    known = ("width", "feature_channels", "input_size", "scale_head", "normalization")
    model = build_flownet(**{k: config[k] for k in known if k in config})
    # The propagation options F was fine-tuned with: DeepFeatureFlow's defaults for this net.
    object.__setattr__(model, "dff_options", {k: config[k] for k in ("flow_resolution", "border")
                                              if k in config})
    return load_stage_weights(model, stage_dir)
