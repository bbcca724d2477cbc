"""Segment any face video with the dynamic pipeline (DESIGN.md "Commands"):

    python -m eval.segment_video --video=V --checkpoints=W/checkpoints --scheduler=NAME
        --output=OUT.mp4 --log=OUT.csv [--crop=whole|detect|landmarks] [--threshold=...]
        [--target_aki=N | --target_fps=F]

V is a video file or a camera index (0, 1, ...). Each frame is cropped to the face (whole frame,
OpenCV's Haar detector re-run on key frames with the box smoothed over time, or 300VW landmarks),
segmented by `eval.runtime.DynamicSegmenter` (N on key frames, FlowNet2-s + warp otherwise), and the
mask is drawn back onto the full frame: OUT.mp4 (mp4v; class colours; key frames framed in red) and
OUT.csv, one row per frame: frame (0-based), is_key, score, flow_magnitude, ms_flow, ms_policy,
ms_key, ms_warp_task, ms_total (model milliseconds; decoding, cropping and drawing excluded), knob
(the scheduler's threshold the frame was decided with), running_aki and running_fps (over the last
max(90, 4 x target AKI) frames, eval.budget) and knob_bound ("min"/"max" where budget mode pushed the
knob against a bound it cannot pass).

Checkpoints (WORKSPACE.md): W/checkpoints/segmenter, W/checkpoints/flownet, W/checkpoints/dvsnet
and W/checkpoints/rl_eta<limit> (--rl_stage picks one; default rl_eta0.06 if present, else the
lowest limit). The rl threshold defaults to the policy's calibrated operating threshold (its
config.json; eval.runtime.rl_threshold). Budget mode (--target_aki / --target_fps) turns the
scheduler's knob online to hold the target (eval.budget.BudgetController). Face boxes: a square
(x0, y0, side) in frame pixels, cut with the crop recipe's conventions (deeplab_face.data.crop:
half-pixel centres, bilinear, grey outside the frame).
"""
import csv
import os
import sys
import time

import cv2
import numpy as np
from absl import flags

from deeplab_face import cli
from deeplab_face.data.crop import CROP_MARGIN, IMAGE_PAD_VALUE, square_box
from deeplab_face.errors import ConfigError, DataError
from eval.runtime import DEFAULT_RL_STAGE, load_pipeline

HAAR_CASCADE = "haarcascade_frontalface_default.xml"   # bundled with opencv-python(-headless) 4.x
BOX_SMOOTHING = 0.5     # EMA weight of a new detection (the rest is the previous box)
BOX_RESET_IOU = 0.3     # a detection overlapping the smoothed box less than this replaces it
CSV_COLUMNS = ("frame", "is_key", "score", "flow_magnitude", "ms_flow", "ms_policy", "ms_key",
               "ms_warp_task", "ms_total", "knob", "running_aki", "running_fps", "knob_bound")
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


# -- video ----------------------------------------------------------------------------------------
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
            f"score {result.score:.3g} knob {result.knob:.3g} {result.ms['total']:.0f} ms")
    scale = max(0.4, min(height, width) / 700)
    cv2.putText(picture, text, (2 * thickness + 4, int(24 * scale) + 2 * thickness), cv2.FONT_HERSHEY_SIMPLEX,
                scale, KEY_COLOUR if result.is_key else (255, 255, 255), max(1, thickness // 2), cv2.LINE_AA)
    return picture


def segment_video(video, checkpoints, scheduler="rl", output="segmented.mp4", log="segmented.csv",
                  crop_mode="whole", threshold=None, annotations=None, rl_stage=None, max_frames=None,
                  seed=0, flow_resolution=None, target_aki=None, target_fps=None, budget_gain=None, verbose=1):
    """Segments `video` (path or camera index) and writes `output` (mp4v) and `log` (CSV).

    target_aki / target_fps: budget mode (eval.budget): the scheduler's knob, starting from
    `threshold` (or the scheduler's default), is turned online to hold that AKI or model FPS.
    Returns {"frames", "keys", "aki", "model_fps", "end_to_end_fps", "output", "log", "knob",
    "saturated_frames"}; model FPS from the runtime's per-stage milliseconds (eval.metrics.model_fps),
    end-to-end FPS from the wall clock; knob: its final value; saturated_frames: frames budget mode
    spent pushing the knob against a bound.
    """
    import keras

    from eval import budget, metrics
    from eval.runtime import DynamicSegmenter

    def say(line):   # progress lines when verbose; warnings always, on stderr
        if line.startswith("warning"):
            print(line, file=sys.stderr, flush=True)
        elif verbose:
            print(line, flush=True)

    gain = budget.DEFAULT_GAIN if budget_gain is None else budget_gain
    budget.check_targets(target_aki, target_fps, gain)   # flag errors before any model loads
    boxes = make_box_source(crop_mode, annotations)
    capture = open_video(video)
    dff, key_scheduler = load_pipeline(checkpoints, scheduler, threshold, rl_stage, seed, flow_resolution, log=say)
    controller = budget.BudgetController(key_scheduler, target_aki, target_fps, gain=gain, log=say)
    if controller.active:
        say(f"budget mode: target {'AKI %g' % target_aki if target_aki else '%g FPS (model time)' % target_fps}, "
            f"{scheduler} {controller.knob_spec.label} from {key_scheduler.threshold:g} "
            f"in [{controller.knob_spec.low:g}, {controller.knob_spec.high:g}], gain {gain:g}")
    runtime = DynamicSegmenter(dff, key_scheduler, budget=controller)
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
    writer, rows, keys, ms, sum_ms = None, 0, 0, [], 0.0
    bar = keras.utils.Progbar(total, verbose=verbose, stateful_metrics=["aki", "model_fps", "knob"])
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
                                f"{result.flow_magnitude:.6g}"]
                               + [f"{result.ms[s]:.3f}" for s in ("flow", "policy", "key", "warp_task", "total")]
                               + [f"{result.knob:.6g}", f"{controller.running_aki:.4g}",
                                  f"{controller.running_fps:.4g}", controller.bound])
                rows, keys = rows + 1, keys + int(result.is_key)
                ms.append(result.ms["total"])   # one float a frame: a long video stays small
                sum_ms += ms[-1]                  # running sum: no O(frames) pass per frame
                bar.update(rows, [("aki", rows / keys), ("model_fps", 1000.0 * rows / max(sum_ms, 1e-9)),
                                  ("knob", controller.knob)])
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    seconds = time.perf_counter() - start
    summary = dict(frames=rows, keys=keys, aki=rows / max(keys, 1), model_fps=metrics.model_fps(ms),
                   end_to_end_fps=metrics.end_to_end_fps(rows, seconds), output=output, log=log,
                   knob=controller.knob, saturated_frames=controller.saturated_frames)
    say(f"{rows} frames, {keys} keys (AKI {summary['aki']:.1f}), {summary['model_fps']:.1f} FPS model time, "
        f"{summary['end_to_end_fps']:.1f} FPS end to end -> {output}, {log}")
    if controller.active:
        say(f"budget mode: final {controller.knob_spec.label} {controller.knob:.4g}, running AKI "
            f"{controller.running_aki:.3g}, running {controller.running_fps:.3g} FPS; knob at a bound on "
            f"{controller.saturated_frames} of {rows} frames")
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
                       "percent; flow_magnitude: pixels; fixed/random: interval K). Default: the scheduler's; "
                       "rl: the policy's calibrated operating_threshold (config.json), else its training tau "
                       "with a warning. In budget mode: the knob's starting value.")
    flags.DEFINE_float("target_aki", None, "Budget mode: turn the knob online so that the running AKI (frames "
                       "per key) stays near this (>= 1). Knob bounds: rl tau [1e-6, 1-1e-6], dvsnet [0.01, "
                       "99.99] %, flow_magnitude [1e-3, 1e3] px, fixed/random K [1, 1e4]; a target past them "
                       "leaves the knob at its bound, said in the output and the CSV's knob_bound.")
    flags.DEFINE_float("target_fps", None, "Budget mode: hold this model-time FPS instead (eval.metrics."
                       "model_fps): converted to a key rate from the running median ms of the key and non-key "
                       "paths, then as --target_aki. Not with --target_aki.")
    flags.DEFINE_float("budget_gain", None, "Budget mode: knob step per missing or extra key, in log (logit for "
                       "tau and the dvsnet target) units; higher settles faster and jitters more. Default "
                       "eval.budget.DEFAULT_GAIN.")
    flags.DEFINE_string("annotations", None, "For --crop=landmarks: folder of 300VW .pts files (000001.pts = frame 1).")
    flags.DEFINE_string("rl_stage", None, "RL stage under --checkpoints: rl_eta<limit> or the bare limit "
                        f"(default {DEFAULT_RL_STAGE} if present, else the lowest limit; a missing one is an error).")
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
                  FLAGS.flow_resolution, FLAGS.target_aki, FLAGS.target_fps, FLAGS.budget_gain)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
