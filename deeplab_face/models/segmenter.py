"""The segmentation network N = task_net . feature_net (§3.1) and its stage loader.

`Segmenter` (what `build_segmenter` returns) is a Keras model in keras-hub's Backbone + Task
style: its functional graph is built in `__init__` from its arguments, and frames (B, S, S, 3) in
[0, 255] -> softmax probabilities (B, S, S, C). It exposes
- `feature_net`, `task_net`: its two layers (Keras models), task_net(feature_net(x)) == model(x);
- `logits_model`: frames -> upsampled logits at crop size (the task_net's softmax input),
  sharing the same weights, for training with a from-logits cross-entropy;
- `segmenter_args`: the build arguments (what `config.json` holds); for the DeepLab-V3+
  backbones they include the resolved head options (deeplab_v3plus.HEAD_DEFAULTS), so a stage
  or checkpoint reloads into the same function. A config without them is today's head.
`get_config()` is `segmenter_args` plus the Keras name and `trainable`; `from_config` rebuilds it.

Weight files keep the layout of the functional model this class replaced (the h5 paths are
`layers/functional` (feature_net), `layers/functional_1` (task_net) and an empty `logits_model`
group), so stage weights and training checkpoints written before it still load.
"""
import copy
import os

import keras

from deeplab_face.stage import load_stage_weights, read_stage_config
from deeplab_face.errors import CheckpointError, ConfigError
from deeplab_face.models.backbones import BACKBONE_NAMES, BACKBONES, DEEPLAB_V3PLUS
from deeplab_face.models.deeplab_v3plus import HEAD_DEFAULTS, HEAD_OPTIONS, SPLITS, resolve_head
from deeplab_face.models.layers import crop_hw


def _logits_net(task_net):
    """task_net up to its final softmax's input (upsampled logits), same weights."""
    last = task_net.layers[-1]
    if not isinstance(last, keras.layers.Softmax):
        raise ConfigError(f"task_net {task_net.name!r} must end with a Softmax layer")
    return keras.Model(task_net.inputs, last.input, name="task_logits_net")


def segmenter_args(backbone, num_classes, crop_size, output_stride=16, split="decoder", **head):
    """The checked, resolved build arguments of N (Segmenter's config, config.json's keys).

    Raises ConfigError for an unknown backbone or split, or head options on a fixed head.
    """
    if backbone not in BACKBONES:
        raise ConfigError(f"--backbone: unknown backbone {backbone!r}; "
                          f"choose from {list(BACKBONE_NAMES)}")
    if split not in SPLITS:
        raise ConfigError(f"--split: {split!r} not in {list(SPLITS)}")
    if backbone in DEEPLAB_V3PLUS:
        head = resolve_head(backbone, output_stride, **head)
    else:
        changed = sorted(k for k, v in head.items() if HEAD_DEFAULTS.get(k, object()) != v)
        if changed:
            raise ConfigError(f"--{changed[0]}: {backbone} has a fixed head; head options "
                              f"apply to {sorted(DEEPLAB_V3PLUS)} only")
        head = {}
    height, width = crop_hw(crop_size)
    return dict(backbone=backbone, num_classes=int(num_classes),
                crop_size=crop_size if isinstance(crop_size, int) else [height, width],
                output_stride=int(output_stride), split=split, **head)


@keras.saving.register_keras_serializable(package="deeplab_face")
class Segmenter(keras.Model):
    """N = task_net . feature_net for `backbone` (see BACKBONE_NAMES); module docstring.

    Args:
      backbone: a BACKBONE_NAMES entry.
      num_classes: C, the output channels.
      crop_size: S or (h, w) of the frames.
      output_stride: the feature stride (16 or 8 for DeepLab-V3+; fixed for the others).
      split: "decoder" or "logits" (§3.1), where feature_net ends.
      name: the Keras name (default `segmenter_<backbone>`).
      **head: TF DeepLab common.py head options for the DeepLab-V3+ backbones (atrous_rates,
        decoder_output_stride, multi_grid, aspp_with_batch_norm, aspp_with_separable_conv,
        decoder_use_separable_conv; deeplab_v3plus.py); the other networks have a fixed head
        and accept only the defaults.
      trainable: keras.Model's.
    """

    def __init__(self, backbone, num_classes, crop_size, output_stride=16, split="decoder",
                 name=None, trainable=True, **head):
        args = segmenter_args(backbone, num_classes, crop_size, output_stride, split, **head)
        resolved = {k: args[k] for k in HEAD_OPTIONS if k in args}
        feature_net, task_net = BACKBONES[backbone].build(
            args["num_classes"], crop_size, args["output_stride"], split, **resolved)
        height, width = crop_hw(crop_size)
        frames = keras.Input(shape=(height, width, 3), name="frames")
        features = feature_net(frames)
        super().__init__(frames, task_net(features), name=name or f"segmenter_{backbone}",
                         trainable=trainable)
        logits_model = keras.Model(frames, _logits_net(task_net)(features), name="logits_model")
        # Plain references, not tracked: logits_model shares task_net's weights, and tracking
        # it would list them twice and change the save_weights / checkpoint layout.
        for key, value in (("_args", args), ("_feature_net", feature_net),
                           ("_task_net", task_net), ("_logits_model", logits_model)):
            object.__setattr__(self, key, value)

    @property
    def feature_net(self):
        """frames -> features (the first sub-model, a layer of this model)."""
        return self._feature_net

    @property
    def task_net(self):
        """features -> softmax probabilities at crop size (the second sub-model)."""
        return self._task_net

    @property
    def logits_model(self):
        """frames -> upsampled logits (task_net's softmax input), same weights."""
        return self._logits_model

    @property
    def segmenter_args(self):
        """The resolved build arguments (a copy): what config.json holds."""
        return copy.deepcopy(self._args)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, **self.segmenter_args}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_segmenter(backbone, num_classes, crop_size, output_stride=16, split="decoder", **head):
    """Segmenter(backbone, num_classes, crop_size, output_stride, split, **head) (its docstring)."""
    return Segmenter(backbone, num_classes, crop_size, output_stride, split, **head)


def load_segmenter(stage_dir):
    """Segmenter built from `<stage_dir>/config.json` with `<stage_dir>/final.weights.h5`.

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
