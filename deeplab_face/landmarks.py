"""68 iBUG landmarks of a face in a frame with dlib (the optional annotate extra, requirements-annotate.txt):
`Landmarker`, the extra's install command and where its 68-point model file is. Shared by the
deeplab_face.annotate_video command, the real-face clip (deeplab_face.data.real_clip) and the face
tracker (eval.face_track); dlib is imported only when a Landmarker is made."""
import importlib.util
import os

import cv2
import numpy as np

from deeplab_face.errors import ConfigError, DataError

ANNOTATE_INSTALL = ".venv/bin/pip install --no-deps -r requirements-annotate.txt"
PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
DETECT_SIDE = 480          # the detector sees the frame scaled to this long side (or less), upsampled once
def import_dlib(what):
    """dlib, or a ConfigError naming the install command of the optional extra."""
    try:
        import dlib
    except ImportError:
        raise ConfigError(f"{what} needs dlib, which the core install leaves out: install the optional "
                          f"extra with `{ANNOTATE_INSTALL}`") from None
    return dlib


def default_predictor():
    """The 68-point model file of the installed `face-recognition-models` package, or None.

    Found through the import system without importing the package (its __init__ needs setuptools'
    pkg_resources, which a venv may lack)."""
    spec = importlib.util.find_spec("face_recognition_models")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, "models", PREDICTOR_FILE)
        if os.path.isfile(path):
            return path
    return None


class Landmarker:
    """68 iBUG landmarks of the largest face in an RGB frame: `points(rgb) -> float32 (68, 2)` 0-based
    (x, y), or None when no face is found."""

    def __init__(self, predictor=None, detect_side=DETECT_SIDE):
        dlib = import_dlib("deeplab_face.annotate_video")
        predictor = predictor or default_predictor()
        if predictor is None:
            raise ConfigError(f"--predictor: no {PREDICTOR_FILE} (the face-recognition-models package is not "
                              f"installed): install the optional extra with `{ANNOTATE_INSTALL}`, or pass its path")
        if not os.path.isfile(predictor):
            raise ConfigError(f"--predictor: {predictor}: no such file")
        try:
            self.predictor = dlib.shape_predictor(predictor)
        except RuntimeError as e:
            raise DataError(f"{predictor}: not a dlib shape predictor ({e})") from None
        self.detector = dlib.get_frontal_face_detector()
        self.rectangle = dlib.rectangle
        self.predictor_path, self.detect_side = predictor, detect_side

    def face(self, rgb):
        """The largest face as (left, top, right, bottom) in frame pixels, or None."""
        factor = max(1.0, max(rgb.shape[:2]) / float(self.detect_side))
        small = rgb if factor == 1.0 else cv2.resize(
            rgb, (round(rgb.shape[1] / factor), round(rgb.shape[0] / factor)), interpolation=cv2.INTER_AREA)
        faces = self.detector(np.ascontiguousarray(small), 1)
        if len(faces) == 0:
            return None
        f = max(faces, key=lambda r: r.width() * r.height())
        return tuple(int(round(v * factor)) for v in (f.left(), f.top(), f.right(), f.bottom()))

    def points(self, rgb):
        box = self.face(rgb)
        if box is None:
            return None
        shape = self.predictor(np.ascontiguousarray(rgb), self.rectangle(*box))
        return np.array([(p.x, p.y) for p in shape.parts()], np.float32)
