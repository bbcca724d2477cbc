"""eval.causal_oracle: rules that key on one exactly known signal of the present frame; calibrated like a
scheduler; references in the report (never the best baseline), without an FPS."""
import collections

import numpy as np
import pytest

from eval import report
from eval.calibrate import in_band
from eval.causal_oracle import CausalOracle
from eval.curves import measure_point, run_decisions, trace_scheduler
from rl_scheduler.schedulers import make_scheduler

Pair = collections.namedtuple("Pair", "miou confusion mask conv6 conv6_1 flow_magnitude agreement")
CLASSES = 2


class CutsCache:
    """A video whose propagation is good (0.9) within a shot and useless (0.2) across a cut; N scores
    0.95 everywhere. The only information about the cuts is in the labels (conv6 is constant)."""

    def __init__(self, frames=60, cuts=(13, 31, 47)):
        self.num_frames, self.batch_size, self.cuts = frames, 4, cuts
        self.shot = np.searchsorted(np.asarray(cuts), np.arange(frames), side="right")

    def _entry(self, miou, agreement=1.0):
        hits = int(round(100 * miou))
        confusion = np.array([[hits, 100 - hits], [0, 100]], np.int64)
        return Pair(float(miou), confusion, None, np.zeros((1, 1, 1, 4), np.float32),
                    np.zeros((1, 1, 1, 4), np.float32), 0.5, agreement)

    def key(self, i):
        return self._entry(0.95)

    def pair(self, k, i):
        same_shot = self.shot[k] == self.shot[i]
        # the agreement with N drops on frames 20 and 40, where N itself flickers
        return self._entry((0.9 - 0.002 * (i - k)) if same_shot else 0.2, 0.5 if i % 20 == 0 else 0.95)


def test_it_keys_exactly_where_the_present_gain_exceeds_its_threshold():
    cache = CutsCache()
    for threshold in (0.5, 0.52, 0.6, 0.9):
        run = run_decisions(cache, CausalOracle(threshold), CLASSES)
        expected, k = [0], 0
        for i in range(1, cache.num_frames):   # the rule, written out
            if 0.5 * (1 + cache.key(i).miou - cache.pair(k, i).miou) > threshold:
                expected.append(i)
                k = i
        assert np.flatnonzero(run["keys"]).tolist() == expected, threshold
    # at 0.6 (gain > 0.2) it keys on the cuts only: propagation within a shot loses 0.05-0.1 here
    assert np.flatnonzero(run_decisions(cache, CausalOracle(0.6), CLASSES)["keys"]).tolist() == [0, 13, 31, 47]


@pytest.mark.parametrize("signal, expected", [("gain", [0, 13, 31, 47]), ("propagated", [0, 13, 31, 47]),
                                              ("agreement", [0, 20, 40])])
def test_each_signal_reads_its_own_number(signal, expected):
    rule = CausalOracle(0.3, signal=signal) if signal != "gain" else CausalOracle(0.6)
    assert rule.name == {"gain": "causal_oracle", "propagated": "causal_propagated",
                         "agreement": "causal_agreement"}[signal]
    assert np.flatnonzero(run_decisions(CutsCache(), rule, CLASSES)["keys"]).tolist() == expected
    with pytest.raises(ValueError, match="signal 'labels'"):
        CausalOracle(signal="labels")


def test_it_beats_the_fixed_interval_at_the_same_key_count_when_the_labels_know_something():
    cache = CutsCache()
    oracle = measure_point([cache], CausalOracle(0.6), "causal_oracle", CLASSES, stage_ms={"key": 1.0})
    fixed = measure_point([cache], make_scheduler("fixed", threshold=15), "fixed", CLASSES)
    assert oracle["aki"] == fixed["aki"] == 15.0
    assert oracle["miou"] > fixed["miou"] + 10.0
    assert oracle["fps"] is None      # reads labels: no deployable FPS, even with stage timings


def test_it_is_calibrated_like_a_scheduler():
    entries, calibrations, _ = trace_scheduler("causal_oracle", CausalOracle, [CutsCache()], [15.0, 5.0], CLASSES,
                                               max_runs=12)
    assert [c.calibrated for c in calibrations] == [True, True]
    assert all(in_band(p["aki"], p["target_aki"]) for p, _ in entries)


def test_the_report_keeps_it_a_reference():
    point = lambda aki, miou: dict(aki=aki, miou=miou, target_aki=aki, calibrated=True)  # noqa: E731
    curves = {"rl": [point(25.0, 40.0)], "fixed": [point(25.0, 41.0)], "random": [point(25.0, 39.0)],
              "oracle": [point(25.0, 45.0)], "causal_oracle": [point(25.0, 43.0)]}
    claim = report.matched_aki_claim(curves)
    assert claim["points"][0]["best_baseline"] == "fixed" and claim["points"][0]["difference"] == pytest.approx(-1.0)
    row = claim["oracle_share"][0]
    assert row["causal_share"] == pytest.approx(0.5) and row["share"] == pytest.approx(-0.25)
    assert "causal oracle" in report.share_markdown(claim["oracle_share"])
    assert "causal_oracle" in report.matched_markdown(curves, [25.0])


def test_split_by_video_calibrates_each_video_and_the_pool():
    from eval.causal_oracle import split_by_video, split_markdown

    caches = [CutsCache(), CutsCache(frames=40, cuts=(9, 22))]
    split = split_by_video(caches, ["a", "b"], [10.0], CLASSES, signals=("gain", "agreement"), max_runs=12)
    assert list(split) == ["a", "b", "pooled", "per-video budget"]
    for group in ("a", "b", "pooled"):
        assert set(split[group]) == {"fixed", "causal_oracle", "causal_agreement"}
        fixed = split[group]["fixed"][0]
        assert fixed["calibrated"] and in_band(fixed["aki"], 10.0) and fixed["target_aki"] == 10.0
    # on a video with cuts the true gain beats even spacing at the same AKI
    assert split["a"]["causal_oracle"][0]["miou"] > split["a"]["fixed"][0]["miou"]
    table = split_markdown(split)
    assert "| pooled | 10 |" in table and "causal_oracle - fixed" in table


def test_the_per_video_budget_runs_each_video_at_its_own_knob():
    from eval import metrics
    from eval.causal_oracle import BUDGET_GROUP, split_by_video, split_markdown

    caches = [CutsCache(), CutsCache(frames=40, cuts=(9, 22))]
    split = split_by_video(caches, ["a", "b"], [10.0, 500.0], CLASSES, signals=("gain",), max_runs=12)
    budget = split[BUDGET_GROUP]["causal_oracle"]
    assert [p["target_aki"] for p in budget] == [10.0]     # no video reaches AKI 500: no point, never a guess
    point = budget[0]
    assert point["thresholds"] == [split[v]["causal_oracle"][0]["threshold"] for v in ("a", "b")]
    runs = [run_decisions(c, CausalOracle(t), CLASSES) for c, t in zip(caches, point["thresholds"])]
    assert point["miou"] == pytest.approx(100 * metrics.mean_iou(sum(r["confusion"] for r in runs)))
    assert point["aki"] == metrics.aki([r["keys"] for r in runs]) and point["calibrated"]
    assert f"| {BUDGET_GROUP} | 10 |" in split_markdown(split)


def test_another_scheduler_is_calibrated_per_video_pooled_and_with_the_budget():
    from eval.causal_oracle import BUDGET_GROUP, split_by_video, split_markdown

    caches = [CutsCache(), CutsCache(frames=40, cuts=(9, 22))]
    # under RL's name (its knob: tau in (0, 1)), a rule that keys on the present gain
    split = split_by_video(caches, ["a", "b"], [10.0], CLASSES, signals=(), max_runs=12,
                           schedulers={"rl": lambda t: CausalOracle(threshold=t)})
    for group in ("a", "b", "pooled", BUDGET_GROUP):
        assert set(split[group]) == {"fixed", "rl"}
        point = split[group]["rl"][0]
        assert point["calibrated"] and in_band(point["aki"], 10.0)
    assert split["a"]["rl"][0]["miou"] > split["a"]["fixed"][0]["miou"]     # the cuts get the keys
    assert split[BUDGET_GROUP]["rl"][0]["thresholds"] == [split[v]["rl"][0]["threshold"] for v in ("a", "b")]
    assert "rl - fixed" in split_markdown(split)


def test_causal_split_with_rl_needs_a_finished_rl_stage(tmp_path):
    from deeplab_face.errors import ConfigError
    from eval.workdir import finished_rl_stage

    (tmp_path / "rl_eta0.05").mkdir()      # started, never finished
    with pytest.raises(ConfigError, match=r"--workdir: no finished RL stage \(rl_eta\*/DONE\) in "):
        finished_rl_stage(str(tmp_path))


def test_causal_split_needs_a_finished_workdir(tmp_path):
    from deeplab_face.errors import ConfigError
    from eval.causal_split import causal_split

    with pytest.raises(ConfigError, match=r"checkpoints/segmenter is not a finished stage"):
        causal_split(str(tmp_path))
