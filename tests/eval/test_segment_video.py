"""eval.segment_video end to end on a generated 20-frame face video with tiny random-weight stages."""
import csv
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from deeplab_face.errors import CheckpointError, DataError
from eval import segment_video as sv
from tests.eval.test_runtime import tiny_checkpoints  # noqa: F401

FRAMES = 20


@pytest.fixture(scope="module")
def face_video(tmp_path_factory):
    from deeplab_face.data.synthetic import write_synthetic_video

    folder = tmp_path_factory.mktemp("video") / "001"
    write_synthetic_video(folder, FRAMES, size=96, seed=4)
    return str(folder / "vid.avi"), str(folder / "annot")


def _read_log(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _count_frames(path):
    capture = cv2.VideoCapture(path)
    count, shape = 0, None
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        count, shape = count + 1, frame.shape
    capture.release()
    return count, shape


def test_whole_frame_fixed_interval(tmp_path, face_video, tiny_checkpoints):  # noqa: F811
    out, log = str(tmp_path / "out.mp4"), str(tmp_path / "out.csv")
    summary = sv.segment_video(face_video[0], tiny_checkpoints, "fixed", out, log, crop_mode="whole",
                               threshold=6, verbose=0)
    rows = _read_log(log)
    assert list(rows[0]) == list(sv.CSV_COLUMNS) and len(rows) == FRAMES
    assert [int(r["frame"]) for r in rows] == list(range(FRAMES))
    assert [i for i, r in enumerate(rows) if r["is_key"] == "1"] == [0, 6, 12, 18]
    for r in rows:
        stages = sum(float(r[f"ms_{s}"]) for s in ("flow", "policy", "key", "warp_task"))
        assert float(r["ms_total"]) == pytest.approx(stages, abs=0.01) and float(r["ms_total"]) > 0
    assert summary["frames"] == FRAMES and summary["keys"] == 4 and summary["aki"] == 5.0
    assert _count_frames(out) == (FRAMES, (96, 96, 3))


def test_landmark_and_detector_crops_with_learned_schedulers(tmp_path, face_video, tiny_checkpoints):  # noqa: F811
    video, annotations = face_video
    for mode, scheduler in (("landmarks", "rl"), ("detect", "dvsnet")):
        out, log = str(tmp_path / f"{mode}.mp4"), str(tmp_path / f"{mode}.csv")
        sv.segment_video(video, tiny_checkpoints, scheduler, out, log, crop_mode=mode,
                         annotations=annotations, max_frames=12, verbose=0)
        rows = _read_log(log)
        assert len(rows) == 12 and rows[0]["is_key"] == "1"
        assert all(float(r["ms_flow"]) > 0 and float(r["ms_policy"]) > 0 for r in rows[1:])
        assert _count_frames(out)[0] == 12


def test_boxes_crop_and_paste_back():
    frame = np.zeros((60, 80, 3), np.uint8)
    frame[10:30, 20:40] = 200
    box = (20.0, 10.0, 20.0)    # exactly the bright square
    patch = sv.crop(frame, box, 33)
    assert patch.shape == (33, 33, 3) and patch[2:-2, 2:-2].min() > 150
    mask = sv.paste(np.ones((33, 33), np.uint8), box, frame.shape)
    assert mask.shape == (60, 80) and mask[10:30, 20:40].all() and mask.sum() == 400
    outside = sv.crop(frame, (-10.0, -10.0, 20.0), 21)     # half outside: grey padding
    assert outside[0, 0, 0] == 128 and outside[-1, -1, 0] == 0
    marked = sv.LandmarkBoxes(os.path.dirname(__file__))    # a folder without .pts files
    with pytest.raises(DataError, match="000001.pts"):
        marked.box(frame, 0)


def test_haar_detector_box_is_smoothed(face_video):
    source = sv.HaarFaceBox()
    first = source.redetect(np.zeros((90, 120, 3), np.uint8), 0)   # nothing found: centred square
    assert first == (15.0, 0.0, 90.0)
    source.current = (10.0, 10.0, 50.0)
    source.detect = lambda frame: (20.0, 10.0, 50.0)
    assert source.redetect(None, 1) == (15.0, 10.0, 50.0)         # EMA of old and new
    source.detect = lambda frame: (100.0, 100.0, 20.0)              # elsewhere: jump to it
    assert source.redetect(None, 2) == (100.0, 100.0, 20.0)


def test_clear_errors(tmp_path, face_video, tiny_checkpoints):  # noqa: F811
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    with pytest.raises(DataError, match="broken.mp4"):
        sv.segment_video(str(broken), tiny_checkpoints, "fixed", str(tmp_path / "o.mp4"),
                         str(tmp_path / "o.csv"), verbose=0)
    with pytest.raises(CheckpointError, match="rl_eta0.5"):
        sv.load_pipeline(tiny_checkpoints, "rl", rl_stage="rl_eta0.5")
    empty = tmp_path / "empty_checkpoints"
    empty.mkdir()
    proc = subprocess.run([sys.executable, "-m", "eval.segment_video", f"--video={face_video[0]}",
                           f"--checkpoints={empty}", "--scheduler=fixed", f"--output={tmp_path / 'x.mp4'}",
                           f"--log={tmp_path / 'x.csv'}"], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {empty}")
