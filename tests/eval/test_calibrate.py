"""eval.calibrate and eval.curves.trace_scheduler: knobs hit target AKIs within +-10 % with measured
runs, unreachable targets are reported with their nearest measurements, nothing is interpolated."""
import collections
import math

import numpy as np
import pytest

from eval import calibrate, curves, metrics

Key = collections.namedtuple("Key", "mask confusion miou")
Pair = collections.namedtuple("Pair", "mask confusion miou conv6 conv6_1 flow_magnitude")


class CountingRun:
    """run(knob) -> AKI of a known response; fails if a knob is run twice."""

    def __init__(self, response):
        self.response, self.calls = response, []

    def __call__(self, knob):
        assert knob not in self.calls, f"knob {knob} run twice"
        self.calls.append(knob)
        return self.response(knob)


def staircase(knob):
    """A monotone step response: AKI rises with the knob in steps of ~14 %."""
    return float(round(1.14 ** math.floor(8 * math.log(knob + 1e-3) + 20), 6))


def test_hits_targets_on_a_step_function_and_reuses_runs_across_targets():
    run = CountingRun(staircase)
    cal = calibrate.Calibrator(run, calibrate.knob_for("flow_magnitude"), tolerance=0.1)
    results = cal.calibrate_all([2, 5, 10, 25, 50])
    for c in results:
        assert c.calibrated and c.reason == "hit" and calibrate.in_band(c.aki, c.target), c
        assert c.aki == staircase(c.knob) and c.knob in run.calls     # a measured run, not interpolated
    assert len(run.calls) == len(set(run.calls)) == len(cal.runs)
    assert len(run.calls) <= 6 * 5
    before = len(run.calls)
    again = cal.calibrate(10)        # a bracket / hit found before costs nothing
    assert len(run.calls) == before and again.knob == results[2].knob


def test_a_jump_over_the_band_is_reported_with_both_sides():
    def cliff(tau):          # rl-like: P(key) is bimodal, AKI 1.45 below tau 0.3 and 200 above
        return 1.45 if tau < 0.3 else 200.0
    run = CountingRun(cliff)
    cal = calibrate.Calibrator(run, calibrate.knob_for("rl"), tolerance=0.1, max_runs=40)
    miss = cal.calibrate(25)
    assert not miss.calibrated and miss.reason == "jump"
    assert miss.below[1] == 1.45 and miss.above[1] == 200.0
    assert miss.below[0] < 0.3 <= miss.above[0] and miss.above[0] - miss.below[0] < 0.01
    assert miss.aki in (1.45, 200.0) and miss.aki == cliff(miss.knob)     # the nearest measurement
    assert cal.calibrate(200).calibrated and cal.calibrate(1.5).calibrated
    assert len(run.calls) == len(set(run.calls))


def test_targets_outside_the_knob_range_are_out_of_range():
    run = CountingRun(lambda k: min(3.0 + k, 40.0))        # 3 (k -> 0) .. 40
    cal = calibrate.Calibrator(run, calibrate.knob_for("flow_magnitude"), tolerance=0.1, max_runs=40)
    high, low = cal.calibrate(100), cal.calibrate(2)
    assert (high.reason, low.reason) == ("out_of_range", "out_of_range")
    assert not high.calibrated and high.aki == 40.0 and high.below[1] == 40.0 and high.above is None
    assert not low.calibrated and low.aki == pytest.approx(3.001) and low.below is None
    assert calibrate.KNOBS["flow_magnitude"].high in run.calls and calibrate.KNOBS["flow_magnitude"].low in run.calls


def test_decreasing_knob_and_noisy_response():
    # dvsnet-like: a higher target % gives more keys; the response wobbles +-4 % (history feedback)
    def response(target):
        trend = 1.0 + 60.0 * ((100.0 - target) / 100.0) ** 1.5
        return trend * (1.0 + 0.04 * math.sin(40 * target))
    run = CountingRun(response)
    cal = calibrate.Calibrator(run, calibrate.knob_for("dvsnet"), tolerance=0.1, max_runs=12)
    for c in cal.calibrate_all([2, 5, 10, 25, 50]):
        assert c.calibrated and calibrate.in_band(c.aki, c.target) and c.aki == response(c.knob), c


def test_probes_are_tried_before_blind_steps():
    run = CountingRun(lambda k: 1.0 + k)
    cal = calibrate.Calibrator(run, calibrate.knob_for("flow_magnitude", start=0.5), probes=(0.5, 8.0, 30.0))
    c = cal.calibrate(9)
    assert c.calibrated and run.calls[:2] == [0.5, 8.0]


def test_max_runs_stops_the_search():
    run = CountingRun(staircase)
    c = calibrate.Calibrator(run, calibrate.knob_for("flow_magnitude"), max_runs=2).calibrate(150)
    assert not c.calibrated and c.reason == "max_runs" and len(run.calls) == 2


# -- real schedulers over a fake cache --------------------------------------------------------------
class FakeVideo:
    """A VideoCache stand-in: the flow magnitude from key k to frame i is speed * (i - k), so the
    flow-magnitude scheduler keys every floor(threshold / speed) + 1 frames; counts pair reads."""

    def __init__(self, frames, speed):
        self.num_frames, self.speed = frames, speed
        self.labels = np.zeros((frames, 4, 4), np.uint8)
        self.pair_reads = 0

    def key(self, i):
        return Key(np.zeros((4, 4), np.uint8), np.diag([16, 0]).astype(np.int64), 1.0)

    def has_pair(self, k, i):
        return True

    def pair(self, k, i):
        self.pair_reads += 1
        hits = max(16 - (i - k), 0)
        confusion = np.array([[hits, 16 - hits], [0, 0]], np.int64)
        return Pair(np.zeros((4, 4), np.uint8), confusion, hits / 16.0, np.zeros((1, 1, 1, 2), np.float32),
                    np.zeros((1, 1, 1, 2), np.float32), self.speed * (i - k))


def test_flow_magnitude_scheduler_is_calibrated_by_measured_runs():
    from rl_scheduler.schedulers import make_scheduler

    videos = [FakeVideo(60, 0.5), FakeVideo(48, 0.3)]
    entries, calibrations, runs = curves.trace_scheduler(
        "flow_magnitude", lambda t: make_scheduler("flow_magnitude", threshold=t), videos, [2, 4, 8, 200],
        num_classes=2, tolerance=0.1, max_runs=12)
    points = [p for p, _ in entries]
    for p, r in zip(points[:3], [r for _, r in entries][:3]):
        assert p["calibrated"] and calibrate.in_band(p["aki"], p["target_aki"])
        flags = [metrics.key_flags(k, v.num_frames) for k, v in zip(r["keys"], videos)]
        assert p["aki"] == metrics.aki(flags)            # the measured AKI of that run
    unreachable = calibrations[-1]
    assert not points[-1]["calibrated"] and unreachable.reason == "out_of_range"
    assert points[-1]["aki"] == pytest.approx(54.0)      # only the forced keys: 108 frames / 2
    assert runs == sum(c.new_runs for c in calibrations)   # every run made for some target, none twice


@pytest.mark.parametrize("name", ["fixed", "random"])
def test_observation_free_schedulers_calibrate_without_pairs(name):
    from rl_scheduler.schedulers import make_scheduler

    videos = [FakeVideo(50, 1.0), FakeVideo(41, 1.0), FakeVideo(64, 1.0)]
    make = (lambda k: make_scheduler("fixed", threshold=int(k))) if name == "fixed" else \
        (lambda k: make_scheduler("random", threshold=k, seed=3))
    entries, calibrations, runs = curves.trace_scheduler(
        name, make, videos, [2, 5, 10], num_classes=2, knob_changes={"high": 64.0})
    assert runs == len({c.knob for c in calibrations})        # one measured run per chosen knob
    non_keys = sum(sum(v.num_frames - len(k) for v, k in zip(videos, r["keys"])) for _, r in
                   {p["threshold"]: (p, r) for p, r in entries}.values())
    assert sum(v.pair_reads for v in videos) == non_keys       # pairs of the final runs only
    for point, record in entries:
        assert point["calibrated"] and calibrate.in_band(point["aki"], point["target_aki"])
        simulated = curves.simulate_keys(make(point["threshold"]), [v.num_frames for v in videos])
        assert record["keys"] == [np.flatnonzero(s).tolist() for s in simulated]
    if name == "fixed":
        assert [p["threshold"] for p, _ in entries] == [2.0, 5.0, 10.0]


def test_simulation_refuses_schedulers_that_read_observations():
    from rl_scheduler.schedulers import make_scheduler

    with pytest.raises(ValueError, match="reads observations"):
        curves.simulate_keys(make_scheduler("flow_magnitude", threshold=1.0), [5])


def test_a_miss_returns_the_edge_of_the_step_nearest_the_target():
    # dvsnet-like (a higher target % gives more keys): every run at or above 5 % keys every frame
    run = CountingRun(lambda target: 1.0 if target >= 5.0 else 24.0)
    cal = calibrate.Calibrator(run, calibrate.knob_for("dvsnet"), max_runs=40)
    miss = cal.calibrate(2)
    assert miss.reason == "jump" and miss.aki == 1.0
    assert miss.knob == miss.below[0] and 5.0 <= miss.knob < 5.1     # the step's edge, not the start (90 %)
