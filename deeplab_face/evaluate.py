"""Table 1 rows for a trained N (§4.2): `python -m deeplab_face.evaluate`.

For each eval-scale set (§4.2: {1.0} and {1.25, 1.75}; softmax averaged over scales, optional
flip), one confusion matrix over every frame of the given videos gives the dataset-level mIoU, and
the model's speed is measured at batch 1: the frame is already decoded and on the device (decoding
excluded), warm-up calls are not timed, FPS = 1000 / median milliseconds of the timed calls.

The VGG rows (FCN-8s, DeepLab-V2) are single-scale models in Table 1 ("N/A"): they are evaluated
at scale 1.0 only and their rows carry `"scales": []`.

Predictions are made at the model's crop size; when the prepared data has another size, the
probabilities are resized (align-corners bilinear) to the labels' size before the argmax.
"""
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

from deeplab_face import atomic, cli  # noqa: E402
from deeplab_face.backend import compile_fn  # noqa: E402
from deeplab_face.data import tfrecords  # noqa: E402
from deeplab_face.errors import ConfigError  # noqa: E402
from deeplab_face.models.backbones import BACKBONES  # noqa: E402
from deeplab_face.models.multiscale import PAPER_SCALE_SETS  # noqa: E402
from deeplab_face.segmentation_metrics import confusion_matrix, fmt, mean_iou, or_none  # noqa: E402

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


def table1_markdown(rows):
    lines = ["| model | eval scales | mIoU (%) | FPS |", "|---|---|---|---|"]
    for row in rows:
        scales = ", ".join(str(float(s)) for s in row["scales"]) or "N/A"
        lines.append(f"| {row['model']} | {scales} | {fmt(row['miou'])} | {fmt(row['fps'], '.1f')} |")
    return "\n".join(lines) + "\n"


def evaluate(segmenter_dir, prepared_dir, video_ids, scale_sets=PAPER_SCALE_SETS, flip=False,
             max_frames=None, batch_size=4, fps_warmup=FPS_WARMUP, fps_runs=FPS_RUNS,
             out_dir=None, verbose=1, log=print):
    """Table 1 rows of the N in `segmenter_dir` on `video_ids` -> {"table1": [...]} (miou in %, None
    when no labelled pixel was seen).

    out_dir: also write `table1.json` and `table1.md` there (checked before the work starts).
    """
    from deeplab_face import load_segmenter
    video_ids = [str(v) for v in video_ids]
    size, videos = read_manifest(prepared_dir)
    missing = [v for v in video_ids if v not in videos]
    if not video_ids or missing:
        raise ConfigError(f"--video_ids: {missing or 'none given'} not in {prepared_dir}/manifest.json")
    from deeplab_face.models.multiscale import ScaledLogits
    model = load_segmenter(segmenter_dir)
    if out_dir:   # before the work (the frames and the FPS runs)
        atomic.check_output_dir(out_dir, "--out_dir")
    logits_fn = ScaledLogits(model)  # one network per input size, shared by every predictor
    args = model.segmenter_args
    crop_size = int(model.input.shape[1])
    num_classes = int(args["num_classes"])
    record = BACKBONES[args["backbone"]]   # its Table 1 name and whether the row is single-scale
    single_scale = record.single_scale
    if single_scale:
        scale_sets = ((1.0,),)
    total = sum(min(videos[v]["frames"], max_frames or videos[v]["frames"]) for v in video_ids)
    frame = first_frame(prepared_dir, video_ids[0], crop_size)
    rows = []
    for scales in scale_sets:
        scales = tuple(float(s) for s in scales)
        progbar = keras.utils.Progbar(total, verbose=verbose, unit_name="frame")
        predict = make_predictor(model, scales, flip, (size, size), logits_fn)
        miou, _, _ = dataset_miou(predict, prepared_dir, video_ids, crop_size, num_classes,
                                  batch_size, max_frames, progbar)
        if size != crop_size:  # time the model's own output size, not the labels' resize
            predict = make_predictor(model, scales, flip, (crop_size, crop_size), logits_fn)
        fps = model_fps(predict, frame, fps_warmup, fps_runs)
        if or_none(miou) is None:
            log(f"warning: {record.display_name} at scales {scales}: no "
                "labelled pixel in the test frames; its mIoU is n/a")
        miou = or_none(miou)
        rows.append(dict(model=record.display_name,
                         scales=[] if single_scale else list(scales), miou=miou, fps=fps))
    results = {"table1": rows}
    if out_dir:
        atomic.write_json(os.path.join(out_dir, "table1.json"), results, indent=2)
        atomic.write_text(os.path.join(out_dir, "table1.md"), table1_markdown(rows))
    return results


def parse_scale_sets(text):
    """'1.0;1.25,1.75' -> ((1.0,), (1.25, 1.75))."""
    try:
        sets = tuple(tuple(float(s) for s in part.split(",")) for part in text.split(";") if part)
    except ValueError:
        raise ConfigError(f"--scale_sets={text!r}: expected e.g. '1.0;1.25,1.75'") from None
    if not sets or any(s <= 0 for scales in sets for s in scales):
        raise ConfigError(f"--scale_sets={text!r}: expected positive scales, e.g. '1.0;1.25,1.75'")
    return sets


FLAGS = flags.FLAGS


def define_flags():
    """Defined only when run as a command (importing the module defines no flags)."""
    flags.DEFINE_string("segmenter_dir", None, "Finished segmentation stage (config.json, "
                        "final.weights.h5), e.g. W/checkpoints/segmenter.")
    flags.DEFINE_string("prepared_dir", None, "Prepared TFRecords (python -m deeplab_face.prepare_300vw).")
    flags.DEFINE_list("video_ids", [], "Test video ids (default: every video in the manifest).")
    flags.DEFINE_string("scale_sets", "1.0;1.25,1.75", "Eval-scale sets, ';' between sets, ',' "
                        "between the scales of a set (§4.2). VGG models: 1.0 only.")
    flags.DEFINE_boolean("flip", False, "Also average the left-right flipped input.")
    flags.DEFINE_integer("max_frames", None, "At most this many frames per video.", lower_bound=1)
    flags.DEFINE_integer("batch_size", 4, "Frames per call for the mIoU pass (FPS uses batch 1).",
                         lower_bound=1)
    flags.DEFINE_integer("fps_runs", FPS_RUNS, "Timed calls for the FPS median.", lower_bound=1)
    flags.DEFINE_string("out_dir", None, "Write table1.json and table1.md here (created if missing; "
                        "default: <segmenter_dir>/eval).")
    flags.register_validator("scale_sets", _valid_scale_sets, "--scale_sets must be positive scales, ',' "
                             "between the scales of a set, ';' between sets, e.g. '1.0;1.25,1.75'")
    flags.mark_flags_as_required(["segmenter_dir", "prepared_dir"])


def _valid_scale_sets(text):
    try:
        parse_scale_sets(text)
    except ConfigError:
        return False
    return True


def main(argv):
    del argv
    if FLAGS.out_dir:   # before reading anything (the default, <segmenter_dir>/eval, once N has loaded)
        atomic.check_output_dir(FLAGS.out_dir, "--out_dir")
    out_dir = FLAGS.out_dir or os.path.join(FLAGS.segmenter_dir, "eval")
    video_ids = FLAGS.video_ids or sorted(read_manifest(FLAGS.prepared_dir)[1])
    results = evaluate(FLAGS.segmenter_dir, FLAGS.prepared_dir, video_ids,
                       scale_sets=parse_scale_sets(FLAGS.scale_sets), flip=FLAGS.flip,
                       max_frames=FLAGS.max_frames, batch_size=FLAGS.batch_size,
                       fps_runs=FLAGS.fps_runs, out_dir=out_dir)
    print(table1_markdown(results["table1"]))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
