"""eval.face_track: the tracked face box of segment_video --crop=detect, and crop keys (issue 12 item 3).

The moving face is the astronaut photo's face (scikit-image, public domain), cut round and slid over
a fixed textured background: a real face for the detectors, with its true box known on every frame.
"""
import math
import sys

import cv2
import numpy as np
import pytest

from deeplab_face.errors import ConfigError
from eval import face_track as ft


def moving_face_frames(frames=30, width=240, height=180, shift=(80, 20), face_side=80, seed=0):
    """(RGB uint8 frames (H, W, 3), true square face boxes (x0, y0, side)): the face moves by `shift`
    pixels, linearly, from (20, 20) + its margin; `face_side` is the side of its landmark box."""
    from deeplab_face.data.crop import square_box
    from deeplab_face.data.demo_clip import astronaut_photo, astronaut_points

    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), (0, 0), 2)
    x0, y0, x1, y1 = square_box(astronaut_points())         # the face's landmark box in the photo
    pad = int(0.3 * (x1 - x0))
    patch = astronaut_photo()[y0 - pad:y1 + pad, x0 - pad:x1 + pad]
    size = int(round(face_side * patch.shape[0] / (x1 - x0)))
    patch = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    yy, xx = np.mgrid[:size, :size]
    alpha = (((xx - size / 2) ** 2 + (yy - size / 2) ** 2) < (0.48 * size) ** 2).astype(np.float32)[..., None]
    out, truth = [], []
    for t in range(frames):
        f = t / max(1, frames - 1)
        px, py = int(round(20 + shift[0] * f)), int(round(20 + shift[1] * f))
        image = background.astype(np.float32)
        region = image[py:py + size, px:px + size]
        region[:] = alpha * patch + (1 - alpha) * region
        out.append(image.astype(np.uint8))
        truth.append((px + (size - face_side) / 2, py + (size - face_side) / 2, float(face_side)))
    return out, truth


def _centre(box):
    return np.array([box[0] + box[2] / 2.0, box[1] + box[2] / 2.0])


def test_the_tracked_box_follows_a_moving_face_between_detections():
    frames, truth = moving_face_frames(30, shift=(80, 20))
    tracker = ft.FaceTracker(ft.make_detector("haar"), redetect_every=1000)   # one detection, then tracking only
    boxes = [tracker.box(frame, i) for i, frame in enumerate(frames)]
    error = np.array([_centre(b) - _centre(t) for b, t in zip(boxes, truth)])
    assert np.abs(error - error[0]).max() < 2.0                    # 82 px of motion, followed to 2 px
    assert abs(boxes[-1][2] / boxes[0][2] - 1.0) < 0.05            # and the size kept
    assert np.hypot(*(_centre(truth[-1]) - _centre(boxes[0]))) > 75  # a box left where it was would be off
    assert tracker.events == dict(detections=1, found=1, tracked=29, lost=0, drift=0, held=0)


def test_a_lost_track_redetects_and_a_drift_check_replaces_or_smooths_the_box():
    first, truth_a = moving_face_frames(12, shift=(10, 0))
    second, truth_b = moving_face_frames(12, shift=(10, 0))
    second = [np.roll(f, 100, axis=1) for f in second]               # the face jumps 100 px right
    truth = truth_a + [(x + 100, y, s) for x, y, s in truth_b]
    tracker = ft.FaceTracker(ft.make_detector("haar"), redetect_every=1000)
    boxes = [tracker.box(frame, i) for i, frame in enumerate(first + second)]
    error = np.array([_centre(b) - _centre(t) for b, t in zip(boxes, truth)])
    assert np.abs(error - error[0]).max() < 4.0                    # on the face again at the jump itself
    assert tracker.events["lost"] == 1 and tracker.events["detections"] == 2

    class Fixed:    # a detector whose answer the test sets
        rect = None

        def detect(self, rgb):
            return self.rect

    detector = Fixed()
    tracker = ft.FaceTracker(detector, redetect_every=5, margin=0.0)
    frames, _ = moving_face_frames(12, shift=(0, 0))                 # a still face: the track stays put
    detector.rect = (50.0, 50.0, 60.0, 60.0)
    assert tracker.box(frames[0], 0) == (50.0, 50.0, 60.0)
    detector.rect = (56.0, 50.0, 60.0, 60.0)                       # a near detection at the check: EMA
    boxes = [tracker.box(frames[i], i) for i in range(1, 6)]
    assert boxes[-2][0] == pytest.approx(50.0, abs=0.5) and boxes[-1][0] == pytest.approx(53.0, abs=0.5)
    detector.rect = (150.0, 90.0, 40.0, 40.0)                      # far away at the next check: replaced
    boxes = [tracker.box(frames[i], i) for i in range(6, 11)]
    assert boxes[-1] == (150.0, 90.0, 40.0) and tracker.events["drift"] == 1
    detector.rect = (152.0, 90.0, 40.0, 40.0)                      # a key frame corrects at once
    assert tracker.redetect(frames[11], 11)[0] == pytest.approx(151.0, abs=0.5)


def test_no_face_gives_the_centred_square_and_the_detector_is_retried_less_often():
    tracker = ft.FaceTracker(ft.make_detector("haar"), redetect_every=8)
    blank = np.zeros((90, 120, 3), np.uint8)
    boxes = [tracker.box(blank, i) for i in range(30)]
    assert all(b == (15.0, 0.0, 90.0) for b in boxes)
    # tries at frames 0, 2, 6, 14, 22: the wait doubles up to redetect_every
    assert tracker.events["detections"] == 5 and tracker.events["found"] == 0 and tracker.events["held"] == 30


def test_box_change_and_crop_key_reasons():
    assert ft.box_change((10.0, 10.0, 100.0), (10.0, 10.0, 100.0)) == 0.0
    assert ft.box_change((35.0, 10.0, 100.0), (10.0, 10.0, 100.0)) == pytest.approx(0.25)   # shift
    assert ft.box_change((0.0, 0.0, 120.0), (10.0, 10.0, 100.0)) == pytest.approx(0.2)      # size
    assert ft.box_change(None, (10.0, 10.0, 100.0)) == 0.0

    class Scheduler:
        name, threshold = "fixed", 10

        def __init__(self):
            self.recorded = []

        def decide(self, observation):
            return observation["frame_index"] % 2 == 0, 1.0

        def record(self, is_key):
            self.recorded.append(is_key)

    inner = Scheduler()
    keys = ft.CropKeys(inner)
    keys.threshold = 7                       # the budget controller turns the real scheduler's knob
    assert inner.threshold == 7 and keys.name == "fixed"
    from eval.runtime import FrameResult

    def reason(index, force):
        keys.force = force
        is_key, _ = keys.decide({"frame_index": index})
        keys.record(is_key)
        return keys.reason(FrameResult(index, None, is_key, 1.0, 0.0, {}, 7))

    assert [reason(0, False), reason(1, False), reason(2, False), reason(3, True), reason(4, True)] == \
        ["first frame", "", "scheduler", "crop", "scheduler+crop"]
    assert inner.recorded == [True, False, True, True, True]   # the scheduler's history holds the crop key


def test_detectors_by_name():
    frames, truth = moving_face_frames(1)
    rect = ft.make_detector("haar").detect(frames[0])
    assert rect is not None and abs(rect[0] + rect[2] / 2 - _centre(truth[0])[0]) < 8
    with pytest.raises(ConfigError, match="--face_detector: 'yunet' is not one of haar, dlib"):
        ft.make_detector("yunet")


def test_dlib_detector_or_a_clear_error(monkeypatch):
    try:
        import dlib  # noqa: F401
    except ImportError:
        dlib = None
    if dlib is not None:
        frames, truth = moving_face_frames(1)
        x, y, w, h = ft.make_detector("dlib").detect(frames[0])
        assert math.hypot(x + w / 2 - _centre(truth[0])[0], y + h / 2 - _centre(truth[0])[1]) < 10
    monkeypatch.setitem(sys.modules, "dlib", None)    # as without the optional extra
    with pytest.raises(ConfigError, match=r"^--face_detector=dlib needs dlib, which the core install leaves out: "
                                          r"install the optional extra with `\.venv/bin/pip install --no-deps -r "
                                          r"requirements-annotate\.txt`$"):
        ft.make_detector("dlib")
