"""Issue 9, half-written workdir files: an unreadable stage record or workdir config.json is a
warning and the stage runs again (never a crash); identity rules of a workdir."""
import json

import pytest

from deeplab_face.errors import ConfigError
from eval import workdir

IDENTITY = {"config": "smoke", "data_dir": None, "split_dir": None, "preset": {"name": "smoke"}}


def test_a_half_written_stage_record_is_not_done(tmp_path):
    path = tmp_path / "segmenter.json"
    path.write_text('{"result": {"step": 3}, "sec')
    lines = []
    assert workdir.read_stage_record(path, log=lines.append) is None
    assert "segmenter.json: not valid JSON" in lines[0] and "runs again" in lines[0]
    path.write_text('{"unrelated": 1}')
    assert workdir.read_stage_record(path, log=lines.append) is None and "not a stage record" in lines[1]
    workdir.write_stage_record(path, {"step": 3, "val": float("nan")}, 1.5, 1.0)
    assert workdir.read_stage_record(path) == {"result": {"step": 3, "val": None}, "seconds": 1.5,
                                               "cpu_seconds": 1.0}


def test_a_half_written_workdir_config_is_rewritten(tmp_path):
    (tmp_path / "config.json").write_text('{"config": "smo')
    lines = []
    workdir.check_identity(str(tmp_path), IDENTITY, log=lines.append)
    assert "config.json: not valid JSON" in lines[0]
    assert json.loads((tmp_path / "config.json").read_text()) == IDENTITY


def test_identity_is_claimed_by_the_first_finished_stage(tmp_path):
    workdir.check_identity(str(tmp_path), IDENTITY)
    (tmp_path / "prepared").mkdir()
    other = dict(IDENTITY, data_dir="/data/tree")
    lines = []
    workdir.check_identity(str(tmp_path), other, log=lines.append)      # nothing finished: taken over
    assert any("no stage of that run finished" in line for line in lines)
    assert not (tmp_path / "prepared").exists()                           # partial crops of the other data
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "data.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"--workdir: .* holds a run with --data_dir=/data/tree \(finished "
                                          r"stages: data\)"):
        workdir.check_identity(str(tmp_path), IDENTITY)
