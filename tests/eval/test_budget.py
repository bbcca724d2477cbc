"""eval.budget: budget mode holds a target AKI / FPS by turning each scheduler's knob.

Most tests run the real `DynamicSegmenter` and the real schedulers on a simulated video: a fake DFF
whose "flow" from the key to frame i grows with the distance i - k (a camera moving at constant
speed), with fake policy / DVSNet networks whose scores follow that distance. The end-to-end run on
the tiny random-weight N and F is in test_runtime (test_budget_mode_holds_the_target_aki_end_to_end),
next to the fixture that builds them.
"""
import math
import types

import numpy as np
import pytest

from deeplab_face.errors import ConfigError
from eval import budget
from eval.runtime import DynamicSegmenter, FrameResult
from rl_scheduler.schedulers import make_scheduler

SPEED = 0.5        # simulated flow, grid pixels per frame since the key
SIM_FRAMES = 600


class DistanceDFF:
    """A stand-in DFF: frame t carries t in its pixels; flow(k, i) has magnitude SPEED * (i - k) and
    conv6 / conv6_1 filled with i - k (what the fake networks read). Masks are all zeros."""

    crop_size = 4

    @staticmethod
    def frames(count):
        t = np.arange(count)
        out = np.zeros((count, 4, 4, 3), np.uint8)
        out[..., 0], out[..., 1] = (t // 256)[:, None, None], (t % 256)[:, None, None]
        return out

    @staticmethod
    def _index(frame):
        frame = np.asarray(frame)
        return int(frame[0, 0, 0, 0]) * 256 + int(frame[0, 0, 0, 1])

    def key(self, frame):
        return {"probs": np.zeros((1, 4, 4, 2), np.float32), "features": frame}

    def flow(self, key_frame, frame):
        d = float(self._index(frame) - self._index(key_frame))
        flow = np.zeros((1, 2, 2, 2), np.float32)
        flow[..., 0] = SPEED * d
        tap = np.full((1, 2, 2, 1), d, np.float32)
        return {"flow": flow, "conv6": tap, "conv6_1": tap}

    def propagate(self, key_frame, key_features, frame, flow_outputs=None):
        return {"probs": np.zeros((1, 4, 4, 2), np.float32)}


def _fake_net(forward):
    # compiled_forward() reuses a model's cached `_compiled_forward`: a plain function stands in
    return types.SimpleNamespace(_compiled_forward=forward, deviation_tap="conv6_1")


def sim_scheduler(name, seed=0):
    """A real scheduler of each kind; rl / dvsnet on fake networks scoring the distance to the key."""
    rng = np.random.default_rng(seed)
    if name == "rl":    # P(key) rises with the distance to the key, noisy: about 0.5 at 8 frames
        def forward(deviation, expert):
            p = 1.0 / (1.0 + math.exp(-(float(deviation.mean()) - 8.0) / 2.0 + 0.3 * rng.standard_normal()))
            return np.array([[1.0 - p, p]], np.float32)
        return make_scheduler("rl", policy=_fake_net(forward))
    if name == "dvsnet":    # predicted confidence falls 3 points a frame: below 90 % after 4 frames
        return make_scheduler("dvsnet", network=_fake_net(
            lambda deviation: np.array([[100.0 - 3.0 * float(deviation.mean()) + rng.standard_normal()]])))
    if name == "random":
        return make_scheduler("random", seed=seed)
    return make_scheduler(name)


def run_budget(scheduler, frames=SIM_FRAMES, **targets):
    controller = budget.BudgetController(scheduler, **targets)
    results = list(DynamicSegmenter(DistanceDFF(), scheduler, budget=controller).stream(DistanceDFF.frames(frames)))
    return results, controller


@pytest.mark.parametrize("name", ["rl", "dvsnet", "flow_magnitude", "fixed", "random"])
@pytest.mark.parametrize("target", [3.0, 12.0])
def test_budget_holds_the_target_aki(name, target):
    results, controller = run_budget(sim_scheduler(name), target_aki=target)
    keys = np.array([r.is_key for r in results])
    start = results[1].knob
    assert len(keys) / keys.sum() == pytest.approx(target, rel=0.15)           # the whole video
    if name != "random":   # random keys are Poisson-like: 90 frames hold too few to be within 15 %
        assert controller.running_aki == pytest.approx(target, rel=0.15)        # its last window
    assert controller.saturated_frames == 0 and controller.bound == ""
    # the knob the CSV logs is the one each frame was decided with, and budget mode moved it
    assert results[-1].knob != start and all(math.isfinite(r.knob) for r in results)


@pytest.mark.parametrize("name", ["rl", "dvsnet", "flow_magnitude", "fixed", "random"])
def test_knob_direction_matches_each_scheduler(name):
    """eval.calibrate.KNOBS says which way a scheduler's knob raises the AKI; the scheduler's own
    is_key agrees, and too many keys move the controller's knob the fewer-keys way (too few the other)."""
    knob = budget.KNOBS[name]
    scheduler = sim_scheduler(name)
    scores = {"rl": np.linspace(0, 1, 101), "dvsnet": np.linspace(0, 100, 101),
              "flow_magnitude": np.linspace(0, 20, 101), "fixed": np.arange(1, 40),
              "random": np.linspace(0, 1, 101, endpoint=False)}[name]
    low, high = {"rl": (0.3, 0.7), "dvsnet": (60.0, 90.0), "flow_magnitude": (2.0, 8.0),
                 "fixed": (3.0, 9.0), "random": (2.0, 8.0)}[name]
    counts = []
    for value in (low, high):
        scheduler.threshold = value
        counts.append(sum(bool(scheduler.is_key(s)) for s in scores))
    assert (counts[1] < counts[0]) == knob.raises_aki and counts[0] != counts[1]
    for is_key, fewer_keys in ((True, True), (False, False)):
        scheduler.threshold = (low + high) / 2
        controller = budget.BudgetController(scheduler, target_aki=10)
        before = controller.knob
        for i in range(1, 6):
            controller.update(FrameResult(i, None, is_key, 0.0, 0.0, dict.fromkeys(
                ("flow", "policy", "key", "warp_task", "total"), 1.0), before))
        moved_up = controller.knob > before
        assert moved_up == (fewer_keys == knob.raises_aki), (name, is_key, before, controller.knob)


def test_a_knob_that_cannot_reach_the_target_saturates_and_says_so():
    lines = []
    still = DistanceDFF()
    still.flow = lambda key_frame, frame: {"flow": np.zeros((1, 2, 2, 2), np.float32),
                                           "conv6": np.zeros((1, 2, 2, 1), np.float32),
                                           "conv6_1": np.zeros((1, 2, 2, 1), np.float32)}
    scheduler = make_scheduler("flow_magnitude")       # a still video: flow 0, no key at any threshold
    controller = budget.BudgetController(scheduler, target_aki=5, log=lines.append)
    results = list(DynamicSegmenter(still, scheduler, budget=controller).stream(DistanceDFF.frames(300)))
    assert sum(r.is_key for r in results) == 1 and controller.bound == "min"
    assert controller.knob == pytest.approx(budget.KNOBS["flow_magnitude"].low)
    # ln(1 / 1e-3) / (gain / AKI) = 115 frames down to the bound, then pushed against it every frame
    assert controller.saturated_frames == 299 - math.ceil(math.log(1e3) / (budget.DEFAULT_GAIN / 5)) + 1
    assert len(lines) == 1 and "saturated at its min 0.001" in lines[0] and "AKI 5" in lines[0]
    # the other bound: a DVSNet whose score stays above 100 % never keys however high the target
    never = make_scheduler("dvsnet", network=_fake_net(lambda deviation: np.array([[150.0]])))
    results, controller = run_budget(never, frames=400, target_aki=4)
    assert controller.bound == "max" and controller.knob == pytest.approx(99.99)


def test_fps_target_becomes_a_key_rate():
    assert budget.key_rate_for_fps(50, t_key=30.0, t_nonkey=10.0) == pytest.approx(0.5)
    assert budget.key_rate_for_fps(200, t_key=30.0, t_nonkey=10.0) == 0.0    # beyond the non-key path
    assert budget.key_rate_for_fps(10, t_key=30.0, t_nonkey=10.0) == 1.0     # every frame fits
    assert budget.key_rate_for_fps(500, t_key=5.0, t_nonkey=10.0) == 1.0     # keys are the cheap path
    # a simulated machine: key path 2 + 0.5 + 27.5 = 30 ms, non-key path 2 + 0.5 + 7.5 = 10 ms; at 40
    # FPS (25 ms) the controller must find a key rate of 0.75
    scheduler = sim_scheduler("flow_magnitude")
    controller = budget.BudgetController(scheduler, target_fps=40)
    distance = 0
    for i in range(800):
        is_key, _ = scheduler.decide({"frame_index": i, "flow_magnitude": SPEED * distance})
        scheduler.record(is_key)
        ms = dict(flow=2.0 if i else 0.0, policy=0.5, key=27.5 if is_key else 0.0, warp_task=0.0 if is_key else 7.5)
        ms["total"] = sum(ms.values())
        controller.update(FrameResult(i, None, is_key, 0.0, 0.0, ms, scheduler.threshold))
        distance = 1 if is_key else distance + 1
    assert controller.target_rate == pytest.approx(0.75)
    assert controller.running_fps == pytest.approx(40, rel=0.1)
    assert controller.running_aki == pytest.approx(1 / 0.75, rel=0.15)


def test_budget_state_resets_with_the_stream():
    scheduler = sim_scheduler("flow_magnitude")
    controller = budget.BudgetController(scheduler, target_aki=6)
    runtime = DynamicSegmenter(DistanceDFF(), scheduler, budget=controller)
    first = [(r.is_key, r.knob) for r in runtime.stream(DistanceDFF.frames(120))]
    second = [(r.is_key, r.knob) for r in runtime.stream(DistanceDFF.frames(120))]
    assert first == second and first[0][1] == 1.0     # starts again from the scheduler's own threshold
    # no target: the controller only measures, the knob stays put
    watcher = budget.BudgetController(make_scheduler("fixed", threshold=4))
    results = list(DynamicSegmenter(DistanceDFF(), watcher.scheduler, budget=watcher).stream(DistanceDFF.frames(40)))
    assert {r.knob for r in results} == {4} and watcher.running_aki == 4.0 and not watcher.active


def test_budget_flag_errors():
    with pytest.raises(ConfigError, match="--target_aki and --target_fps"):
        budget.check_targets(5, 20)
    with pytest.raises(ConfigError, match="--target_aki: must be a number >= 1"):
        budget.BudgetController(make_scheduler("fixed"), target_aki=0.5)
    with pytest.raises(ConfigError, match="--target_fps"):
        budget.check_targets(target_fps=0)
    with pytest.raises(ConfigError, match="--budget_gain"):
        budget.check_targets(5, gain=-1)
    with pytest.raises(ConfigError, match="has no knob"):
        budget.knob_of(types.SimpleNamespace(name="oracle"))
