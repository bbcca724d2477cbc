"""DVSNet's segmentation network "DeepLab-Fast" (Xu et al. CVPR 2018; reference/dvsnet.md).

DeepLab-v2 ResNet-101 in the Caffe layout (DrSleep/tensorflow-deeplab-resnet, DVSNet's
`model/deeplabmodel.py`) with block 4 at stride 2, i.e. output stride 16. It is the segmentation
net N of the Cityscapes runs, which use DVSNet's released weights (`dvsnet_checkpoint.py`).

Layout (every conv, pool and atrous conv SAME; strides live in the 1x1 convs, as in Caffe):
- stem: `conv1` 7x7 s2 64 -> `bn_conv1` + ReLU -> `pool1` 3x3 s2 max;
- bottleneck units `res<u>_branch2a` 1x1 (carries the unit's stride) -> `branch2b` 3x3 (atrous)
  -> `branch2c` 1x1, each followed by `bn<u>_branch2x` (ReLU after 2a and 2b only); the first unit
  of a stage has a projection shortcut `res<u>_branch1` + `bn<u>_branch1`; ReLU after the sum;
- res2 a..c (64 -> 256), res3 a, b1..b3 (128 -> 512, stride 2), res4 a, b1..b22 (256 -> 1024,
  stride 2; 3x3 rates 1 then 4, 2, 2 repeating), res5 a..c (512 -> 2048; rates 4, 8, 16);
- head: `fc1_voc12_c0..c2` (3x3 256 with bias, rates 6/12/18) and `fc1_voc12_c3` (1x1 256 with
  bias), each -> `<name>_bn` (no activation), summed; `fc_oooo` 1x1 256 -> `fc_oooo_bn`
  (no activation) -> `fc_out` 1x1 C logits (no bias, as in deeplabmodel.py).
BatchNorm is slim's (`scale=True`, decay 0.999, epsilon 1e-3); only the head convs have biases.

Keras layers carry DVSNet's variable scopes as their names (none contains '/'), so the checkpoint
map is mechanical: `<layer>/weights`, `<layer>/biases`, `<bn layer>/{gamma,beta,moving_mean,
moving_variance}`. Ops without variables get names that no DVSNet variable uses (`res2a` = the sum,
`res2a_relu`, `bn2a_branch2a_relu`, ...).

Input: RGB frames in [0, 255] (project convention), turned inside into DVSNet's input: BGR minus
`IMG_MEAN`, not scaled. (DVSNet's inference.py defines this IMG_MEAN but its image reader falls back
to its own default (103.939, 116.779, 123.68); `image_mean_bgr` selects either.)

Split (§3.1 / DVSNet): feature_net = frames -> `fc_out` logits at 1/16 (what DVSNet warps);
task_net = bilinear upsample to the crop + softmax. The upsample is align-corners (the project's
DeepLab convention, `layers.resize_align_corners`); DVSNet's tf.image.resize_bilinear is the TF1
legacy (align_corners=False) mapping, which shifts the upsampled logits by under one stride-16 cell.
"""
import keras
import numpy as np
from keras import layers, ops

from deeplab_face.errors import ConfigError
from deeplab_face.models.layers import BilinearResize, crop_hw

# DVSNet inference.py IMG_MEAN, BGR order (dvsnet.md "Input").
DVSNET_IMG_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
DVSNET_REGION_SIZE = (576, 1088)  # one quadrant grown by the 64-px overlap (dvsnet.md "Regions")
DVSNET_NUM_CLASSES = 19  # Cityscapes train ids
OUTPUT_STRIDE = 16  # fixed by the architecture (block 4 at stride 2)
BN_DECAY = 0.999  # slim.batch_norm defaults (network.py calls it with no decay/epsilon)
BN_EPSILON = 1e-3
HEAD_DEPTH = 256
HEAD_RATES = (6, 12, 18)  # fc1_voc12_c0..c2; c3 is 1x1
RES4_RATE_CYCLE = (4, 2, 2)  # res4b1, b2, b3, b4, ... (b22 -> 4)
SPLITS = ("logits", "decoder")  # both mean "after fc_out" (no decoder in DeepLab-Fast)


def _stage(prefix, suffixes, depth, out_depth, stride, rates):
    """Units of one stage: (unit name, depth, out depth, stride, 3x3 rate, has projection)."""
    return tuple((f"{prefix}{suffix}", depth, out_depth, stride if i == 0 else 1, rate, i == 0)
                 for i, (suffix, rate) in enumerate(zip(suffixes, rates)))


# The 33 bottleneck units of ResNet-101 as DeepLab-Fast lays them out.
RESNET101_UNITS = (
    _stage("2", ("a", "b", "c"), 64, 256, 1, (1, 1, 1))
    + _stage("3", ("a", "b1", "b2", "b3"), 128, 512, 2, (1, 1, 1, 1))
    + _stage("4", ("a",) + tuple(f"b{i}" for i in range(1, 23)), 256, 1024, 2,
             (1,) + tuple(RES4_RATE_CYCLE[(i - 1) % 3] for i in range(1, 23)))
    + _stage("5", ("a", "b", "c"), 512, 2048, 1, (4, 8, 16))
)


@keras.saving.register_keras_serializable(package="deeplab_face")
class RgbToCaffeBgr(layers.Layer):
    """RGB in [0, 255] -> BGR minus a per-channel mean (Caffe / DVSNet preprocessing)."""

    def __init__(self, mean_bgr=DVSNET_IMG_MEAN_BGR, **kwargs):
        super().__init__(**kwargs)
        self.mean_bgr = tuple(float(m) for m in mean_bgr)

    def call(self, frames):
        mean = ops.convert_to_tensor(np.asarray(self.mean_bgr, "float32"), dtype=frames.dtype)
        return ops.flip(frames, axis=-1) - mean

    def get_config(self):
        return {**super().get_config(), "mean_bgr": list(self.mean_bgr)}


def _conv(x, filters, kernel_size, name, stride=1, rate=1, use_bias=False):
    # SAME padding everywhere, as network.py's conv / atrous_conv (tf.nn.atrous_conv2d SAME).
    return layers.Conv2D(filters, kernel_size, strides=stride, dilation_rate=rate, padding="same",
                         use_bias=use_bias, kernel_initializer="he_normal", name=name)(x)


def _batch_norm(x, name, relu):
    x = layers.BatchNormalization(momentum=BN_DECAY, epsilon=BN_EPSILON, name=name)(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _bottleneck(x, unit, depth, out_depth, stride, rate, projection):
    """Caffe ResNet unit `res<unit>`: stride on the first 1x1 (branch2a) and on branch1."""
    if projection:
        shortcut = _conv(x, out_depth, 1, f"res{unit}_branch1", stride=stride)
        shortcut = _batch_norm(shortcut, f"bn{unit}_branch1", relu=False)
    else:
        shortcut = x
    y = _conv(x, depth, 1, f"res{unit}_branch2a", stride=stride)
    y = _batch_norm(y, f"bn{unit}_branch2a", relu=True)
    y = _conv(y, depth, 3, f"res{unit}_branch2b", rate=rate)
    y = _batch_norm(y, f"bn{unit}_branch2b", relu=True)
    y = _conv(y, out_depth, 1, f"res{unit}_branch2c")
    y = _batch_norm(y, f"bn{unit}_branch2c", relu=False)
    x = layers.Add(name=f"res{unit}")([shortcut, y])
    return layers.ReLU(name=f"res{unit}_relu")(x)


def _head(x, num_classes):
    """fc1_voc12 (four biased branches, BN without activation, summed) -> fc_oooo -> fc_out."""
    branches = []
    for i, rate in enumerate(HEAD_RATES):
        b = _conv(x, HEAD_DEPTH, 3, f"fc1_voc12_c{i}", rate=rate, use_bias=True)
        branches.append(_batch_norm(b, f"fc1_voc12_c{i}_bn", relu=False))
    b = _conv(x, HEAD_DEPTH, 1, f"fc1_voc12_c{len(HEAD_RATES)}", use_bias=True)
    branches.append(_batch_norm(b, f"fc1_voc12_c{len(HEAD_RATES)}_bn", relu=False))
    x = layers.Add(name="fc1_voc12")(branches)
    x = _conv(x, HEAD_DEPTH, 1, "fc_oooo")
    x = _batch_norm(x, "fc_oooo_bn", relu=False)
    return layers.Conv2D(num_classes, 1, use_bias=False, name="fc_out",
                         kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))(x)


def _check_args(output_stride, split):
    if output_stride not in (OUTPUT_STRIDE, None):
        raise ConfigError(f"--output_stride={output_stride}: DeepLab-Fast has a fixed output "
                          f"stride {OUTPUT_STRIDE}")
    if split not in SPLITS:
        raise ConfigError(f"--split={split}: DeepLab-Fast supports only {SPLITS} "
                          "(both split after fc_out)")


def logits_grid(crop_size):
    """(h, w) of the fc_out map: four SAME stride-2 steps give ceil(n / 16) (65 -> 5, 576 -> 36)."""
    height, width = crop_hw(crop_size)
    return -(-height // OUTPUT_STRIDE), -(-width // OUTPUT_STRIDE)


def build_deeplab_fast(num_classes=DVSNET_NUM_CLASSES, crop_size=DVSNET_REGION_SIZE,
                       output_stride=OUTPUT_STRIDE, split="logits",
                       image_mean_bgr=DVSNET_IMG_MEAN_BGR):
    """DeepLab-Fast -> (feature_net, task_net), the `backbones.Backbone.build` signature.

    Args:
      num_classes: logits channels (19 for DVSNet's Cityscapes weights).
      crop_size: S or (h, w) of the frames; any size (DVSNet: 576x1088 regions).
      output_stride: must be 16 (or None).
      split: "logits" (or "decoder", the project default, meaning the same here).
      image_mean_bgr: the BGR mean subtracted inside.
    Returns:
      feature_net: frames (B, h, w, 3) RGB in [0, 255] -> fc_out logits
        (B, ceil(h/16), ceil(w/16), C).
      task_net: logits -> align-corners upsample to (h, w) -> softmax (last layer).
    """
    _check_args(output_stride, split)
    height, width = crop_hw(crop_size)
    frames = keras.Input((height, width, 3), name="frames")
    x = RgbToCaffeBgr(image_mean_bgr, name="rgb_to_caffe_bgr")(frames)
    x = _conv(x, 64, 7, "conv1", stride=2)
    x = _batch_norm(x, "bn_conv1", relu=True)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    for unit in RESNET101_UNITS:
        x = _bottleneck(x, *unit)
    logits = _head(x, num_classes)
    feature_net = keras.Model(frames, logits, name="feature_net")

    features = keras.Input(tuple(logits.shape[1:]), name="features")
    upsampled = BilinearResize((height, width), name="upsample_logits")(features)
    probabilities = layers.Softmax(axis=-1, name="probabilities")(upsampled)
    task_net = keras.Model(features, probabilities, name="task_net")
    return feature_net, task_net


def build_deeplab_fast_model(num_classes=DVSNET_NUM_CLASSES, crop_size=DVSNET_REGION_SIZE,
                             output_stride=OUTPUT_STRIDE, split="logits",
                             image_mean_bgr=DVSNET_IMG_MEAN_BGR, with_logits=False):
    """The composed N = task_net . feature_net (frames -> softmax at crop size), standalone.

    With DVSNet's mean and `with_logits=False` it is the `segmenter.Segmenter` of backbone
    "deeplab_fast_resnet101" (what `build_segmenter` builds: `feature_net`, `task_net`,
    `logits_model`, get_config). Otherwise a functional model whose layers "feature_net" and
    "task_net" are the two sub-models; `with_logits=True` returns a dict {"probabilities",
    "logits" (fc_out)} instead of the probabilities (same weights, same weight-file layout).
    """
    if not with_logits and tuple(map(float, image_mean_bgr)) == DVSNET_IMG_MEAN_BGR:
        from deeplab_face.models.segmenter import Segmenter  # segmenter imports this module

        _check_args(output_stride, split)
        return Segmenter("deeplab_fast_resnet101", num_classes, crop_size, OUTPUT_STRIDE, split)
    feature_net, task_net = build_deeplab_fast(num_classes, crop_size, output_stride, split,
                                               image_mean_bgr)
    frames = keras.Input(feature_net.input.shape[1:], name="frames")
    logits = feature_net(frames)
    probabilities = task_net(logits)
    outputs = dict(probabilities=probabilities, logits=logits) if with_logits else probabilities
    return keras.Model(frames, outputs, name="deeplab_fast")
