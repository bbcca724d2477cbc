"""Evaluate the propagation path (Table 1's "FlowNet2-s" row): `python -m flownet2s.evaluate`.

Interpolation mIoU: every frame k of each test video is a key; frame k + g is predicted by
propagating k's features with F (warp x scale, then task_net), for each gap g in
(1, 5, 10, 20, 30). One confusion matrix per gap over all videos (reconstructed protocol,
paper.md §11); the row's mIoU is the mean over the gaps (DFF averages over key distances). A gap with
no frame pair (videos or --max_frames shorter than gap + 1) has no mIoU: it is `null` in the JSON and
left out of the row's mean, with a warning naming it (the row itself is `null` when no gap has a pair).
FPS is the non-key path's (flow + warp + task, batch 1): median of timed runs after warm-up,
network passes only (no I/O), on this machine.
"""
import json
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from deeplab_face import atomic, cli  # noqa: E402
from deeplab_face.backend import to_numpy  # noqa: E402
from deeplab_face.errors import ConfigError  # noqa: E402
from deeplab_face.segmentation_metrics import confusion_matrix, mean_iou  # noqa: E402
from flownet2s.dff import PAPER_GAPS, DeepFeatureFlow, time_call  # noqa: E402

FPS_WARMUP, FPS_RUNS = 3, 10


def model_name(width):
    return {0.375: "FlowNet2-s", 1.0: "FlowNet2-S"}.get(float(width), f"FlowNetS (width {width:g})")


def _frames(images, crop_size):
    """uint8 (T, s, s, 3) -> float32 at the segmenter's crop (align-corners resize when needed)."""
    frames = images.astype(np.float32)
    if frames.shape[1] != crop_size:
        from deeplab_face.models.layers import resize_align_corners
        frames = np.asarray(resize_align_corners(frames, (crop_size, crop_size)))
    return frames


def _labels(labels, crop_size):
    if labels.shape[1] == crop_size:
        return labels
    rows = np.round(np.linspace(0, labels.shape[1] - 1, crop_size)).astype(int)
    cols = np.round(np.linspace(0, labels.shape[2] - 1, crop_size)).astype(int)
    return labels[:, rows][:, :, cols]  # nearest neighbour


def gap_confusions(dff, images, labels, gaps, num_classes, batch_size=4, progbar=None):
    """{gap: confusion} and the key-frame confusion for one video (frames float32, labels uint8)."""
    confusions = {g: np.zeros((num_classes, num_classes), np.int64) for g in gaps}
    key_confusion = np.zeros((num_classes, num_classes), np.int64)
    count = len(images)

    def padded(array):  # one batch shape -> one compiled graph
        if len(array) == batch_size:
            return array
        return np.concatenate([array, np.repeat(array[-1:], batch_size - len(array), axis=0)])

    for start in range(0, count, batch_size):
        keys = np.arange(start, min(start + batch_size, count))
        key_out = dff.key(padded(images[keys]))
        key_pred = np.argmax(to_numpy(key_out["probs"])[:len(keys)], axis=-1)
        key_confusion += confusion_matrix(key_pred, labels[keys], num_classes)
        features = to_numpy(key_out["features"])
        for gap in gaps:
            valid = keys + gap < count
            if not valid.any():
                continue
            n = int(valid.sum())
            out = dff.propagate(padded(images[keys[valid]]), padded(features[:len(keys)][valid]),
                                padded(images[keys[valid] + gap]))
            pred = np.argmax(to_numpy(out["probs"])[:n], axis=-1)
            confusions[gap] += confusion_matrix(pred, labels[keys[valid] + gap], num_classes)
        if progbar is not None:
            progbar.add(len(keys))
    return confusions, key_confusion


def non_key_fps(dff, frame, warmup=FPS_WARMUP, runs=FPS_RUNS):
    """Frames per second of the non-key path (flow + warp + task) on batch 1."""
    key_features = dff.key(frame)["features"]
    milliseconds = time_call(lambda: dff.propagate(frame, key_features, frame), warmup, runs)
    return 1000.0 / milliseconds


def gap_row_miou(confusions, log=print):
    """({gap: mIoU % or None}, the row's mIoU: mean over the gaps that have pairs, or None).
    An empty gap (no pixel counted) has no mIoU: None, and one warning names the empty gaps."""
    gap_miou = {}
    for gap, confusion in confusions.items():
        value = 100.0 * mean_iou(confusion)   # NaN: no pixel counted
        gap_miou[gap] = None if math.isnan(value) else value
    empty = [g for g, v in gap_miou.items() if v is None]
    if empty:
        log(f"warning: FlowNet row: no frame pair {'at gap' if len(empty) == 1 else 'at gaps'} "
            f"{', '.join(map(str, empty))} (videos or --max_frames too short); "
            f"{'it is' if len(empty) == 1 else 'they are'} n/a and left out of the row's mean")
    measured = [v for v in gap_miou.values() if v is not None]
    return gap_miou, (float(np.mean(measured)) if measured else None)


def evaluate(segmenter_dir, flownet_dir, prepared_dir, video_ids, gaps=PAPER_GAPS, max_frames=None,
             batch_size=4, flow_resolution=None, border=None, fps_runs=FPS_RUNS, verbose=1, log=print):
    """Table 1's propagation row: {"table1": [row], "gap_miou": {gap: miou % or None}, "key_miou"}."""
    from deeplab_face import load_segmenter
    from deeplab_face.data.pipelines import load_video
    from flownet2s import load_flownet
    gaps = tuple(int(g) for g in gaps)
    if not gaps or min(gaps) < 1:
        raise ConfigError(f"--gaps={list(gaps)}: need positive frame distances")
    if not video_ids:
        raise ConfigError("--video_ids: no test videos given")
    segmenter = load_segmenter(segmenter_dir)
    flow_net = load_flownet(flownet_dir)
    width = flow_net.flownet_args["width"]
    # None: the options the stage was fine-tuned with (config.json, via load_flownet).
    dff = DeepFeatureFlow(segmenter, flow_net, flow_resolution=flow_resolution, border=border)
    num_classes = int(segmenter.output_shape[-1])

    videos = [load_video(prepared_dir, v, count=max_frames) for v in video_ids]
    progbar = keras.utils.Progbar(sum(len(images) for images, _ in videos), verbose=verbose)
    confusions = {g: 0 for g in gaps}
    key_confusion = 0
    for images, labels in videos:
        per_gap, key_cm = gap_confusions(dff, _frames(images, dff.crop_size),
                                         _labels(labels, dff.crop_size), gaps, num_classes,
                                         batch_size, progbar)
        key_confusion = key_confusion + key_cm
        for g in gaps:
            confusions[g] = confusions[g] + per_gap[g]
    gap_miou, row_miou = gap_row_miou(confusions, log=log)
    frame = _frames(videos[0][0][:1], dff.crop_size)
    fps = non_key_fps(dff, frame, runs=fps_runs)
    row = {"model": model_name(width), "scales": [], "miou": row_miou, "fps": float(fps)}
    key_miou = 100.0 * mean_iou(key_confusion)
    key_miou = None if math.isnan(key_miou) else key_miou
    return {"table1": [row], "gap_miou": gap_miou, "key_miou": key_miou}


FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("segmenter_dir", None, "Finished segmentation stage (N).")
    flags.DEFINE_string("flownet_dir", None, "Finished flow stage (F, python -m flownet2s.train).")
    flags.DEFINE_string("prepared_dir", None, "Prepared TFRecords of the test videos.")
    flags.DEFINE_list("video_ids", [], "Test video ids (default: every video in the manifest).")
    flags.DEFINE_list("gaps", [str(g) for g in PAPER_GAPS], "Key-current distances in frames.")
    flags.register_validator("gaps", _positive_ints, "--gaps must be positive integers, e.g. 1,5,10")
    flags.DEFINE_integer("max_frames", None, "At most this many frames per video (at least 2: a pair).",
                         lower_bound=2)
    flags.DEFINE_integer("batch_size", 4, "Pairs per compiled call.", lower_bound=1)
    flags.DEFINE_enum("flow_resolution", None, ["full", "half"], "Override the stage's flow resolution.")
    flags.DEFINE_enum("border", None, ["zeros", "clamp"], "Override the stage's warp border.")
    flags.DEFINE_integer("fps_runs", FPS_RUNS, "Timed runs for the FPS median.", lower_bound=1)
    flags.DEFINE_string("output", None, "Also write the result JSON here (its folder is created).")
    flags.mark_flags_as_required(["segmenter_dir", "flownet_dir", "prepared_dir"])


def _positive_ints(values):
    try:
        return bool(values) and all(int(v) >= 1 for v in values)
    except ValueError:
        return False


def main(argv):
    del argv
    if FLAGS.output:   # before the work: a place that cannot be written fails now, not at the end
        atomic.check_output_file(FLAGS.output, "--output")
    gaps = [int(g) for g in FLAGS.gaps]
    video_ids = FLAGS.video_ids
    if not video_ids:
        from deeplab_face.data.tfrecords import read_manifest
        video_ids = sorted(read_manifest(FLAGS.prepared_dir)["videos"])
    results = evaluate(FLAGS.segmenter_dir, FLAGS.flownet_dir, FLAGS.prepared_dir, video_ids,
                       gaps=gaps, max_frames=FLAGS.max_frames, batch_size=FLAGS.batch_size,
                       flow_resolution=FLAGS.flow_resolution, border=FLAGS.border,
                       fps_runs=FLAGS.fps_runs)
    text = json.dumps(atomic.jsonable(results), indent=2)
    print(text, flush=True)   # first: a failing --output loses nothing
    if FLAGS.output:
        atomic.write_text(FLAGS.output, text + "\n")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
