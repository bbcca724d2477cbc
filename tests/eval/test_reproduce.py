"""`eval.reproduce --config=smoke` end to end in a temporary workdir, then a re-run that skips everything,
and the resume matrix's CI subset: the same command killed with SIGKILL during F's fine-tuning resumes to
the same F, bit for bit."""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from deeplab_face.errors import ConfigError
from eval import presets, report, reproduce

SCHEDULERS = ("rl", "dvsnet", "flow_magnitude", "fixed", "random")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("smoke")
    lines = []
    start = time.perf_counter()
    results = reproduce.reproduce(str(workdir), config="smoke", log=lines.append)
    return workdir, results, lines, time.perf_counter() - start


def test_results_json_follows_the_schema(smoke_run):
    workdir, results, _, _ = smoke_run
    on_disk = json.loads((workdir / "results.json").read_text())
    assert on_disk["config"]["name"] == "smoke"
    assert on_disk["config"]["kar_limits"] == list(presets.SMOKE.kar_limits)
    references = {"oracle", "causal_oracle", "causal_propagated", "causal_agreement"}   # read the labels: no FPS
    assert set(on_disk["curves"]) == set(SCHEDULERS) | references
    for name, points in on_disk["curves"].items():
        assert points, name      # at least one measured point per scheduler (24-frame videos: target 2)
        for point in points:
            assert set(point) >= {"aki", "miou", "fps", "threshold", "target_aki", "calibrated"}
            assert point["aki"] >= 1.0 and 0.0 <= point["miou"] <= 100.0 and point["target_aki"] == 2.0
            assert point["fps"] is None if name in references else point["fps"] > 0
    sweeps = on_disk["sweeps"]
    assert sweeps["target_akis"] == [2.0] and 5.0 in sweeps["dropped_target_akis"]
    assert on_disk["curves"]["oracle"][0]["calibrated"]
    models = [row["model"] for row in on_disk["table1"]]
    assert "FlowNet2-s" in models and len(models) == 3      # N at two scale sets + the flow row
    for row in on_disk["table1"]:
        assert set(row) >= {"model", "scales", "miou", "fps"} and 0.0 <= row["miou"] <= 100.0
    split = presets.SMOKE.split
    assert on_disk["dataset"]["test_videos"] == list(split.test)
    assert not set(on_disk["dataset"]["train_videos"]) & set(split.test)
    assert on_disk["claim"]["aki_min"] == 25.0 and isinstance(on_disk["claim"]["statement"], str)
    assert on_disk["claim"] == json.loads(json.dumps(results["claim"]))
    stages = on_disk["timings"]["seconds_per_stage"]
    assert {"data", "prepare", "segmenter", "flownet", "dvsnet", "rl_eta0.14", "sweeps"} <= set(stages)


def test_report_figures_and_checkpoints_exist(smoke_run):
    workdir, results, lines, _ = smoke_run
    text = (workdir / "report.md").read_text()
    assert "## Table 1" in text and "FlowNet2-s" in text and results["claim"]["statement"] in text
    figures = sorted(p.name for p in (workdir / "figures").glob("*.png"))
    assert figures and all(f"figures/{name}" in text for name in figures)
    for stage in ("segmenter", "flownet", "dvsnet", "rl_eta0.14"):
        assert (workdir / "checkpoints" / stage / "DONE").exists(), stage
    assert any(str(workdir / "report.md") in line for line in lines)


def test_rerun_skips_finished_stages(smoke_run):
    workdir, first, _, first_seconds = smoke_run
    lines = []
    start = time.perf_counter()
    again = reproduce.reproduce(str(workdir), config="smoke", log=lines.append)
    seconds = time.perf_counter() - start
    skipped = [line for line in lines if "skipped" in line and line.startswith("====")]
    assert len(skipped) == len(first["timings"]["seconds_per_stage"])
    assert again["timings"]["skipped_this_run"] == list(first["timings"]["seconds_per_stage"])
    assert again["curves"] == first["curves"] and again["table1"] == first["table1"]
    assert seconds < first_seconds / 5


# Fields that differ between two runs with one seed by nature: clocks, speeds, resume bookkeeping.
_NOT_NUMBERS = {"timings", "seconds", "cpu_seconds", "pair_seconds", "steps_per_second", "resumed_from_step",
                "fps", "stage_ms"}


def _numbers(value, workdir):
    if isinstance(value, dict):
        return {k: _numbers(v, workdir) for k, v in value.items() if k not in _NOT_NUMBERS}
    if isinstance(value, list):
        return [_numbers(v, workdir) for v in value]
    return value.replace(str(workdir), "W") if isinstance(value, str) else value


# Stages from F's fine-tuning on, and what they write: the kill test redoes these from the smoke run's
# finished N (N's own kill-and-resume is tests/deeplab_face/test_resume_determinism.py's, bit for bit).
_REDONE_STAGES = ("flownet", "flownet_eval", "rl_eta0.14", "dvsnet", "sweeps", "figures")
_REDONE_PATHS = ("checkpoints/flownet", "checkpoints/rl_eta0.14", "checkpoints/dvsnet", "pair_tables", "sweeps",
                 "figures", "results.json", "report.md")


def _workdir_before_flownet(reference_dir, workdir):
    """A copy of the finished smoke workdir as it stood when F's fine-tuning began."""
    shutil.copytree(reference_dir, workdir)
    for name in _REDONE_STAGES:
        (workdir / "stages" / f"{name}.json").unlink()
    for path in _REDONE_PATHS:
        target = workdir / path
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    for path in workdir.rglob("*.json"):     # the stages' records name their own workdir
        path.write_text(path.read_text().replace(str(reference_dir), str(workdir)))


def _h5_arrays(path):
    import h5py

    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset)
                     else None)
    return arrays


def test_killed_runs_resume_to_the_same_flow_net(smoke_run, tmp_path):
    """kill -9 during F's fine-tuning (after its checkpoint at step 2 of 3), then run the same command up to
    F (--stop_after=flownet): F's stage record equals the uninterrupted run's and its weights are the same
    bits. The stages after F are functions of N and F alone (same seeds), which the smoke run and
    test_rerun_skips_finished_stages exercise; redoing them here would double this test's time."""
    reference_dir, _, _, _ = smoke_run
    workdir = tmp_path / "killed"
    _workdir_before_flownet(reference_dir, workdir)
    command = [sys.executable, "-m", "eval.reproduce", "--config=smoke", f"--workdir={workdir}"]
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[2]))
    killed = subprocess.run(command, env=dict(env, DFVS_KILL_AT="flownet/ckpt-2"), capture_output=True, text=True,
                            timeout=1200)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (workdir / "stages" / "flownet.json").exists()
    assert (workdir / "checkpoints" / "flownet" / "ckpt" / "ckpt-2.index").exists()
    finished = subprocess.run(command + ["--stop_after=flownet"], env=env, capture_output=True, text=True,
                              timeout=1200)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "segmenter: finished earlier" in finished.stdout and "stopped after flownet" in finished.stdout
    resumed = json.loads((workdir / "stages" / "flownet.json").read_text())["result"]
    assert resumed["resumed_from_step"] == 2
    reference = json.loads((reference_dir / "stages" / "flownet.json").read_text())["result"]
    assert _numbers(resumed, workdir) == _numbers(reference, reference_dir)
    weights = _h5_arrays(workdir / "checkpoints" / "flownet" / "final.weights.h5")
    reference_weights = _h5_arrays(reference_dir / "checkpoints" / "flownet" / "final.weights.h5")
    assert weights.keys() == reference_weights.keys() and weights
    for name, array in weights.items():
        np.testing.assert_array_equal(array, reference_weights[name], err_msg=name)


def test_workdir_refuses_another_config(smoke_run):
    workdir = smoke_run[0]
    with pytest.raises(ConfigError, match="--workdir.*--config=tiny"):
        reproduce.reproduce(str(workdir), config="tiny", log=lambda line: None)


def test_paper_config_needs_data_dir(tmp_path):
    with pytest.raises(ConfigError, match="--data_dir"):
        reproduce.reproduce(str(tmp_path), config="paper", log=lambda line: None)


def test_tiny_writes_every_video_its_split_names_and_trains_the_schedulers_apart_from_n_and_the_test():
    tiny = presets.TINY
    split, data = tiny.split, tiny.data
    written = {f"{i + 1:03d}" for i in range(data.synthetic_videos)} | {"900", "901"}
    named = set(split.segmenter_train + split.segmenter_val + split.scheduler_train + split.scheduler_val
                + split.test + split.real_test)
    assert named <= written, sorted(named - written)
    assert len(split.scheduler_train) >= 10     # two overfit Conv6 (eval/presets.py, EMBEDDED_SPLIT)
    schedulers = set(split.scheduler_train + split.scheduler_val)
    assert not schedulers & set(split.segmenter_train + split.test)
    assert not set(split.scheduler_train) & set(split.scheduler_val)
    assert tiny.flow_pretrain.steps >= 1500     # F leaves the zero-flow plateau around step 1,500


def test_claim_compares_rl_with_the_best_baseline_at_matched_aki():
    point = lambda aki, miou, target, calibrated=True: dict(aki=aki, miou=miou, target_aki=target,  # noqa: E731
                                                             calibrated=calibrated)
    curves = {"rl": [point(10, 70.0, 10), point(26, 69.0, 25), point(41, 68.0, 40)],
              "fixed": [point(10, 71.0, 10), point(25, 64.0, 25), point(40, 60.0, 40)],
              "random": [point(10, 69.0, 10), point(24, 66.0, 25), point(58, 67.5, 40, calibrated=False)],
              "oracle": [point(10, 75.0, 10), point(25, 74.0, 25), point(40, 70.0, 40)]}
    claim = report.matched_aki_claim(curves, aki_min=25.0)
    assert [row["aki"] for row in claim["points"]] == [25.0, 40.0]
    at_25, at_40 = claim["points"]
    assert at_25["best_baseline"] == "random" and at_25["difference"] == pytest.approx(3.0)
    # random missed 40 (its nearest measurement is at AKI 58): fixed is the baseline there, no chord
    assert at_40["best_baseline"] == "fixed" and at_40["difference"] == pytest.approx(8.0)
    assert at_40["rl_aki"] == 41 and at_40["baseline_aki"] == 40
    assert claim["met"] is True and claim["unreached"] == {"random": [40.0]}
    shares = {r["aki"]: r["share"] for r in claim["oracle_share"]}
    assert shares[10.0] == pytest.approx(-0.25) and shares[25.0] == pytest.approx(0.5)
    assert shares[40.0] == pytest.approx(0.8)
    curves["rl"][1]["miou"] = 65.0
    claim = report.matched_aki_claim(curves, aki_min=25.0)
    assert claim["met"] is False and "not met" in claim["statement"]
    unreachable = report.matched_aki_claim({"rl": [point(1.45, 1.0, 25, calibrated=False)], "fixed": curves["fixed"]})
    assert unreachable["measured"] is False and "Not measurable" in unreachable["statement"]
    assert "(rl missed 10, 25, 40)" in unreachable["statement"]
    legacy = report.matched_aki_claim({"rl": [{"aki": 40, "miou": 70.0}], "fixed": [{"aki": 41, "miou": 60.0}]})
    assert [row["aki"] for row in legacy["points"]] == [40.0]     # hand-written points: the AKI grid


def _fake_300vw(root, ids):
    for video_id in ids:
        (root / video_id).mkdir(parents=True)
        (root / video_id / "vid.avi").write_bytes(b"")
    return str(root)


def test_real_data_split_falls_back_to_the_official_lists(tmp_path):
    data_dir = _fake_300vw(tmp_path / "300VW", ["001", "002", "003", "004", "114", "203", "410", "411"])
    lines = []
    split = reproduce.resolve_split(presets.PAPER, data_dir, embedded=False, log=lines.append)
    assert split.segmenter_train == ("001", "002", "003", "004")          # official train -> A
    assert split.scheduler_train == split.segmenter_val == ("114", "203")  # test 1 + test 2 -> B
    assert split.test == ("410", "411")                                    # test 3 -> C
    assert any("not in" in line for line in lines)                         # absent videos are named
    small = reproduce.resolve_split(presets.TINY, data_dir, embedded=False, log=lines.append)
    # a small preset on real data keeps its own set sizes (tiny: 7 in A; 4 are present here)
    assert small.segmenter_train == ("001", "002", "003", "004") and small.test == ("410", "411")


def test_real_data_split_reads_the_paper_lists(tmp_path):
    data_dir = _fake_300vw(tmp_path / "300VW", ["001", "002", "003", "004"])
    split_dir = tmp_path / "split_2"
    split_dir.mkdir()
    for name, ids in (("A", "001 002"), ("B", "003"), ("C", "004")):
        (split_dir / f"{name}.txt").write_text("\n".join(ids.split()) + "\n")
    split = reproduce.resolve_split(presets.PAPER, data_dir, embedded=False, split_dir=str(split_dir))
    assert (split.segmenter_train, split.scheduler_train, split.test) == (("001", "002"), ("003",), ("004",))
    (split_dir / "C.txt").write_text("003\n")
    with pytest.raises(ConfigError, match="test videos"):
        reproduce.resolve_split(presets.PAPER, data_dir, embedded=False, split_dir=str(split_dir))


def test_bad_workdir_fails_before_any_work(tmp_path):
    from deeplab_face.errors import OutputError
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    for workdir in (a_file, a_file / "w"):
        start = time.perf_counter()
        with pytest.raises(OutputError, match="--workdir: "):
            reproduce.reproduce(str(workdir), config="smoke", log=lambda line: None)
        assert time.perf_counter() - start < 5


def test_a_second_run_on_a_busy_workdir_is_refused(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[2]))
    holder = subprocess.Popen([sys.executable, "-c", "import time\nfrom deeplab_face import stage\n"
                               f"lock = stage.workdir_lock({str(tmp_path)!r})\nprint('locked', flush=True)\n"
                               "time.sleep(120)\n"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=rf"--workdir: .* is in use by pid {holder.pid} "):
            reproduce.reproduce(str(tmp_path), config="smoke", log=lambda line: None)
        assert not (tmp_path / "config.json").exists()      # nothing of the busy run was touched
    finally:
        holder.kill()
        holder.wait()


def test_causal_split_calibrates_the_runs_rl_policy_per_video_and_with_the_budget(smoke_run):
    from eval.causal_oracle import BUDGET_GROUP
    from eval.causal_split import causal_split

    workdir, _, _, _ = smoke_run
    split = causal_split(str(workdir), target_akis=(2,), signals=(), max_calibration_runs=4, log=lambda line: None,
                         rl=True)
    assert set(split) == {"003", "pooled", BUDGET_GROUP}
    for group in ("003", "pooled"):
        assert set(split[group]) == {"fixed", "rl"} and split[group]["rl"][0]["target_aki"] == 2.0
    assert "rl - fixed" in (workdir / "causal_split.md").read_text()


def test_oracle_state_trains_on_the_runs_tables_and_sweeps_like_rl(smoke_run):
    """Last in this file: it adds checkpoints/rl_gain_state to the shared smoke workdir."""
    from eval.oracle_state import STAGE, oracle_state

    workdir, results, _, _ = smoke_run
    lines = []
    out = oracle_state(str(workdir), target_akis=(2,), max_calibration_runs=3, log=lines.append)
    stage = json.loads((workdir / "checkpoints" / STAGE / "config.json").read_text())
    rl_stage = json.loads((workdir / "checkpoints" / "rl_eta0.14" / "config.json").read_text())
    assert (workdir / "checkpoints" / STAGE / "DONE").exists()
    # the RL stage's own hyperparameters, but the gain's scale learned (standardised tap)
    assert stage["training"]["feature_norm"] == "standardize" and stage["kar_limit"] == rl_stage["kar_limit"]
    for key in ("episodes", "episode_length", "trials", "learning_rate", "deviation_tap", "reward_credit"):
        assert stage["training"][key] == rl_stage["training"][key], key
    assert [p["target_aki"] for p in out["rl_gain_state"]] == [2.0] and out["training"]["runs"] >= 1
    assert out["fixed"][0]["calibrated"] and out["fixed"][0]["aki"] == pytest.approx(2.0, rel=0.1)
    on_disk = json.loads((workdir / "oracle_state.json").read_text())
    assert on_disk["rl_gain_state"][0]["miou"] == pytest.approx(out["rl_gain_state"][0]["miou"])
    assert "| 2 |" in (workdir / "oracle_state.md").read_text()
    assert any("state = true-gain state" in line for line in lines)
