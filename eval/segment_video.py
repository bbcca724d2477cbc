"""Segment any face video with the dynamic pipeline (DESIGN.md "Commands"):

    python -m eval.segment_video --video=V --checkpoints=W/checkpoints --scheduler=NAME
        --output=OUT.mp4 --log=OUT.csv [--crop=whole|detect|landmarks] [--threshold=...]
        [--target_aki=N | --target_fps=F] [--face_detector=haar|dlib] [--crop_key_change=0.2]

V is a video file or a camera index (0, 1, ...). Each frame is cropped to the face (whole frame;
`detect`: a face detector plus a box tracked on every frame, eval.face_track; or 300VW landmarks),
segmented by `eval.runtime.DynamicSegmenter` (N on key frames, FlowNet2-s + warp otherwise), and the
mask is drawn back onto the full frame: OUT.mp4 (mp4v; class colours; key frames framed in red) and
OUT.csv, one row per frame: frame (0-based), is_key, score, flow_magnitude, ms_flow, ms_policy,
ms_key, ms_warp_task, ms_total (model milliseconds; decoding, cropping and drawing excluded), knob
(the scheduler's threshold the frame was decided with), running_aki and running_fps (over the last
max(90, 4 x target AKI) frames, eval.budget), knob_bound ("min"/"max" where budget mode pushed the
knob against a bound it cannot pass), key_reason (why a key frame is one: "first frame", "scheduler",
"crop" or "scheduler+crop"; empty on other frames) and box_x0, box_y0, box_side (the crop box).

A crop box that moved from the last key's box by more than --crop_key_change (eval.face_track.
box_change: centre shift or side change, as a fraction of the key box's side) makes the frame a key
whatever the scheduler said: the flow net would see a new image. The scheduler records that key in
its history (KAR, LKD), and budget mode counts it.

Checkpoints (WORKSPACE.md): W/checkpoints/segmenter, W/checkpoints/flownet, W/checkpoints/dvsnet
and W/checkpoints/rl_eta<limit> (--rl_stage picks one; default rl_eta0.06 if present, else the
lowest limit); the command prints the stages it loaded and what N was trained on. The rl threshold
defaults to the policy's calibrated operating threshold (its config.json; eval.runtime.rl_threshold).
Budget mode (--target_aki / --target_fps) turns the scheduler's knob online to hold the target
(eval.budget.BudgetController). Face boxes: a square (x0, y0, side) in frame pixels, cut with the
crop recipe's conventions (deeplab_face.data.crop: half-pixel centres, bilinear, grey outside).

Outputs are checked before any frame is processed (a folder that cannot be written, or a log that
cannot take its header line, is one error line); while the video plays every CSV row is flushed and
a full disk under OUT.mp4 or OUT.csv stops the run at that frame with one error line, keeping the
rows written so far.
"""
import collections
import itertools
import json
import math
import os
import sys
import time

import cv2
import numpy as np
from absl import flags

from deeplab_face import cli
from deeplab_face.data.crop import IMAGE_PAD_VALUE, square_box
from deeplab_face.errors import ConfigError, DataError
from eval import face_track
from eval.runtime import DEFAULT_RL_STAGE, load_pipeline
from eval.video_io import Outputs, check_output, open_video, read_frames, status_layout

CROP_KEY_CHANGE = 0.2   # a crop box that moved more than this fraction of the key box's side is a key
CSV_COLUMNS = ("frame", "is_key", "score", "flow_magnitude", "ms_flow", "ms_policy", "ms_key",
               "ms_warp_task", "ms_total", "knob", "running_aki", "running_fps", "knob_bound",
               "key_reason", "box_x0", "box_y0", "box_side")
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


class WholeFrame:
    """--crop=whole: the whole frame resized to S x S."""

    def box(self, frame, index):
        return None

    def redetect(self, frame, index):
        return None


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


def make_box_source(mode, annotations=None, detector="haar", redetect_every=face_track.REDETECT_EVERY):
    """The box source of a --crop mode: whole, detect (`detector`, tracked) or landmarks."""
    if mode == "whole":
        return WholeFrame()
    if mode == "detect":
        return face_track.FaceTracker(face_track.make_detector(detector), redetect_every=redetect_every)
    if mode == "landmarks":
        return LandmarkBoxes(annotations)
    raise ConfigError(f"--crop: {mode!r} is not one of whole, detect, landmarks")


def draw(frame, mask, box, result, scheduler_name, reason=""):
    """The overlay frame (RGB): class colours, the face box, the key mark and a status line."""
    from deeplab_face.data.masks import overlay

    picture = overlay(frame, mask)
    if box is not None:
        x0, y0, side = (int(round(v)) for v in box)
        cv2.rectangle(picture, (x0, y0), (x0 + side, y0 + side), (255, 255, 255), 1)
    height, width = picture.shape[:2]
    if result.is_key:
        thickness = max(2, min(height, width) // 80)
        cv2.rectangle(picture, (0, 0), (width - 1, height - 1), KEY_COLOUR, 2 * thickness)
    text = (f"{result.index} {scheduler_name}{' KEY (' + reason + ')' if result.is_key else ''} "
            f"score {result.score:.3g} knob {result.knob:.3g} {result.ms['total']:.0f} ms")
    for line, origin, scale, thickness in status_layout(text, width, height):
        cv2.putText(picture, line, origin, cv2.FONT_HERSHEY_SIMPLEX, scale,
                    KEY_COLOUR if result.is_key else (255, 255, 255), thickness, cv2.LINE_AA)
    return picture


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def stage_lines(checkpoints, scheduler, dff):
    """Lines naming the stages loaded from `checkpoints` and what N was trained on."""
    from eval.runtime import segmenter_stage_dir

    seg = segmenter_stage_dir(checkpoints)   # segmenter_bn when batch norm was re-estimated
    config = _read_json(os.path.join(seg, "config.json"))
    hparams = _read_json(os.path.join(checkpoints, "segmenter", "hparams.json"))
    videos = hparams.get("train_videos") or []
    trained = (f", trained on {len(videos)} video{'s' if len(videos) > 1 else ''} ({', '.join(map(str, videos[:8]))}"
               f"{', ...' if len(videos) > 8 else ''})") if videos else ""
    lines = [f"segmenter: {seg} ({config.get('backbone', 'unknown backbone')}, S = {dff.crop_size}{trained})",
             f"flownet: {os.path.join(checkpoints, 'flownet')} ({dff.flow_resolution}-resolution flow)"]
    if scheduler == "dvsnet":
        lines.append(f"dvsnet: {os.path.join(checkpoints, 'dvsnet')}")
    return lines


def segment_video(video, checkpoints, scheduler="rl", output="segmented.mp4", log="segmented.csv",
                  crop_mode="whole", threshold=None, annotations=None, rl_stage=None, max_frames=None,
                  seed=0, flow_resolution=None, target_aki=None, target_fps=None, budget_gain=None, verbose=1,
                  face_detector="haar", crop_key_change=CROP_KEY_CHANGE, redetect_every=face_track.REDETECT_EVERY):
    """Segments `video` (path or camera index) and writes `output` (mp4v) and `log` (CSV).

    target_aki / target_fps: budget mode (eval.budget): the scheduler's knob, starting from
    `threshold` (or the scheduler's default), is turned online to hold that AKI or model FPS.
    crop_key_change: a crop box that moved more than this from the last key's box forces a key
    (0 or None: never; eval.face_track.CropKeys). face_detector, redetect_every: --crop=detect
    (eval.face_track.FaceTracker).
    Returns {"frames", "keys", "aki", "model_fps", "end_to_end_fps", "output", "log", "knob",
    "saturated_frames", "key_reasons", "face_track"}; model FPS from the runtime's per-stage
    milliseconds (eval.metrics.model_fps), end-to-end FPS from the wall clock; knob: its final value;
    saturated_frames: frames budget mode spent pushing the knob against a bound; key_reasons:
    {reason: keys}; face_track: the tracker's event counts (None unless --crop=detect).
    """
    from eval import budget, metrics

    say = _printer(verbose)
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"--max_frames: must be >= 1, got {max_frames}")
    gain = budget.DEFAULT_GAIN if budget_gain is None else budget_gain
    budget.check_targets(target_aki, target_fps, gain)   # flag errors before any model loads
    check_output(output, "--output")
    check_output(log, "--log")
    boxes = make_box_source(crop_mode, annotations, face_detector, redetect_every)
    capture = open_video(video)
    outputs = None
    try:
        frames = read_frames(capture, video, max_frames)
        first = next(frames)      # a video with no decodable frame fails before anything is written
        reported = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        reported = reported if reported > 0 else None   # cameras report none
        total = min(reported, max_frames) if reported and max_frames else reported
        outputs = Outputs(output, log, capture.get(cv2.CAP_PROP_FPS) or 30.0, first.shape, CSV_COLUMNS)
        dff, runtime = _load_runtime(checkpoints, scheduler, threshold, rl_stage, seed, flow_resolution,
                                     target_aki, target_fps, gain, say)
        start = time.perf_counter()
        counts = _segment_frames(itertools.chain([first], frames), runtime, boxes, outputs, dff.crop_size,
                                 scheduler, crop_key_change, total, verbose)
    finally:
        capture.release()
        if outputs is not None:
            outputs.close()   # a run that failed before its first frame leaves no empty files behind
    seconds = time.perf_counter() - start
    rows, keys, ms, reasons = counts
    if reported and rows < total:
        say(f"warning: {video}: only {rows} of the {reported} frames its header reports could be decoded "
            f"(a truncated or damaged file?); {output} and {log} hold those {rows}")
    controller, tracker = runtime.budget, getattr(boxes, "events", None)
    summary = dict(frames=rows, keys=keys, aki=rows / max(keys, 1), model_fps=metrics.model_fps(ms),
                   end_to_end_fps=metrics.end_to_end_fps(rows, seconds), output=output, log=log,
                   knob=controller.knob, saturated_frames=controller.saturated_frames, key_reasons=dict(reasons),
                   face_track=None if tracker is None else dict(tracker))
    for line in summary_lines(summary, controller):
        say(line)
    return summary


def _printer(verbose):
    """The command's `say`: progress lines when verbose; warnings always, on stderr."""
    def say(line):
        if line.startswith("warning"):
            print(line, file=sys.stderr, flush=True)
        elif verbose:
            print(line, flush=True)
    return say


def _load_runtime(checkpoints, scheduler, threshold, rl_stage, seed, flow_resolution, target_aki, target_fps,
                  gain, say):
    """(dff, warmed-up `DynamicSegmenter`) of the stages under `checkpoints`: its scheduler wrapped in
    `face_track.CropKeys` (crop keys) and its budget controller (`runtime.budget`, active in budget mode)."""
    from eval import budget
    from eval.runtime import DynamicSegmenter

    dff, key_scheduler = load_pipeline(checkpoints, scheduler, threshold, rl_stage, seed, flow_resolution, log=say)
    for line in stage_lines(checkpoints, scheduler, dff):
        say(line)
    controller = budget.BudgetController(key_scheduler, target_aki, target_fps, gain=gain, log=say)
    if controller.active:
        say(f"budget mode: target {'AKI %g' % target_aki if target_aki else '%g FPS (model time)' % target_fps}, "
            f"{scheduler} {controller.knob_spec.label} from {key_scheduler.threshold:g} "
            f"in [{controller.knob_spec.low:g}, {controller.knob_spec.high:g}], gain {gain:g}")
    runtime = DynamicSegmenter(dff, face_track.CropKeys(key_scheduler), budget=controller)
    runtime.warm_up()   # compile before the clock starts
    return dff, runtime


def _segment_frames(frames, runtime, boxes, outputs, size, scheduler, crop_key_change, total, verbose):
    """Crops, segments, draws and logs every frame; returns (rows, keys, per-frame model ms, key reasons)."""
    import keras

    keys_of, controller = runtime.scheduler, runtime.budget
    rows, keys, ms, sum_ms, key_box, reasons = 0, 0, [], 0.0, None, collections.Counter()
    bar = keras.utils.Progbar(total, verbose=verbose, stateful_metrics=["aki", "model_fps", "knob"])
    for index, frame in enumerate(frames):
        box = boxes.box(frame, index)
        keys_of.force = bool(crop_key_change) and face_track.box_change(box, key_box) > crop_key_change
        state = {"box": box}

        def key_crop(frame=frame, index=index, state=state):   # a key frame: the detector corrects the box
            state["box"] = boxes.redetect(frame, index)
            return crop(frame, state["box"], size)

        result = runtime.step(crop(frame, box, size), key_frame_fn=key_crop)
        reason = keys_of.reason(result)
        if result.is_key:
            key_box, reasons[reason] = state["box"], reasons[reason] + 1
        picture = draw(frame, paste(result.mask, state["box"], frame.shape), state["box"], result,
                       scheduler, reason)
        outputs.write(index, picture, csv_row(result, controller, reason, state["box"]))
        rows, keys = rows + 1, keys + int(result.is_key)
        ms.append(result.ms["total"])   # one float a frame: a long video stays small
        sum_ms += ms[-1]                  # running sum: no O(frames) pass per frame
        bar.update(rows, [("aki", rows / keys), ("model_fps", 1000.0 * rows / max(sum_ms, 1e-9)),
                          ("knob", controller.knob)])
    return rows, keys, ms, reasons


def csv_row(result, controller, reason, box):
    """One CSV_COLUMNS row: the runtime's `FrameResult`, the budget controller's state, the key
    reason and the crop box (empty without one)."""
    return ([result.index, int(result.is_key), f"{result.score:.6g}", f"{result.flow_magnitude:.6g}"]
            + [f"{result.ms[s]:.3f}" for s in ("flow", "policy", "key", "warp_task", "total")]
            + [f"{result.knob:.6g}", f"{controller.running_aki:.4g}", f"{controller.running_fps:.4g}",
               controller.bound, reason]
            + (["", "", ""] if box is None else [f"{v:.2f}" for v in box]))


def summary_lines(summary, controller):
    """The run's closing lines: frames, keys by reason, FPS and outputs; face track; budget mode."""
    reasons, tracker = summary["key_reasons"], summary["face_track"]
    lines = [f"{summary['frames']} frames, {summary['keys']} keys (AKI {summary['aki']:.1f}; "
             f"{', '.join(f'{n} {r}' for r, n in sorted(reasons.items()))}), {summary['model_fps']:.1f} FPS "
             f"model time, {summary['end_to_end_fps']:.1f} FPS end to end -> {summary['output']}, {summary['log']}"]
    if tracker is not None:
        lines.append("face track: " + ", ".join(f"{k} {v}" for k, v in tracker.items()))
    if controller.active:
        lines.append(f"budget mode: final {controller.knob_spec.label} {controller.knob:.4g}, running AKI "
                     f"{controller.running_aki:.3g}, running {controller.running_fps:.3g} FPS; knob at a bound "
                     f"on {controller.saturated_frames} of {summary['frames']} frames")
    return lines


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
                      "to S; a face detector (--face_detector) with the box tracked on every frame (optical "
                      "flow of corner points), re-detected when lost, every --redetect_every frames and on "
                      "keys, and smoothed; or 300VW landmarks from --annotations.")
    flags.DEFINE_enum("face_detector", "haar", list(face_track.DETECTORS), "--crop=detect: OpenCV's Haar "
                      "cascade, or dlib's HOG detector (optional extra: pip install --no-deps -r requirements-annotate.txt).")
    flags.DEFINE_integer("redetect_every", face_track.REDETECT_EVERY, "--crop=detect: frames between the "
                         "detector's drift checks of the tracked box.", lower_bound=1)
    flags.DEFINE_float("crop_key_change", CROP_KEY_CHANGE, "A frame whose crop box moved from the last key's "
                       "box by more than this fraction of its side (centre shift or size change) is a key; "
                       "0 turns crop keys off.", lower_bound=0.0)
    flags.DEFINE_float("threshold", None, "The scheduler's knob (rl: tau on P(key); dvsnet: target in "
                       "percent; flow_magnitude: pixels; fixed/random: interval K). Default: the scheduler's; "
                       "rl: the policy's calibrated operating_threshold (config.json), else its training tau "
                       "with a warning. In budget mode: the knob's starting value.", lower_bound=0.0)
    flags.DEFINE_float("target_aki", None, "Budget mode: turn the knob online so that the running AKI (frames "
                       "per key) stays near this (>= 1). Knob bounds: rl tau [1e-6, 1-1e-6], dvsnet [0.01, "
                       "99.99] %, flow_magnitude [1e-3, 1e3] px, fixed/random K [1, 1e4]; a target past them "
                       "leaves the knob at its bound, said in the output and the CSV's knob_bound.", lower_bound=1.0)
    flags.DEFINE_float("target_fps", None, "Budget mode: hold this model-time FPS (> 0) instead (eval.metrics."
                       "model_fps): converted to a key rate from the running median ms of the key and non-key "
                       "paths, then as --target_aki. Not with --target_aki.")
    flags.DEFINE_float("budget_gain", None, "Budget mode: knob step (> 0) per missing or extra key, in log "
                       "(logit for tau and the dvsnet target) units; higher settles faster and jitters more. "
                       "Default eval.budget.DEFAULT_GAIN.")
    flags.DEFINE_string("annotations", None, "For --crop=landmarks: folder of 300VW .pts files (000001.pts = frame 1).")
    flags.DEFINE_string("rl_stage", None, "RL stage under --checkpoints: rl_eta<limit> or the bare limit "
                        f"(default {DEFAULT_RL_STAGE} if present, else the lowest limit; a missing one is an error).")
    flags.DEFINE_integer("max_frames", None, "Stop after this many frames (>= 1).", lower_bound=1)
    flags.DEFINE_enum("flow_resolution", None, ["full", "half"], "Flow-net input size (default: F's training setting).")
    flags.DEFINE_integer("seed", 0, "Seed (random scheduler).", lower_bound=0)
    for name in ("target_fps", "budget_gain"):
        flags.register_validator(name, lambda value: value is None or (math.isfinite(value) and value > 0),
                                 message=f"--{name} must be a number > 0")
    flags.mark_flags_as_mutual_exclusive(["target_aki", "target_fps"])


def main(argv):
    FLAGS = flags.FLAGS
    cli.check_command_line(argv, required=("video", "checkpoints"))
    import keras
    keras.utils.set_random_seed(FLAGS.seed)
    segment_video(FLAGS.video, FLAGS.checkpoints, FLAGS.scheduler, FLAGS.output, FLAGS.log, FLAGS.crop,
                  FLAGS.threshold, FLAGS.annotations, FLAGS.rl_stage, FLAGS.max_frames, FLAGS.seed,
                  FLAGS.flow_resolution, FLAGS.target_aki, FLAGS.target_fps, FLAGS.budget_gain,
                  face_detector=FLAGS.face_detector, crop_key_change=FLAGS.crop_key_change,
                  redetect_every=FLAGS.redetect_every)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
