"""Issue 9: one error path (cli), atomic writes (atomic), stage completeness, checkpoints, workdir lock."""
import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from deeplab_face import atomic, cli, stage
from deeplab_face.errors import CheckpointError, ConfigError, DataError, OutputError

ROOT = pathlib.Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def _command(*args, timeout=300):
    return subprocess.run([sys.executable, *args], env=ENV, capture_output=True, text=True, timeout=timeout)


def _one_error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.startswith(("error:", "interrupted:"))]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


# -- the one error path ------------------------------------------------------------------------------
def test_error_line_maps_expected_failures_and_leaves_bugs_alone():
    import tensorflow as tf
    full = OSError(errno.ENOSPC, "No space left on device", "/w/results.json")
    assert "/w/results.json: No space left on device; free some space" in cli.error_line(full)
    assert "choose a folder you can write to" in cli.error_line(PermissionError(errno.EACCES, "Permission denied", "/ro/x"))
    assert "is a file, not a folder" in cli.error_line(NotADirectoryError(errno.ENOTDIR, "Not a directory", "/f/x"))
    assert cli.error_line(DataError("a.pts: bad")) == "a.pts: bad"
    assert "corrupt data file" in cli.error_line(tf.errors.DataLossError(None, None, "truncated record at 10"))
    assert "out of space or memory" in cli.error_line(tf.errors.ResourceExhaustedError(None, None, "OOM"))
    for bug in (ValueError("x"), KeyError("y"), FileNotFoundError(errno.ENOENT, "No such file", "/in.json")):
        assert cli.error_line(bug) is None       # bugs and unchecked inputs keep their traceback


def test_flag_parse_errors_and_bad_outputs_are_one_line_with_status_2(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for args in (["--videos=-1", f"--out_dir={tmp_path}"], ["--frames=ten", f"--out_dir={tmp_path}"], [],
                 [f"--out_dir={a_file}/sub", "--videos=1", "--frames=1"], [f"--out_dir={a_file}", "--videos=1"]):
        result = _command("-m", "deeplab_face.make_synthetic", *args)
        assert result.returncode == 2, (args, result.stderr[-2000:])
        line = _one_error_line(result)
        assert ("flag --" in line) if not args or args[0].startswith("--videos") or "ten" in args[0] \
            else str(a_file) in line


def test_a_bug_still_shows_its_traceback(tmp_path):
    script = ("from deeplab_face import cli\n"
              "def main(argv):\n    raise ValueError('a bug')\n"
              "cli.run(main)\n")
    result = _command("-c", script)
    assert result.returncode == 1 and "Traceback" in result.stderr and "ValueError: a bug" in result.stderr


def test_ctrl_c_stops_with_one_line_and_status_130(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "deeplab_face.make_synthetic", f"--out_dir={tmp_path / 'd'}",
                             "--videos=50", "--frames=300", "--size=256", "--nodemo_clip"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (tmp_path / "d" / "001").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == cli.INTERRUPTED_STATUS, stderr[-2000:]
    line = _one_error_line(subprocess.CompletedProcess([], proc.returncode, "", stderr))
    assert line.startswith("interrupted:") and "run the same command again" in line


_SWALLOWS_CTRL_C = ("import sys, time\nfrom deeplab_face import cli\ncli.INTERRUPT_GRACE_S = float(sys.argv[1])\n"
                    "def main(argv):\n    print('ready', flush=True)\n    while True:\n        try:\n"
                    "            time.sleep(0.02)\n        except KeyboardInterrupt:\n"
                    "            pass   # as a finaliser or callback would swallow it\n"
                    "cli.run(main)\n")


@pytest.mark.parametrize("grace_s, signals", [(1.0, 1), (600.0, 2)])
def test_a_swallowed_ctrl_c_still_stops_with_one_line(grace_s, signals):
    """The watchdog after the first Ctrl-C, and a second Ctrl-C, end work that swallowed the interrupt."""
    proc = subprocess.Popen([sys.executable, "-c", _SWALLOWS_CTRL_C, str(grace_s)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        for _ in range(signals):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.3)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()   # (a no-op once it has ended)
    assert proc.returncode == cli.INTERRUPTED_STATUS, stderr[-2000:]
    line = _one_error_line(subprocess.CompletedProcess([], proc.returncode, "", stderr))
    assert line.startswith("interrupted:") and "run the same command again" in line


# -- atomic writes --------------------------------------------------------------------------------------
def test_write_json_is_atomic_on_a_full_disk(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    atomic.write_json(path, {"a": 1})
    real_open = open

    def full_disk(file, mode="r", *args, **kwargs):
        if "w" in mode:
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full_disk)
    with pytest.raises(OutputError, match=r"config.json: No space left on device; free some space"):
        atomic.write_json(path, {"a": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"a": 1}         # the old file is whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]   # no temporary left


def test_jsonable_writes_empty_sets_as_null(tmp_path):
    value = {"gap": {1: np.float32(7.5), 5: float("nan")}, "x": np.arange(2), "inf": float("inf")}
    atomic.write_json(tmp_path / "r.json", value)
    assert json.loads((tmp_path / "r.json").read_text()) == {"gap": {"1": 7.5, "5": None}, "x": [0, 1],
                                                             "inf": None}


def test_truncated_json_names_the_file_and_what_to_do(tmp_path):
    path = tmp_path / "stage.json"
    path.write_text('{"result": {"a": 1')
    with pytest.raises(DataError, match=r"stage.json: not valid JSON .*safe to delete"):
        atomic.read_json(path, advice="safe to delete")
    assert atomic.read_json(tmp_path / "missing.json", "default") == "default"


def test_check_output_dir_fails_before_any_work(tmp_path, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(OutputError, match="--workdir: .*a file is in the way"):
        atomic.check_output_dir(a_file, "--workdir")
    with pytest.raises(OutputError, match="Not a directory"):
        atomic.check_output_dir(a_file / "sub", "--workdir")

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "ro"))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)   # root writes anywhere: simulate
    with pytest.raises(OutputError, match="--out_dir: .*ro: Permission denied; choose a folder you can write to"):
        atomic.check_output_dir(tmp_path / "ro", "--out_dir")


# -- stages and checkpoints -----------------------------------------------------------------------------
def _tiny_model():
    import keras
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2)(inputs))


def test_done_without_weights_is_not_done_and_is_cleared(tmp_path):
    model = _tiny_model()
    stage.finish_stage(str(tmp_path), model, {"kind": "toy"})
    assert stage.is_done(str(tmp_path)) and stage.check_done(str(tmp_path), log=lambda line: None)
    assert sorted(os.listdir(tmp_path)) == ["DONE", "config.json", "final.weights.h5"]   # no temporaries
    os.remove(tmp_path / "final.weights.h5")
    lines = []
    assert not stage.check_done(str(tmp_path), log=lines.append)
    assert not (tmp_path / "DONE").exists() and "final.weights.h5" in lines[0] and "runs again" in lines[0]


def test_truncated_checkpoint_names_the_file_and_what_to_delete(tmp_path):
    import tensorflow as tf
    model = _tiny_model()
    step, manager, restored = stage.resumable_checkpoint(str(tmp_path), model=model)
    assert not restored
    step.assign(3)
    manager.save(checkpoint_number=3)
    data = [p for p in (tmp_path / "ckpt").iterdir() if ".data-" in p.name][0]
    data.write_bytes(data.read_bytes()[:10])
    with pytest.raises(CheckpointError, match=r"ckpt-3: unreadable.*delete .*ckpt-3\.\*"):
        stage.resumable_checkpoint(str(tmp_path), model=_tiny_model())
    del tf


def test_checkpoint_save_on_a_full_disk_names_the_folder(tmp_path, monkeypatch):
    import tensorflow as tf
    step, manager, _ = stage.resumable_checkpoint(str(tmp_path), model=_tiny_model())

    def full(self, *args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "ckpt-1_temp/part-00000: No space left on device")

    monkeypatch.setattr(tf.train.CheckpointManager, "save", full)
    with pytest.raises(OutputError, match=r"ckpt: cannot save a checkpoint .*resumes from the last saved"):
        manager.save(checkpoint_number=1)


# -- the workdir lock ------------------------------------------------------------------------------------
def test_second_run_on_a_workdir_is_refused_with_the_holders_pid(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time\nfrom deeplab_face import stage\n"
                               f"lock = stage.workdir_lock({str(tmp_path)!r})\nprint('locked', flush=True)\n"
                               "time.sleep(120)\n"], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=rf"--workdir: .* is in use by pid {holder.pid} "):
            stage.workdir_lock(str(tmp_path))
    finally:
        holder.kill()
        holder.wait()
    lines = []   # the holder was killed: its lock is stale and taken over
    lock = stage.workdir_lock(str(tmp_path), log=lines.append)
    assert any(f"pid {holder.pid}" in line and "stale" in line for line in lines)
    assert f"pid {os.getpid()}" in (tmp_path / stage.LOCK).read_text()
    lock.release()
    stage.workdir_lock(str(tmp_path)).release()      # released cleanly: taken again without a note


def test_unreadable_checkpoint_state_file_resumes_from_the_newest_checkpoint(tmp_path, capsys):
    step, manager, _ = stage.resumable_checkpoint(str(tmp_path), model=_tiny_model())
    step.assign(7)
    manager.save(checkpoint_number=7)
    (tmp_path / "ckpt" / "checkpoint").write_text('model_checkpoint_path: "ckpt-7')   # half-written
    step, manager, restored = stage.resumable_checkpoint(str(tmp_path), model=_tiny_model())
    assert restored and int(step.numpy()) == 7
    assert "resuming from" in capsys.readouterr().out
