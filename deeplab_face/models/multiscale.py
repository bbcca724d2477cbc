"""Multi-scale (and flipped) evaluation, §4.2 / Table 1: softmax averaged over scales.

As TF DeepLab's predict_labels_multi_scale: per scale s the input is resized
(align corners) to scale_dimension(S, s); its logits are resized to the image size,
softmax is applied, and the probabilities of all scales (and mirrored inputs) are
averaged. The paper's rows use scales (1.0,) and (1.25, 1.75).

`model_fn(images) -> logits` must accept every scaled size. A Keras model built for one
crop size does not, so `ScaledLogits(model)` gives such a callable: it builds the same
architecture once per input size (build_segmenter with crop_size = that size, from
`model.segmenter_args`), copies the weights into it, and caches it. Call `.sync()`
after the source model's weights change.
"""
import keras
from keras import layers, ops

from deeplab_face.models.layers import resize_align_corners, scale_dimension

PAPER_SCALES = (1.25, 1.75)  # §4.2 multi-scale rows of Table 1
PAPER_SCALE_SETS = ((1.0,), PAPER_SCALES)  # §4.2 / Table 1: single scale, then 1.25 + 1.75


def _logits_before_upsampling(model):
    """Logits net of a segmenter: the stride-4 logits when its task_net names its final
    upsample `upsample_logits` (TF DeepLab resizes those), else the softmax's input."""
    task_net = model.task_net
    names = [layer.name for layer in task_net.layers]
    if "upsample_logits" in names:
        logits = task_net.get_layer("upsample_logits").input
    else:
        last = task_net.layers[-1]
        if not isinstance(last, layers.Softmax):
            raise ValueError(f"task_net {task_net.name!r} must end with a Softmax layer")
        logits = last.input
    task_logits = keras.Model(task_net.inputs, logits)
    frames = keras.Input(tuple(model.input.shape[1:]))
    return keras.Model(frames, task_logits(model.feature_net(frames)))


class ScaledLogits:
    """callable(images (B, h, w, 3) in [0, 255]) -> logits, for any h, w (models cached per size)."""

    def __init__(self, model):
        self.model = model
        self._nets = {}

    def _net(self, height, width):
        key = (height, width)
        if key not in self._nets:
            if tuple(self.model.input.shape[1:3]) == key:
                self._nets[key] = (self.model, _logits_before_upsampling(self.model))
            else:
                from deeplab_face.models.segmenter import build_segmenter
                args = dict(self.model.segmenter_args, crop_size=[height, width])
                copy = build_segmenter(**args)
                copy.set_weights(self.model.get_weights())
                self._nets[key] = (copy, _logits_before_upsampling(copy))
        return self._nets[key][1]

    def sync(self):
        """Copy the source model's current weights into every cached copy."""
        weights = self.model.get_weights()
        for copy, _ in self._nets.values():
            if copy is not self.model:
                copy.set_weights(weights)

    def __call__(self, images):
        return self._net(int(images.shape[1]), int(images.shape[2]))(images, training=False)


def _flip_width(x):
    return ops.flip(x, axis=2)


def predict_multiscale(model_fn, images, scales=(1.0,), flip=False):
    """Average softmax probabilities over `scales` (and mirrored inputs when `flip`).

    Args:
      model_fn: callable(images (B, h, w, 3)) -> logits (B, h', w', C) at any resolution;
        e.g. `ScaledLogits(segmenter)`.
      images: (B, H, W, 3) float in [0, 255].
      scales: input scale factors; each scaled size is scale_dimension(H, s).
      flip: also run the horizontally mirrored input and mirror its logits back.
    Returns:
      probabilities (B, H, W, C), a backend tensor.
    """
    images = ops.convert_to_tensor(images, dtype="float32")
    height, width = int(images.shape[1]), int(images.shape[2])
    total, count = None, 0
    for scale in scales:
        size = (scale_dimension(height, scale), scale_dimension(width, scale))
        scaled = resize_align_corners(images, size)
        runs = [(scaled, False)] + ([(_flip_width(scaled), True)] if flip else [])
        for inputs, mirrored in runs:
            logits = ops.convert_to_tensor(model_fn(inputs), dtype="float32")
            if mirrored:
                logits = _flip_width(logits)
            probs = ops.softmax(resize_align_corners(logits, (height, width)), axis=-1)
            total = probs if total is None else total + probs
            count += 1
    if count == 0:
        raise ValueError("predict_multiscale needs at least one scale")
    return total / count
