"""Issue 11 item 2: pair tables filled by several processes at once (rl_scheduler.pair_tables)."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from deeplab_face.errors import DataError
from rl_scheduler import pair_tables

ROOT = pathlib.Path(__file__).resolve().parents[2]
VIDEOS = ("001", "002", "003")
HORIZON = 3


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """Prepared data (three 8-frame videos at S = 65, moving at three speeds), an untrained N and F."""
    from tests.rl_scheduler.test_train import _stage_dirs

    prepared, seg, flow = _stage_dirs(tmp_path_factory.mktemp("stages"), VIDEOS, speeds=[1, 2, 3])
    return dict(prepared_dir=prepared, segmenter_dir=seg, flownet_dir=flow)


def _command(stages, folder, videos=VIDEOS):
    return [sys.executable, "-m", "rl_scheduler.pair_tables", f"--pair_table_dir={folder}",
            f"--prepared_dir={stages['prepared_dir']}", f"--segmenter_dir={stages['segmenter_dir']}",
            f"--flownet_dir={stages['flownet_dir']}", f"--videos={','.join(videos)}",
            f"--credit_horizon={HORIZON}", "--taps=conv6_1", "--cache_batch_size=4", "--poll_seconds=0.2"]


def _start(command):
    env = dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process):
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return out


def _table(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def dff(stages):
    """N and F loaded once for the fills in this process (their compiled calls are reused)."""
    from flownet2s.dff import load_dff

    return load_dff(stages["segmenter_dir"], stages["flownet_dir"])


def _fill(stages, dff, folder, videos=VIDEOS, **options):
    """fill_pair_tables in this process, with the shared N and F."""
    logs = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("flownet2s.dff.load_dff", lambda *args, **kwargs: dff)
        summary = pair_tables.fill_pair_tables(folder, stages["segmenter_dir"], stages["flownet_dir"],
                                               stages["prepared_dir"], list(videos), HORIZON, taps=("conv6_1",),
                                               cache_batch_size=4, poll_seconds=0.1, log=logs.append, **options)
    return summary, logs


@pytest.fixture(scope="module")
def filled(stages, dff, tmp_path_factory):
    """One folder filled by one process (this one) and one filled by two command processes at once."""
    single, shared = tmp_path_factory.mktemp("single"), tmp_path_factory.mktemp("shared")
    both = [_start(_command(stages, shared)), _start(_command(stages, shared))]
    _fill(stages, dff, str(single))
    outputs = [_finish(p) for p in both]
    return single, shared, outputs


def test_two_processes_fill_the_tables_of_one_process(filled):
    single, shared, outputs = filled
    for video in VIDEOS:
        reference, table = _table(single / f"{video}.npz"), _table(shared / f"{video}.npz")
        assert sorted(reference) == sorted(table) and len(table["pair_index"]) == 8 * HORIZON - 6
        for name in reference:
            assert np.array_equal(reference[name], table[name]), (video, name)
        record = json.load(open(shared / f"{video}.json"))
        assert record["horizon"] == HORIZON and record["taps"] == ["conv6_1"] and record["pairs"] == 18
    assert not list(shared.glob("*.lock")) and not list(shared.glob(".*"))   # no lock or temporary left
    summaries = [json.loads(out[out.index("{"):]) for out in outputs]      # the command's JSON summary
    statuses = [s for summary in summaries for s in summary["status"].values()]
    assert statuses.count("filled") == len(VIDEOS)                          # each video filled once
    assert all(summary["tables"] == len(VIDEOS) for summary in summaries)


def test_a_rerun_skips_finished_tables_and_a_training_only_reads_them(filled, stages, dff):
    from rl_scheduler.cache import load_video_caches

    _, shared, _ = filled
    mtimes = {v: os.path.getmtime(shared / f"{v}.npz") for v in VIDEOS}
    summary, logs = _fill(stages, None, str(shared))        # no N and F: nothing may be computed
    assert summary["status"] == {v: "skipped" for v in VIDEOS} and summary["pairs"] == 3 * 18
    assert {v: os.path.getmtime(shared / f"{v}.npz") for v in VIDEOS} == mtimes
    assert summary["bytes_per_pair"] > 1536   # the 1x1x384 float32 tap and the scores
    # a training's caches: finished tables are read, no pair is computed
    caches = dict(zip(VIDEOS, load_video_caches(dff, stages["prepared_dir"], VIDEOS, keep_masks=False,
                                                keep_taps=("conv6_1",), batch_size=4)))
    status = pair_tables.attach_tables(caches, str(shared), HORIZON, ("conv6_1",), log=logs.append)
    assert status == {v: "skipped" for v in VIDEOS}
    assert all(c.pair_computations == 0 and c.has_pair(4, 7) for c in caches.values())
    # a longer horizon is not covered: that video is completed and rewritten
    bigger = pair_tables.finished(str(shared), "001", HORIZON + 1, ("conv6_1",))
    assert not bigger and pair_tables.finished(str(shared), "001", HORIZON, ("conv6_1",))


def test_a_stale_lock_is_taken_over_and_a_live_one_waited_for(stages, dff, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()                                                     # its pid is gone on this host
    (tmp_path / "001.lock").write_text(json.dumps(dict(pid=dead.pid, host=pair_tables.HOST)))
    summary, logs = _fill(stages, dff, str(tmp_path), videos=("001",))
    assert summary["status"] == {"001": "filled"} and (tmp_path / "001.npz").exists()
    assert any("took over the stale lock" in line for line in logs) and not (tmp_path / "001.lock").exists()
    # a lock held by a live process: the other videos are filled first, then it is waited for
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "002.lock").write_text(json.dumps(dict(pid=live.pid, host=pair_tables.HOST)))
        with pytest.raises(DataError, match="002.*still locked"):
            _fill(stages, dff, str(tmp_path), videos=("002", "003"), timeout=0.5)
        assert (tmp_path / "003.npz").exists() and not (tmp_path / "002.npz").exists()
    finally:
        live.kill()
        live.wait()


def test_a_corrupt_table_is_one_clear_error(stages, dff, tmp_path):
    (tmp_path / "001.npz").write_bytes(b"not an npz file")
    with pytest.raises(DataError) as error:
        _fill(stages, dff, str(tmp_path), videos=("001",))
    message = str(error.value)
    assert str(tmp_path / "001.npz") in message and "\n" not in message
    assert not (tmp_path / "001.lock").exists()                     # released on the way out
    done = subprocess.run(_command(stages, tmp_path, ("001",)), cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES=""), timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(lines) == 1 and "001.npz" in lines[0], done.stderr[-2000:]


def test_every_numeric_flag_is_bounded():
    from absl import flags
    from tests.eval.test_flag_bounds import _has_bound, command_flags

    with command_flags("rl_scheduler.pair_tables") as defined:
        numeric = [f for f in defined if f.flag_type() in ("int", "float")]
        assert numeric and not [f.name for f in numeric if not _has_bound(f)]
        with pytest.raises(flags.Error):
            flags.FLAGS(["prog", "--credit_horizon=0"])
