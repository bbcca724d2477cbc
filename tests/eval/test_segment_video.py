"""eval.segment_video end to end on generated face videos with tiny random-weight stages: crops,
schedulers, the tracked face box and crop keys, the overlay text, and the output checks (issues 9, 12).

The face tracker itself (no networks) is tested in tests/eval/test_face_track.py."""
import csv
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from deeplab_face.errors import CheckpointError, ConfigError, DataError, OutputError
from eval import segment_video as sv
from tests.eval.test_face_track import moving_face_frames
from tests.eval.test_runtime import tiny_checkpoints  # noqa: F401

FRAMES = 20
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module", autouse=True)
def shared_dff():
    """One DeepFeatureFlow per (stages, weights, options) for this module's many segment_video calls: N and F
    are frozen and the streaming state lives in the runtime (flownet2s.dff.KeyHolder), so a reloaded DFF
    would only repeat the model building and tracing (~3-5 s a call)."""
    from flownet2s import dff

    built, load = {}, dff.load_dff

    def load_once(segmenter_dir, flownet_dir, **options):
        try:
            stamps = tuple(os.path.getmtime(os.path.join(d, "final.weights.h5")) for d in (segmenter_dir, flownet_dir))
        except OSError:   # a missing stage: the real loader's error
            return load(segmenter_dir, flownet_dir, **options)
        key = (segmenter_dir, flownet_dir, stamps, tuple(sorted(options.items())))
        if key not in built:
            built[key] = load(segmenter_dir, flownet_dir, **options)
        return built[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dff, "load_dff", load_once)
        yield built


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


def _write_video(path, frames, fourcc="FFV1", fps=30.0):
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


def _centres(boxes):
    return np.array([(x + s / 2.0, y + s / 2.0) for x, y, s in boxes])


def test_detect_crop_follows_the_face_between_keys_and_a_moved_crop_is_a_key(tmp_path, tiny_checkpoints, capsys):  # noqa: F811
    frames, truth = moving_face_frames(30, shift=(80, 20))
    video = _write_video(tmp_path / "moving.avi", frames)
    out, log = str(tmp_path / "track.mp4"), str(tmp_path / "track.csv")
    # K = 100 > 30 frames and no crop keys: frame 0 is the only key, every other frame is propagated
    summary = sv.segment_video(video, tiny_checkpoints, "fixed", out, log, crop_mode="detect", threshold=100,
                               crop_key_change=0, verbose=1)
    printed = capsys.readouterr().out
    assert f"segmenter: {os.path.join(tiny_checkpoints, 'segmenter')} (mobilenet_v2, S = " in printed
    assert f"flownet: {os.path.join(tiny_checkpoints, 'flownet')} (" in printed and "face track: " in printed
    rows = _read_log(log)
    assert [r["key_reason"] for r in rows if r["is_key"] == "1"] == ["first frame"] and summary["keys"] == 1
    boxes = [tuple(float(r[c]) for c in ("box_x0", "box_y0", "box_side")) for r in rows]
    error = _centres(boxes) - _centres(truth)
    # the face moved 80 px right and 20 px down; the box keeps its offset from the face to 3 px
    assert np.abs(error - error[0]).max() < 3.0
    assert _centres(boxes)[-1][0] - _centres(boxes)[0][0] > 70
    assert summary["face_track"]["tracked"] == 29 and summary["face_track"]["detections"] <= 3

    # the same video with crop keys at 20 % of the key box's side: keys follow the box's motion
    summary = sv.segment_video(video, tiny_checkpoints, "fixed", out, log, crop_mode="detect", threshold=100,
                               crop_key_change=0.2, verbose=0)
    rows = _read_log(log)
    keys = [int(r["frame"]) for r in rows if r["is_key"] == "1"]
    assert [rows[k]["key_reason"] for k in keys] == ["first frame"] + ["crop"] * (len(keys) - 1)
    assert len(keys) >= 4 and summary["key_reasons"] == {"first frame": 1, "crop": len(keys) - 1}
    assert all(r["key_reason"] == "" for r in rows if r["is_key"] == "0")
    centre = _centres([tuple(float(r[c]) for c in ("box_x0", "box_y0", "box_side")) for r in rows])
    side = np.array([float(r["box_side"]) for r in rows])
    for previous, key in zip(keys, keys[1:]):   # a crop key exactly when the box passed 20 %
        shift = np.abs(centre[previous + 1:key + 1] - centre[previous]).max(axis=1) / side[previous]
        assert shift[-1] > 0.2 and (shift[:-1] <= 0.2 + 0.02).all()


def test_overlay_text_fits_a_narrow_video():
    from eval.runtime import FrameResult

    width, height = 176, 144
    result = FrameResult(1234, np.zeros((8, 8), np.uint8), False, 0.123456, 1.5,
                         {"total": 123.4}, 0.0567)
    text = "1234 flow_magnitude score 0.123 knob 0.0567 123 ms"
    assert cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0] > width   # the old fixed scale overflowed
    picture = sv.draw(np.zeros((height, width, 3), np.uint8), np.zeros((height, width), np.uint8), None,
                      result, "flow_magnitude")
    layout = sv.status_layout(text, width, height)
    assert " ".join(line for line, *_ in layout) == text
    for line, (x, y), scale, thickness in layout:
        (w, h), base = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        assert x >= 0 and x + w <= width - 2 and y - h >= 0 and y + base <= height and scale >= 0.3
    drawn = picture.max(axis=2) > 0
    assert drawn.any() and not drawn[:, -2:].any()     # text drawn, nothing reaches the right edge
    wide = sv.status_layout(text, 1280, 720)
    assert len(wide) == 1 and wide[0][2] == pytest.approx(720 / 700)   # a large frame keeps one line


def test_outputs_are_checked_before_the_work_and_a_full_disk_stops_at_the_failing_frame(
        tmp_path, face_video, tiny_checkpoints, monkeypatch):  # noqa: F811
    from eval import video_io

    out = tmp_path / "o.mp4"
    with pytest.raises(OutputError, match=r"^--log: /dev/full: No space left on device; free some space"):
        sv.segment_video(face_video[0], tiny_checkpoints, "fixed", str(out), "/dev/full", verbose=0)
    assert not out.exists()                              # stopped before any frame
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match=f"^--output: {blocker}: File exists"):   # a folder that is a file
        sv.segment_video(face_video[0], str(tmp_path / "unused"), "fixed", str(blocker / "o.mp4"), verbose=0)
    with pytest.raises(ConfigError, match="^--max_frames: must be >= 1, got 0"):
        sv.segment_video(face_video[0], tiny_checkpoints, "fixed", str(out), str(tmp_path / "o.csv"),
                         max_frames=0, verbose=0)

    calls = []
    monkeypatch.setattr(video_io, "_no_space", lambda path: calls.append(path) or len(calls) > 6)   # opening + 6 frames
    log = tmp_path / "full.csv"
    with pytest.raises(OutputError, match=rf"^--output: {out} at frame 5: No space left on device "
                                          rf"\(5 frames logged in {log} are kept\); free some space"):
        sv.segment_video(face_video[0], tiny_checkpoints, "fixed", str(out), str(log), verbose=0)
    assert calls == [str(out)] * 7 and len(_read_log(log)) == 5    # the rows before the full frame are kept
    monkeypatch.undo()

    class FullAfter:   # a log file whose disk fills at the 4th row
        def __init__(self, real):
            self.real, self.flushes = real, 0

        def write(self, text):
            return self.real.write(text)

        def flush(self):
            self.flushes += 1
            if self.flushes > 4:
                raise OSError(28, "No space left on device")
            self.real.flush()

        def close(self):
            self.real.close()

    real_open = open
    monkeypatch.setattr(video_io, "open", lambda path, *a, **k: FullAfter(real_open(path, *a, **k)), raising=False)
    with pytest.raises(OutputError, match=rf"^--log: {log} at frame 3: No space left on device; free some space"):
        sv.segment_video(face_video[0], tiny_checkpoints, "fixed", str(out), str(log), verbose=0)


def test_command_refuses_zero_frames_and_a_full_log(tmp_path, face_video, tiny_checkpoints):  # noqa: F811
    out = tmp_path / "x.mp4"
    base = [sys.executable, "-m", "eval.segment_video", f"--video={face_video[0]}", f"--checkpoints={tiny_checkpoints}",
            "--scheduler=fixed", f"--output={out}"]
    proc = subprocess.run(base + ["--max_frames=0", f"--log={tmp_path / 'x.csv'}"], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "max_frames" in proc.stderr
    assert not out.exists() and not (tmp_path / "x.csv").exists()
    proc = subprocess.run(base + ["--log=/dev/full"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --log: /dev/full: No space left on device")
    assert not out.exists()


def test_a_truncated_video_is_processed_with_a_warning(tmp_path, tiny_checkpoints, capsys):  # noqa: F811
    frames, _ = moving_face_frames(40, width=96, height=96, face_side=40, shift=(10, 0))
    video = _write_video(tmp_path / "cut.avi", frames, fourcc="MJPG")
    size = os.path.getsize(video)
    with open(video, "r+b") as f:
        f.truncate(size // 2)          # the header still says 40 frames
    summary = sv.segment_video(video, tiny_checkpoints, "fixed", str(tmp_path / "c.mp4"), str(tmp_path / "c.csv"),
                               verbose=0)
    assert 0 < summary["frames"] < 40 and len(_read_log(tmp_path / "c.csv")) == summary["frames"]
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        f"warning: {video}: only {summary['frames']} of the 40 frames its header reports could be decoded")


@pytest.mark.parametrize("name,required", [("eval.segment_video", ["--video=v", "--checkpoints=c"]),
                                           ("deeplab_face.annotate_video", ["--video=v", "--out_dir=o"])])
def test_every_numeric_flag_is_bounded_by_absl(name, required):
    from absl import flags

    from tests.eval.test_flag_bounds import _has_bound, command_flags

    with command_flags(name) as defined:
        numeric = [f for f in defined if f.flag_type() in ("int", "float")]
        assert numeric and [f.name for f in numeric if not _has_bound(f)] == []
        flags.FLAGS(["prog"] + required)             # the defaults parse
        flags.FLAGS.unparse_flags()
        for bad in ("--max_frames=0", "--target_aki=0.5", "--target_fps=0", "--crop_key_change=-1",
                    "--redetect_every=0") if name == "eval.segment_video" else ("--max_frames=0", "--detect_side=8"):
            with pytest.raises(flags.Error, match=bad.split("=")[0][2:]):
                flags.FLAGS(["prog"] + required + [bad])
            flags.FLAGS.unparse_flags()
        if name == "eval.segment_video":
            with pytest.raises(flags.Error, match="target_aki"):    # one budget, not both
                flags.FLAGS(["prog"] + required + ["--target_aki=5", "--target_fps=20"])
            flags.FLAGS.unparse_flags()
