"""The segmentation network N = task_net . feature_net (§3.1) and its stage loader.

`build_segmenter` returns a Keras model: frames (B, S, S, 3) in [0, 255] -> softmax
probabilities (B, S, S, C). It carries, as plain (untracked) attributes:
- `feature_net`, `task_net`: Keras models with task_net(feature_net(x)) == model(x);
- `logits_model`: frames -> upsampled logits at crop size (the task_net's softmax input),
  sharing the same weights, for training with a from-logits cross-entropy;
- `segmenter_args`: the build arguments (what `config.json` holds); for the DeepLab-V3+
  backbones they include the resolved head options (deeplab_v3plus.HEAD_DEFAULTS), so a stage
  or checkpoint reloads into the same function. A config without them is today's head.
"""
import os

import keras

from deeplab_face.stage import load_stage_weights, read_stage_config
from deeplab_face.errors import CheckpointError, ConfigError
from deeplab_face.models.backbones import BACKBONE_NAMES, BACKBONES, DEEPLAB_V3PLUS
from deeplab_face.models.deeplab_v3plus import HEAD_DEFAULTS, HEAD_OPTIONS, SPLITS, resolve_head
from deeplab_face.models.layers import crop_hw


def _untracked(model, name, value):
    # Plain attributes: Keras must not track these as extra sublayers (weights would be
    # listed twice and save_weights paths would change).
    object.__setattr__(model, name, value)


def _logits_net(task_net):
    """task_net up to its final softmax's input (upsampled logits), same weights."""
    last = task_net.layers[-1]
    if not isinstance(last, keras.layers.Softmax):
        raise ConfigError(f"task_net {task_net.name!r} must end with a Softmax layer")
    return keras.Model(task_net.inputs, last.input, name="task_logits_net")


def build_segmenter(backbone, num_classes, crop_size, output_stride=16, split="decoder", **head):
    """Build N for `backbone` (see BACKBONE_NAMES); `split` is "decoder" or "logits" (§3.1).

    `head`: TF DeepLab common.py head options for the DeepLab-V3+ backbones (atrous_rates,
    decoder_output_stride, multi_grid, aspp_with_batch_norm, aspp_with_separable_conv,
    decoder_use_separable_conv; deeplab_v3plus.py). The other models have a fixed head and
    accept only the defaults.
    """
    if backbone not in BACKBONES:
        raise ConfigError(f"--backbone: unknown backbone {backbone!r}; "
                          f"choose from {list(BACKBONE_NAMES)}")
    if split not in SPLITS:
        raise ConfigError(f"--split: {split!r} not in {list(SPLITS)}")
    height, width = crop_hw(crop_size)
    if backbone in DEEPLAB_V3PLUS:
        head = resolve_head(backbone, output_stride, **head)
    else:
        changed = sorted(k for k, v in head.items() if HEAD_DEFAULTS.get(k, object()) != v)
        if changed:
            raise ConfigError(f"--{changed[0]}: {backbone} has a fixed head; head options "
                              f"apply to {sorted(DEEPLAB_V3PLUS)} only")
        head = {}
    feature_net, task_net = BACKBONES[backbone].build(num_classes, crop_size, output_stride, split,
                                                      **head)
    frames = keras.Input(shape=(height, width, 3), name="frames")
    features = feature_net(frames)
    model = keras.Model(frames, task_net(features), name=f"segmenter_{backbone}")
    logits_model = keras.Model(frames, _logits_net(task_net)(features), name="logits_model")
    _untracked(model, "feature_net", feature_net)
    _untracked(model, "task_net", task_net)
    _untracked(model, "logits_model", logits_model)
    _untracked(model, "segmenter_args", dict(
        backbone=backbone, num_classes=int(num_classes),
        crop_size=crop_size if isinstance(crop_size, int) else [height, width],
        output_stride=int(output_stride), split=split, **head))
    return model


def load_segmenter(stage_dir):
    """Model built from `<stage_dir>/config.json` with `<stage_dir>/final.weights.h5`.

    config.json holds build_segmenter's arguments (extra keys, e.g. training
    hyper-parameters, are ignored; absent head options are today's defaults).
    """
    config = read_stage_config(stage_dir, "segmentation stage")
    config_path = os.path.join(stage_dir, "config.json")
    try:
        args = dict(backbone=config["backbone"], num_classes=config["num_classes"],
                    crop_size=config["crop_size"])
    except KeyError as e:
        raise CheckpointError(f"{config_path}: missing key {e}") from None
    for key in ("output_stride", "split") + HEAD_OPTIONS:
        if key in config:
            args[key] = config[key]
    return load_stage_weights(build_segmenter(**args), stage_dir)
