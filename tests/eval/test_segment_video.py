"""eval.segment_video end to end on a generated 20-frame face video with tiny random-weight stages."""
import csv
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from deeplab_face.errors import CheckpointError, ConfigError, DataError
from eval import segment_video as sv
from tests.eval.test_runtime import tiny_checkpoints  # noqa: F401

FRAMES = 20
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
    with pytest.raises(ConfigError, match="--target_aki and --target_fps"):   # before anything loads
        sv.segment_video(face_video[0], str(tmp_path / "nowhere"), "fixed", target_aki=5, target_fps=20)
    empty = tmp_path / "empty_checkpoints"
    empty.mkdir()
    proc = subprocess.run([sys.executable, "-m", "eval.segment_video", f"--video={face_video[0]}",
                           f"--checkpoints={empty}", "--scheduler=fixed", f"--output={tmp_path / 'x.mp4'}",
                           f"--log={tmp_path / 'x.csv'}"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {empty}")


def test_missing_rl_stage_is_an_error_listing_the_stages(tmp_path, face_video, tiny_checkpoints):  # noqa: F811
    missing = os.path.join(tiny_checkpoints, "rl_eta0.5")
    for name in ("rl_eta0.5", "0.5"):    # a stage name or its bare KAR limit
        with pytest.raises(ConfigError, match=f"^--rl_stage: {missing} does not exist "
                                              r"\(rl stages under --checkpoints: rl_eta0.14\)$"):
            sv.load_pipeline(tiny_checkpoints, "rl", rl_stage=name)
    no_rl = _checkpoints_without_rl(tmp_path, tiny_checkpoints)
    with pytest.raises(CheckpointError, match=r"rl_eta\*: no RL stage under --checkpoints \(rl stages: none"):
        sv.load_pipeline(no_rl, "rl")
    proc = subprocess.run([sys.executable, "-m", "eval.segment_video", f"--video={face_video[0]}",
                           f"--checkpoints={tiny_checkpoints}", "--rl_stage=rl_eta0.5", "--target_aki=8",
                           f"--output={tmp_path / 'x.mp4'}", f"--log={tmp_path / 'x.csv'}"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (f"error: --rl_stage: {missing} does not exist "
                                                    "(rl stages under --checkpoints: rl_eta0.14)")


def _checkpoints_without_rl(tmp_path, tiny_checkpoints):
    """A checkpoints folder sharing the tiny N, F and DVSNet stages (symlinks), without RL stages."""
    root = tmp_path / "checkpoints"
    root.mkdir()
    for stage in ("segmenter", "flownet", "dvsnet"):
        os.symlink(os.path.join(tiny_checkpoints, stage), root / stage)
    return str(root)


def test_rl_threshold_defaults_to_the_calibrated_operating_threshold(tmp_path, tiny_checkpoints):  # noqa: F811
    root = _checkpoints_without_rl(tmp_path, tiny_checkpoints)
    tiny_rl = os.path.join(tiny_checkpoints, "rl_eta0.14")
    for limit, extra in ((0.06, {"operating_threshold": 0.37}), (0.14, {})):
        stage = os.path.join(root, f"rl_eta{limit:g}")
        os.makedirs(stage)
        with open(os.path.join(tiny_rl, "config.json")) as f:
            config = json.load(f)
        config["training"]["kar_limit"] = limit
        with open(os.path.join(stage, "config.json"), "w") as f:
            json.dump(dict(config, **extra), f)
        for name in ("final.weights.h5", "DONE"):
            os.symlink(os.path.join(tiny_rl, name), os.path.join(stage, name))
    lines = []
    _, scheduler = sv.load_pipeline(root, "rl", log=lines.append)    # default stage rl_eta0.06
    stage = os.path.join(root, "rl_eta0.06")
    assert scheduler.threshold == 0.37
    assert lines == [f"rl policy: {stage} (KAR limit 0.06), tau = 0.37 from {stage}/config.json operating_threshold"]
    from eval.runtime import rl_stage_dir, rl_threshold

    stage = rl_stage_dir(root, "0.14")     # not calibrated: the training tau and a warning
    tau, source, warning = rl_threshold(json.load(open(os.path.join(stage, "config.json"))), stage)
    assert (tau, source) == (0.5, "the training tau")
    assert warning.startswith(f"warning: {stage}/config.json has no calibrated operating_threshold")
    assert rl_threshold({"operating_threshold": 0.37}, stage, threshold=0.2) == (0.2, "--threshold", None)
    assert rl_threshold({"training": {"tau": 0.6}}, stage)[0] == 0.6    # the tau it was trained with
    with pytest.raises(CheckpointError, match="operating_threshold must be a number in"):
        rl_threshold({"operating_threshold": 1.5}, stage)


def test_budget_mode_logs_the_knob_and_running_aki(tmp_path, face_video, tiny_checkpoints):  # noqa: F811
    out, log = str(tmp_path / "budget.mp4"), str(tmp_path / "budget.csv")
    summary = sv.segment_video(face_video[0], tiny_checkpoints, "fixed", out, log, target_aki=3, verbose=0)
    rows = _read_log(log)
    assert list(rows[0]) == list(sv.CSV_COLUMNS) and len(rows) == FRAMES
    knobs = [float(r["knob"]) for r in rows]
    keys = [i for i, r in enumerate(rows) if r["is_key"] == "1"]
    # K starts at the fixed scheduler's 10 (frame 0 is a forced key, no decision: frame 1 keeps it)
    # and falls toward 3 on every frame without a key
    assert knobs[0] == knobs[1] == 10 and all(b < a for a, b in zip(knobs[1:keys[1]], knobs[2:keys[1] + 1]))
    intervals = np.diff(keys)      # fixed K = 10 would key at 0, 10; here they come sooner and sooner
    assert intervals[0] < 10 and all(np.diff(intervals) <= 0) and summary["knob"] < 10 and summary["aki"] <= 5
    keys_so_far = np.cumsum([r["is_key"] == "1" for r in rows])    # window 90 > 20: running = so far
    assert [float(r["running_aki"]) for r in rows] == pytest.approx(list((np.arange(FRAMES) + 1) / keys_so_far),
                                                                   rel=1e-3)
    assert all(float(r["running_fps"]) > 0 and r["knob_bound"] == "" for r in rows)
