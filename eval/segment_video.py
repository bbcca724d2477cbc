"""Segment any face video with the dynamic pipeline (DESIGN.md "Commands"):

    python -m eval.segment_video --video=V --checkpoints=W/checkpoints --scheduler=NAME
        --output=OUT.mp4 --log=OUT.csv [--crop=whole|detect|landmarks] [--threshold=...]

V is a video file or a camera index (0, 1, ...). Each frame is cropped to the face (whole frame,
OpenCV's Haar detector re-run on key frames with the box smoothed over time, or 300VW landmarks),
segmented by `eval.runtime.DynamicSegmenter` (N on key frames, FlowNet2-s + warp otherwise), and the
mask is drawn back onto the full frame: OUT.mp4 (mp4v; class colours; key frames framed in red) and
OUT.csv, one row per frame: frame (0-based), is_key, score, flow_magnitude, ms_flow, ms_policy,
ms_key, ms_warp_task, ms_total (model milliseconds; decoding, cropping and drawing excluded).

Checkpoints (WORKSPACE.md): W/checkpoints/segmenter, W/checkpoints/flownet, W/checkpoints/dvsnet
and W/checkpoints/rl_eta<limit> (--rl_stage picks one; default rl_eta0.06 if present, else the
first). Face boxes: a square (x0, y0, side) in frame pixels, cut with the crop recipe's
conventions (deeplab_face.data.crop: half-pixel centres, bilinear, grey outside the frame).
"""
import csv
import glob
import os
import time

import cv2
import numpy as np
from absl import flags

from deeplab_face import cli
from deeplab_face.data.crop import CROP_MARGIN, IMAGE_PAD_VALUE, square_box
from deeplab_face.errors import CheckpointError, ConfigError, DataError

HAAR_CASCADE = "haarcascade_frontalface_default.xml"   # bundled with opencv-python(-headless) 4.x
BOX_SMOOTHING = 0.5     # EMA weight of a new detection (the rest is the previous box)
BOX_RESET_IOU = 0.3     # a detection overlapping the smoothed box less than this replaces it
DEFAULT_RL_STAGE = "rl_eta0.06"   # the paper's middle KAR limit
CSV_COLUMNS = ("frame", "is_key", "score", "flow_magnitude", "ms_flow", "ms_policy", "ms_key",
               "ms_warp_task", "ms_total")
KEY_COLOUR = (255, 40, 40)   # RGB


# -- face boxes ----------------------------------------------------------------------------------
def _affine(box, size):
    """frame -> crop map of a square box: u = (x - x0 + 0.5) * size / side - 0.5 (crop_face's)."""
    x0, y0, side = box
    s = size / side
    return np.array([[s, 0.0, s * (0.5 - x0) - 0.5], [0.0, s, s * (0.5 - y0) - 0.5]], np.float64)


def crop(frame, box, size):
    """RGB uint8 (size, size, 3) of `box` (None = the whole frame resized, aspect not kept)."""
    if box is None:
        return cv2.resize(frame, (size, size), interpolation=cv2.INTER_LINEAR)
    return cv2.warpAffine(frame, _affine(box, size), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(IMAGE_PAD_VALUE,) * 3)


def paste(mask, box, shape):
    """A crop's mask (S, S) as a frame-sized (H, W) mask; outside the box is background (0)."""
    height, width = shape[:2]
    if box is None:
        return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    return cv2.warpAffine(mask, _affine(box, mask.shape[0]), (width, height),
                          flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def _iou(a, b):
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[2], b[0] + b[2], b[1] + b[2]
    inter = max(0.0, min(ax1, bx1) - max(a[0], b[0])) * max(0.0, min(ay1, by1) - max(a[1], b[1]))
    return inter / (a[2] ** 2 + b[2] ** 2 - inter)


class WholeFrame:
    """--crop=whole: the whole frame resized to S x S."""

    def box(self, frame, index):
        return None

    def redetect(self, frame, index):
        return None


class HaarFaceBox:
    """--crop=detect: OpenCV's Haar face detector, run on key frames only (the box must stay fixed
    between a key and the frames propagated from it); the box is smoothed over time (EMA) and
    grown by the crop recipe's margin. Without any detection yet: the centred square of the frame."""

    def __init__(self, margin=CROP_MARGIN, smoothing=BOX_SMOOTHING):
        path = os.path.join(cv2.data.haarcascades, HAAR_CASCADE)
        self.detector = cv2.CascadeClassifier(path)
        if self.detector.empty():
            raise DataError(f"{path}: cannot load OpenCV's Haar face cascade")
        self.margin, self.smoothing = margin, smoothing
        self.current = None
        self.detections = 0

    def detect(self, frame):
        """The largest face as a square crop box (x0, y0, side), or None."""
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        min_side = max(24, min(gray.shape) // 12)
        faces = self.detector.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                               minSize=(min_side, min_side))
        if len(faces) == 0:
            return None
        x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
        side = (1.0 + self.margin) * (w + h) / 2.0     # the recipe: (1 + margin) x mean side
        return (x + w / 2.0 - side / 2.0, y + h / 2.0 - side / 2.0, side)

    def redetect(self, frame, index):
        found = self.detect(frame)
        if found is not None:
            self.detections += 1
            if self.current is None or _iou(found, self.current) < BOX_RESET_IOU:
                self.current = found
            else:
                a = self.smoothing
                self.current = tuple(a * f + (1.0 - a) * c for f, c in zip(found, self.current))
        elif self.current is None:
            height, width = frame.shape[:2]
            side = float(min(height, width))
            self.current = ((width - side) / 2.0, (height - side) / 2.0, side)
        return self.current

    def box(self, frame, index):
        return self.current if self.current is not None else self.redetect(frame, index)


class LandmarkBoxes:
    """--crop=landmarks: each frame's box from its 300VW annotation `<dir>/%06d.pts` (frame 1 is
    000001.pts), the recipe of the prepared data; a frame without a file keeps the last box."""

    def __init__(self, annotations):
        if not annotations or not os.path.isdir(annotations):
            raise DataError(f"{annotations}: --annotations must be a folder of 300VW .pts files")
        self.annotations = annotations
        self.current = None

    def box(self, frame, index):
        from deeplab_face.data.pts import read_pts

        path = os.path.join(self.annotations, f"{index + 1:06d}.pts")
        if os.path.exists(path):
            x0, y0, x1, _ = square_box(read_pts(path))
            self.current = (float(x0), float(y0), float(x1 - x0))
        elif self.current is None:
            raise DataError(f"{path}: missing (no landmarks for the first frame)")
        return self.current

    def redetect(self, frame, index):
        return self.box(frame, index)


def make_box_source(mode, annotations=None):
    """The box source of a --crop mode: whole, detect or landmarks."""
    if mode == "whole":
        return WholeFrame()
    if mode == "detect":
        return HaarFaceBox()
    if mode == "landmarks":
        return LandmarkBoxes(annotations)
    raise ConfigError(f"--crop: {mode!r} is not one of whole, detect, landmarks")


# -- checkpoints and video ------------------------------------------------------------------------
def _stage_dir(checkpoints, name):
    path = os.path.join(checkpoints, name)
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: missing checkpoint stage (train it first, WORKSPACE.md)")
    return path


def _rl_stage(checkpoints, rl_stage):
    if rl_stage:
        return _stage_dir(checkpoints, rl_stage)
    stages = sorted(os.path.basename(p) for p in glob.glob(os.path.join(checkpoints, "rl_eta*")))
    if not stages:
        raise CheckpointError(f"{os.path.join(checkpoints, 'rl_eta*')}: no RL stage (train one, or "
                              f"choose another --scheduler)")
    return _stage_dir(checkpoints, DEFAULT_RL_STAGE if DEFAULT_RL_STAGE in stages else stages[0])


def load_pipeline(checkpoints, scheduler="rl", threshold=None, rl_stage=None, seed=0, flow_resolution=None):
    """(DeepFeatureFlow, KeyScheduler) from a checkpoints folder (stage layout, WORKSPACE.md)."""
    import json

    from rl_scheduler import load_dvsnet, load_policy
    from rl_scheduler.cache import load_dff
    from rl_scheduler.schedulers import make_scheduler

    if not os.path.isdir(checkpoints):
        raise CheckpointError(f"{checkpoints}: --checkpoints is not a directory")
    flownet_dir = _stage_dir(checkpoints, "flownet")
    if flow_resolution is None:   # the resolution F was fine-tuned at, when its config says
        try:
            with open(os.path.join(flownet_dir, "config.json")) as f:
                stage_config = json.load(f)
            flow_resolution = stage_config.get("flow_resolution") or \
                (stage_config.get("training") or {}).get("flow_resolution") or "full"
        except (OSError, ValueError):
            flow_resolution = "full"
    dff = load_dff(_stage_dir(checkpoints, "segmenter"), flownet_dir, flow_resolution=flow_resolution)
    options = {} if threshold is None else {"threshold": threshold}
    if scheduler == "rl":
        policy = load_policy(_rl_stage(checkpoints, rl_stage))
        training = (getattr(policy, "stage_config", {}) or {}).get("training") or {}
        options.update({k: training[k] for k in ("window", "kar_prefill", "lkd_scale") if k in training})
        options["policy"] = policy
    elif scheduler == "dvsnet":
        options["network"] = load_dvsnet(_stage_dir(checkpoints, "dvsnet"))
    elif scheduler == "random":
        options["seed"] = seed
    return dff, make_scheduler(scheduler, **options)


def open_video(video):
    """cv2.VideoCapture of a file, or of a camera when `video` is an index; DataError if unreadable."""
    source = int(video) if str(video).isdigit() and not os.path.exists(str(video)) else str(video)
    if isinstance(source, str) and not os.path.isfile(source):
        raise DataError(f"{video}: no such video file")
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise DataError(f"{video}: cannot open the video (unknown format or no such camera)")
    return capture


def _frames(capture, video, max_frames=None):
    """RGB uint8 frames (BGR converted once, here)."""
    count = 0
    while max_frames is None or count < max_frames:
        ok, bgr = capture.read()
        if not ok:
            if count == 0:
                raise DataError(f"{video}: no frame could be decoded")
            return
        count += 1
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def draw(frame, mask, box, result, scheduler_name):
    """The overlay frame (RGB): class colours, the face box, the key mark and a status line."""
    from deeplab_face.data.masks import overlay

    picture = overlay(frame, mask)
    if box is not None:
        x0, y0, side = (int(round(v)) for v in box)
        cv2.rectangle(picture, (x0, y0), (x0 + side, y0 + side), (255, 255, 255), 1)
    height, width = picture.shape[:2]
    thickness = max(2, min(height, width) // 80)
    if result.is_key:
        cv2.rectangle(picture, (0, 0), (width - 1, height - 1), KEY_COLOUR, 2 * thickness)
    text = (f"{result.index} {scheduler_name}{' KEY' if result.is_key else ''} "
            f"score {result.score:.3g} {result.ms['total']:.0f} ms")
    scale = max(0.4, min(height, width) / 700)
    cv2.putText(picture, text, (2 * thickness + 4, int(24 * scale) + 2 * thickness), cv2.FONT_HERSHEY_SIMPLEX,
                scale, KEY_COLOUR if result.is_key else (255, 255, 255), max(1, thickness // 2), cv2.LINE_AA)
    return picture


def segment_video(video, checkpoints, scheduler="rl", output="segmented.mp4", log="segmented.csv",
                  crop_mode="whole", threshold=None, annotations=None, rl_stage=None, max_frames=None,
                  seed=0, flow_resolution=None, verbose=1):
    """Segments `video` (path or camera index) and writes `output` (mp4v) and `log` (CSV).

    Returns {"frames", "keys", "aki", "model_fps", "end_to_end_fps", "output", "log"}; model FPS from
    the runtime's per-stage milliseconds (eval.metrics.model_fps), end-to-end FPS from the wall clock.
    """
    import keras

    from eval import metrics
    from eval.runtime import DynamicSegmenter

    boxes = make_box_source(crop_mode, annotations)
    capture = open_video(video)
    dff, key_scheduler = load_pipeline(checkpoints, scheduler, threshold, rl_stage, seed, flow_resolution)
    runtime = DynamicSegmenter(dff, key_scheduler)
    runtime.warm_up()   # compile before the clock starts
    size = dff.crop_size
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    total = total if total > 0 else None   # cameras report none
    if total and max_frames:
        total = min(total, max_frames)
    for path in (output, log):
        if os.path.dirname(os.path.abspath(path)):
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    writer, rows, keys, ms = None, 0, 0, []
    bar = keras.utils.Progbar(total, verbose=verbose, stateful_metrics=["aki", "model_fps"])
    start = time.perf_counter()
    try:
        with open(log, "w", newline="") as log_file:
            table = csv.writer(log_file)
            table.writerow(CSV_COLUMNS)
            for index, frame in enumerate(_frames(capture, video, max_frames)):
                box = boxes.box(frame, index)
                state = {"box": box}

                def key_crop(frame=frame, index=index, state=state):   # re-detect on a key frame
                    state["box"] = boxes.redetect(frame, index)
                    return crop(frame, state["box"], size)

                result = runtime.step(crop(frame, box, size), key_frame_fn=key_crop)
                picture = draw(frame, paste(result.mask, state["box"], frame.shape), state["box"], result, scheduler)
                if writer is None:
                    height, width = picture.shape[:2]
                    writer = cv2.VideoWriter(output, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
                    if not writer.isOpened():
                        raise DataError(f"{output}: OpenCV cannot open an mp4v writer")
                writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
                table.writerow([result.index, int(result.is_key), f"{result.score:.6g}",
                                f"{result.flow_magnitude:.6g}"] + [f"{result.ms[s]:.3f}" for s in
                                                                   ("flow", "policy", "key", "warp_task", "total")])
                rows, keys = rows + 1, keys + int(result.is_key)
                ms.append(result.ms)
                bar.update(rows, [("aki", rows / keys), ("model_fps", metrics.model_fps(ms))])
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    seconds = time.perf_counter() - start
    summary = dict(frames=rows, keys=keys, aki=rows / max(keys, 1), model_fps=metrics.model_fps(ms),
                   end_to_end_fps=metrics.end_to_end_fps(rows, seconds), output=output, log=log)
    if verbose:
        print(f"{rows} frames, {keys} keys (AKI {summary['aki']:.1f}), {summary['model_fps']:.1f} FPS model time, "
              f"{summary['end_to_end_fps']:.1f} FPS end to end -> {output}, {log}")
    return summary


# -- command --------------------------------------------------------------------------------------
def define_flags():
    """The command's flags (defined only when run as a command, so importing this module is free)."""
    flags.DEFINE_string("video", None, "Input video file, or a camera index (0, 1, ...).")
    flags.DEFINE_string("checkpoints", None, "Folder of trained stages: segmenter/, flownet/, dvsnet/, "
                        "rl_eta<limit>/ (W/checkpoints of eval.reproduce).")
    flags.DEFINE_enum("scheduler", "rl", ["rl", "dvsnet", "flow_magnitude", "fixed", "random"],
                      "Key scheduler: the RL policy or a baseline.")
    flags.DEFINE_string("output", "segmented.mp4", "Overlay video to write (mp4v).")
    flags.DEFINE_string("log", "segmented.csv", "CSV log to write: one row per frame.")
    flags.DEFINE_enum("crop", "whole", ["whole", "detect", "landmarks"], "Face crop: the whole frame resized "
                      "to S; OpenCV's Haar face detector (re-run on key frames, box smoothed); or 300VW "
                      "landmarks from --annotations.")
    flags.DEFINE_float("threshold", None, "The scheduler's knob (rl: tau on P(key); dvsnet: target in "
                       "percent; flow_magnitude: pixels; fixed/random: interval K). Default: the scheduler's.")
    flags.DEFINE_string("annotations", None, "For --crop=landmarks: folder of 300VW .pts files (000001.pts = frame 1).")
    flags.DEFINE_string("rl_stage", None, f"RL stage under --checkpoints (default {DEFAULT_RL_STAGE} if present, "
                        "else the first rl_eta*).")
    flags.DEFINE_integer("max_frames", None, "Stop after this many frames.")
    flags.DEFINE_enum("flow_resolution", None, ["full", "half"], "Flow-net input size (default: F's training setting).")
    flags.DEFINE_integer("seed", 0, "Seed (random scheduler).")


def main(argv):
    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments: {' '.join(argv[1:])}")
    for name in ("video", "checkpoints"):
        if FLAGS[name].value is None:
            raise ConfigError(f"--{name}: required")
    import keras
    keras.utils.set_random_seed(FLAGS.seed)
    segment_video(FLAGS.video, FLAGS.checkpoints, FLAGS.scheduler, FLAGS.output, FLAGS.log, FLAGS.crop,
                  FLAGS.threshold, FLAGS.annotations, FLAGS.rl_stage, FLAGS.max_frames, FLAGS.seed,
                  FLAGS.flow_resolution)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
