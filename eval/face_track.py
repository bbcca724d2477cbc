"""The face box of `eval.segment_video --crop=detect`: detect, track on every frame, re-detect, smooth.

    tracker = FaceTracker(make_detector("haar"))
    for index, frame in enumerate(frames):        # RGB uint8 (H, W, 3)
        box = tracker.box(frame, index)           # square (x0, y0, side) in frame pixels
        ...                                       # on a key frame: box = tracker.redetect(frame, index)

A face detector gives the first box. From then on the box follows the face on every frame: corner
points inside the face (Shi-Tomasi) are tracked with pyramidal Lucas-Kanade optical flow from the
previous frame, kept only when the backward track returns to where they started, and a similarity
(shift, scale, rotation; RANSAC) fitted to them moves and scales the box. That costs about a
millisecond, against tens of milliseconds for a detector, so the detector runs only:
- when the track is lost (too few points survive, or no similarity fits): the box jumps to the new
  detection, or stays where it was until a face is found again;
- every `redetect_every` frames, to catch drift: a detection that overlaps the tracked box by less
  than `drift_iou` replaces it (the track had drifted off, or onto another face); otherwise the box
  moves toward it by `smoothing` (an exponential moving average that keeps the detector's frame-to-
  frame jitter out of the crop);
- on key frames (`redetect`, called by segment_video): a key frame starts a new crop anyway, so it
  is the cheapest moment to correct the box.
Without any detection yet the box is the centred square of the frame.

Detectors (`make_detector`): `haar`, OpenCV's bundled frontal-face Haar cascade (the default), and
`dlib`, dlib's HOG frontal-face detector (the optional annotate extra, requirements-annotate.txt; without it, one error line naming
the install command).
A detector is any object with `detect(rgb) -> (x, y, w, h) | None` (the largest face, frame
pixels). OpenCV's YuNet (`cv2.FaceDetectorYN`) needs an ONNX model file that opencv-python(-headless)
does not ship, so it is not offered (README). Detection runs on a copy of the frame scaled down to
at most `DETECT_SIDE` pixels on its long side.
"""
import math
import os

import cv2
import numpy as np

from deeplab_face.landmarks import import_dlib
from deeplab_face.data.crop import CROP_MARGIN
from deeplab_face.errors import ConfigError, DataError

HAAR_CASCADE = "haarcascade_frontalface_default.xml"   # bundled with opencv-python(-headless) 4.x
DETECT_SIDE = 320         # detectors see the frame scaled to this long side (or less)
DETECTORS = ("haar", "dlib")

BOX_SMOOTHING = 0.5       # weight of a new detection in the box (the rest is the tracked box)
DRIFT_IOU = 0.5           # a detection overlapping the tracked box less than this replaces it
REDETECT_EVERY = 15       # frames between drift checks
MAX_POINTS = 80           # corner points tracked inside the face
MIN_POINTS = 8            # fewer surviving points: the track is lost
FB_ERROR = 1.0            # forward-backward error allowed, in pixels per 100 px of box side
LK_PARAMS = dict(winSize=(15, 15), maxLevel=3,
                 criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))


def _scaled_gray(rgb, side=DETECT_SIDE):
    """(gray image scaled so its long side is at most `side`, the factor frame px per scaled px)."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    factor = max(1.0, max(gray.shape) / float(side))
    if factor > 1.0:
        gray = cv2.resize(gray, (round(gray.shape[1] / factor), round(gray.shape[0] / factor)),
                          interpolation=cv2.INTER_AREA)
    return gray, factor


class HaarDetector:
    """OpenCV's frontal-face Haar cascade; the largest face."""

    name = "haar"

    def __init__(self, side=DETECT_SIDE):
        path = os.path.join(cv2.data.haarcascades, HAAR_CASCADE)
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise DataError(f"{path}: cannot load OpenCV's Haar face cascade")
        self.side = side

    def detect(self, rgb):
        gray, factor = _scaled_gray(rgb, self.side)
        min_side = max(20, min(gray.shape) // 12)
        faces = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
        if len(faces) == 0:
            return None
        x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
        return tuple(float(v) * factor for v in (x, y, w, h))


class DlibDetector:
    """dlib's HOG frontal-face detector (the optional annotate extra); the largest face."""

    name = "dlib"

    def __init__(self, side=DETECT_SIDE):
        self.detector = import_dlib("--face_detector=dlib").get_frontal_face_detector()
        self.side = side

    def detect(self, rgb):
        factor = max(1.0, max(rgb.shape[:2]) / float(self.side))
        small = rgb if factor == 1.0 else cv2.resize(
            rgb, (round(rgb.shape[1] / factor), round(rgb.shape[0] / factor)), interpolation=cv2.INTER_AREA)
        faces = self.detector(np.ascontiguousarray(small), 1)   # upsample once: faces down to ~40 px
        if len(faces) == 0:
            return None
        f = max(faces, key=lambda r: r.width() * r.height())
        return tuple(float(v) * factor for v in (f.left(), f.top(), f.width(), f.height()))


def make_detector(name="haar"):
    """A face detector by name (DETECTORS)."""
    if name == "haar":
        return HaarDetector()
    if name == "dlib":
        return DlibDetector()
    raise ConfigError(f"--face_detector: {name!r} is not one of {', '.join(DETECTORS)}")


def face_box(rect, margin=CROP_MARGIN):
    """The square crop box (x0, y0, side) of a detector rectangle (x, y, w, h): the crop recipe's
    (1 + margin) x mean side, centred on the rectangle."""
    x, y, w, h = rect
    side = (1.0 + margin) * (w + h) / 2.0
    return (x + w / 2.0 - side / 2.0, y + h / 2.0 - side / 2.0, side)


def box_iou(a, b):
    """Intersection over union of two square boxes (x0, y0, side)."""
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[2], b[0] + b[2], b[1] + b[2]
    inter = max(0.0, min(ax1, bx1) - max(a[0], b[0])) * max(0.0, min(ay1, by1) - max(a[1], b[1]))
    return inter / (a[2] ** 2 + b[2] ** 2 - inter)


def box_change(box, reference):
    """How far `box` moved from `reference`, as a fraction of the reference side: the larger of the
    centre's shift (either axis) and the relative change of the side."""
    if box is None or reference is None:
        return 0.0
    shift = max(abs(box[0] + box[2] / 2 - reference[0] - reference[2] / 2),
                abs(box[1] + box[2] / 2 - reference[1] - reference[2] / 2))
    return max(shift / reference[2], abs(box[2] / reference[2] - 1.0))


def _centred_square(shape):
    """The box used before any face is found: the largest centred square of the frame."""
    height, width = shape[:2]
    side = float(min(height, width))
    return ((width - side) / 2.0, (height - side) / 2.0, side)


class FaceTracker:
    """The per-frame face box (module docstring). `events` counts what happened: detections (the
    detector was run), found (it found a face), tracked (frames moved by the point track), lost,
    drift (a drift check replaced the box), held (frames that kept the box: no track, no face)."""

    def __init__(self, detector, margin=CROP_MARGIN, smoothing=BOX_SMOOTHING, drift_iou=DRIFT_IOU,
                 redetect_every=REDETECT_EVERY):
        self.detector, self.margin, self.smoothing = detector, margin, smoothing
        self.drift_iou, self.redetect_every = drift_iou, redetect_every
        self.current = None            # the box (x0, y0, side)
        self.points = None             # float32 (N, 1, 2) in frame pixels
        self.gray = None               # the last frame, gray
        self.last_detection = None     # index of the last frame the detector ran on
        self.retry = 1                 # frames to wait before the next detection while no face is seen
        self.seeded = 0                # points found at the last seeding
        self.events = dict.fromkeys(("detections", "found", "tracked", "lost", "drift", "held"), 0)

    # -- the steps
    def _detect(self, frame, index):
        self.events["detections"] += 1
        self.last_detection = index
        rect = self.detector.detect(frame)
        if rect is not None:
            self.events["found"] += 1
            return face_box(rect, self.margin)
        return None

    def _seed(self):
        """Corner points inside the face: the central part of the box, without the crop margin."""
        x0, y0, side = self.current
        inner = side / (1.0 + self.margin) * 0.8
        cx, cy = x0 + side / 2.0, y0 + side / 2.0
        height, width = self.gray.shape
        mask = np.zeros((height, width), np.uint8)
        left, top = max(0, int(cx - inner / 2)), max(0, int(cy - inner / 2))
        right, bottom = min(width, int(cx + inner / 2) + 1), min(height, int(cy + inner / 2) + 1)
        self.points = None
        if right - left < 4 or bottom - top < 4:
            return
        mask[top:bottom, left:right] = 255
        points = cv2.goodFeaturesToTrack(self.gray, MAX_POINTS, qualityLevel=0.01,
                                         minDistance=max(2.0, inner / 20.0), mask=mask, blockSize=5)
        self.points = None if points is None else points.astype(np.float32)
        self.seeded = 0 if points is None else len(points)

    def _track(self, gray):
        """Moves the box with the points from the last frame to `gray`; False when the track is lost."""
        if self.points is None or len(self.points) < MIN_POINTS:
            return False
        forward, status, _ = cv2.calcOpticalFlowPyrLK(self.gray, gray, self.points, None, **LK_PARAMS)
        if forward is None:
            return False
        back, back_status, _ = cv2.calcOpticalFlowPyrLK(gray, self.gray, forward, None, **LK_PARAMS)
        error = np.linalg.norm((back - self.points).reshape(-1, 2), axis=1)
        good = (status.ravel() == 1) & (back_status.ravel() == 1) & (error < FB_ERROR * max(1.0, self.current[2] / 100))
        if good.sum() < MIN_POINTS:
            return False
        old, new = self.points[good].reshape(-1, 2), forward[good].reshape(-1, 2)
        matrix, inliers = cv2.estimateAffinePartial2D(old, new, method=cv2.RANSAC, ransacReprojThreshold=2.0)
        if matrix is None or inliers is None or int(inliers.sum()) < MIN_POINTS:
            return False
        scale = math.hypot(matrix[0, 0], matrix[1, 0])
        if not 0.7 < scale < 1.4:        # a face does not change size this much in a frame
            return False
        x0, y0, side = self.current
        cx, cy = matrix @ np.array([x0 + side / 2.0, y0 + side / 2.0, 1.0])
        side *= scale
        self.current = (float(cx - side / 2.0), float(cy - side / 2.0), float(side))
        self.points = new[inliers.ravel() == 1].reshape(-1, 1, 2).astype(np.float32)
        return True

    def _correct(self, found):
        """A new detection `found` (or None) against the current box: replace, blend or keep."""
        if found is None:
            return
        if self.current is None or box_iou(found, self.current) < self.drift_iou:
            if self.current is not None:
                self.events["drift"] += 1
            self.current = found
        else:
            a = self.smoothing
            self.current = tuple(float(a * f + (1.0 - a) * c) for f, c in zip(found, self.current))
        self._seed()

    # -- the interface
    def box(self, frame, index):
        """The box for frame `index` (RGB uint8 (H, W, 3)); call it once per frame, in order."""
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if self.current is None:                               # first frame (or nothing found yet)
            self.gray = gray
            if self.last_detection is None or index - self.last_detection >= self.retry:
                self._correct(self._detect(frame, index))
                self.retry = 1 if self.current is not None else min(2 * self.retry, self.redetect_every)
            if self.current is None:
                self.events["held"] += 1
                return _centred_square(gray.shape)
            return self.current
        tracked = self._track(gray)
        self.gray = gray
        if tracked:
            self.events["tracked"] += 1
            if len(self.points) < max(MIN_POINTS * 2, self.seeded // 2):
                self._seed()                                   # top the points up
            if index - self.last_detection >= self.redetect_every:
                self._correct(self._detect(frame, index))      # the drift check
            return self.current
        if self.points is not None:                            # the track was just lost
            self.events["lost"] += 1
            self.points = None
            self.retry = 1
        if index - self.last_detection >= self.retry:
            found = self._detect(frame, index)
            if found is not None:
                self.current = found                           # a lost track: jump to the face
                self._seed()
                self.retry = 1
                return self.current
            self.retry = min(2 * self.retry, self.redetect_every)
        self.events["held"] += 1
        return self.current

    def redetect(self, frame, index):
        """On a key frame (after `box` for the same frame): the detector corrects the box now."""
        if self.gray is None:
            return self.box(frame, index)
        if self.last_detection != index:
            self._correct(self._detect(frame, index))
        return self.current if self.current is not None else _centred_square(frame.shape)


class CropKeys:
    """The scheduler as the runtime sees it, plus crop keys: with `force` set, the frame is a key
    whatever the scheduler decided (`said` keeps its own decision; its history records the key)."""

    def __init__(self, scheduler):
        object.__setattr__(self, "inner", scheduler)
        object.__setattr__(self, "force", False)
        object.__setattr__(self, "said", False)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __setattr__(self, name, value):
        if name in ("force", "said"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.inner, name, value)

    def decide(self, observation):
        is_key, score = self.inner.decide(observation)
        self.said = bool(is_key)
        return self.said or self.force, score

    def reason(self, result):
        """Why `result` is a key ("" when it is not)."""
        if not result.is_key:
            return ""
        if result.index == 0:
            return "first frame"
        return "scheduler+crop" if self.said and self.force else "scheduler" if self.said else "crop"
