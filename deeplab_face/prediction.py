"""N's predictions and their scores, shared by the commands (deeplab_face.evaluate, deeplab_face.train's
validation, bench.segmentation, eval.real_face): the compiled multi-scale predictor, the dataset-level
confusion matrix and mIoU over prepared videos, the batch-1 FPS measure (deeplab_face.evaluate's module
doc says how), and the `--scale_sets` syntax.
"""
import time

import numpy as np
import tensorflow as tf

from deeplab_face.backend import compile_fn
from deeplab_face.data import tfrecords
from deeplab_face.errors import ConfigError
from deeplab_face.segmentation_metrics import confusion_matrix, mean_iou

FPS_WARMUP = 3
FPS_RUNS = 20


def read_manifest(prepared_dir):
    """(size S, {video_id: {"frames", "file"}}) of a prepared-data directory (DataError if bad)."""
    manifest = tfrecords.read_manifest(prepared_dir)
    return int(manifest["size"]), {str(k): v for k, v in manifest["videos"].items()}


def make_predictor(model, scales, flip, out_size, logits_fn=None):
    """Compiled frames (B, S, S, 3) float [0, 255] -> class ids (B, h, w) at `out_size`.

    logits_fn: a `ScaledLogits(model)` to share its per-size networks between predictors.
    """
    from deeplab_face.models.layers import resize_align_corners, scale_dimension
    from deeplab_face.models.multiscale import ScaledLogits, predict_multiscale
    logits_fn = logits_fn or ScaledLogits(model)
    crop = tuple(int(d) for d in model.input.shape[1:3])
    for scale in scales:  # build each scale's network eagerly, before tracing
        size = [scale_dimension(d, scale) for d in crop]
        logits_fn(np.zeros((1, *size, 3), np.float32))

    def predict(images):
        probs = predict_multiscale(logits_fn, images, scales=scales, flip=flip)
        if tuple(out_size) != crop:
            probs = resize_align_corners(probs, out_size)
        return tf.argmax(probs, axis=-1, output_type=tf.int32)

    return compile_fn(predict)  # batch sizes vary (last batch, FPS)


def model_fps(predict, frame, warmup=FPS_WARMUP, runs=FPS_RUNS):
    """Frames per second of `predict` on one frame (batch 1): median of `runs` timed calls."""
    frame = tf.convert_to_tensor(frame[None] if frame.ndim == 3 else frame[:1])
    for _ in range(warmup):
        predict(frame).numpy()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        predict(frame).numpy()  # .numpy() waits for the result
        times.append(time.perf_counter() - start)
    return 1.0 / float(np.median(times))


def dataset_miou(predict, prepared_dir, video_ids, crop_size, num_classes, batch_size=4,
                 max_frames=None, progbar=None):
    """mIoU (%) from one confusion matrix over the frames of `video_ids` (max_frames per video); NaN
    when no labelled pixel was seen. A corrupt TFRecord is a DataError naming it."""
    confusion, frames_done, size = dataset_confusion(predict, prepared_dir, video_ids, crop_size, num_classes,
                                                     batch_size, max_frames, progbar)
    return 100.0 * mean_iou(confusion), frames_done, size


def dataset_confusion(predict, prepared_dir, video_ids, crop_size, num_classes, batch_size=4,
                      max_frames=None, progbar=None):
    """(confusion matrix over the frames of `video_ids`, frames, prepared size S): `dataset_miou`'s
    matrix, for per-class IoU (`segmentation_metrics.class_iou`)."""
    from deeplab_face.data.pipelines import checked_batches, video_frames
    size, _ = read_manifest(prepared_dir)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    frames_done = 0
    for video_id in video_ids:
        ds = video_frames(prepared_dir, video_id)
        if max_frames:
            ds = ds.take(max_frames)
        for batch in checked_batches(ds.batch(batch_size), prepared_dir, [video_id]):
            images = tf.cast(batch["image"], tf.float32)
            if size != crop_size:
                images = tf.image.resize(images, (crop_size, crop_size), method="bilinear")
            confusion += confusion_matrix(predict(images).numpy(), batch["label"].numpy(),
                                          num_classes)
            frames_done += int(images.shape[0])
            if progbar is not None:
                progbar.add(int(images.shape[0]))
    return confusion, frames_done, size


def first_frame(prepared_dir, video_id, crop_size):
    from deeplab_face.data.pipelines import checked_batches, video_frames
    frame = next(checked_batches(video_frames(prepared_dir, video_id).take(1), prepared_dir, [video_id]))["image"]
    frame = tf.cast(frame, tf.float32)
    if int(frame.shape[0]) != crop_size:
        frame = tf.image.resize(frame, (crop_size, crop_size), method="bilinear")
    return frame.numpy()


def parse_scale_sets(text):
    """'1.0;1.25,1.75' -> ((1.0,), (1.25, 1.75))."""
    try:
        sets = tuple(tuple(float(s) for s in part.split(",")) for part in text.split(";") if part)
    except ValueError:
        raise ConfigError(f"--scale_sets={text!r}: expected e.g. '1.0;1.25,1.75'") from None
    if not sets or any(s <= 0 for scales in sets for s in scales):
        raise ConfigError(f"--scale_sets={text!r}: expected positive scales, e.g. '1.0;1.25,1.75'")
    return sets
