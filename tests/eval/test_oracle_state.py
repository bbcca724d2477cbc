"""eval.oracle_state: the RL policy's Conv6 taps replaced by the pair's true gain (a reference that reads the
labels) or by a label-free pixel change since the key. The end-to-end run on a finished workdir is
tests/eval/test_reproduce.py's (the smoke workdir)."""
import numpy as np
import pytest

from eval.oracle_state import (STATES, FlowChangeStateCache, FrameDifferenceStateCache, GainStateCache,
                               RelativeFrameDifferenceStateCache, oracle_state, oracle_state_markdown, output_name, stage_name, state_r2)
from tests.eval.test_causal_oracle import CutsCache


def test_pairs_carry_the_true_gain_in_place_of_the_conv6_taps():
    cache = CutsCache()
    wrapped = GainStateCache(cache)
    assert wrapped.num_frames == cache.num_frames and wrapped.batch_size == cache.batch_size
    for k, i in [(0, 5), (0, 13), (13, 30), (13, 31)]:      # within a shot and across a cut
        entry, plain = wrapped.pair(k, i), cache.pair(k, i)
        gain = cache.key(i).miou - plain.miou
        for tap in ("conv6", "conv6_1"):
            assert getattr(entry, tap).shape == getattr(plain, tap).shape
            np.testing.assert_allclose(getattr(entry, tap), gain, rtol=1e-6)
        assert entry.miou == plain.miou and entry.agreement == plain.agreement
        np.testing.assert_array_equal(entry.confusion, plain.confusion)
    assert wrapped.pair(13, 31).conv6.mean() > wrapped.pair(0, 5).conv6.mean() + 0.5   # a cut: keys pay


def test_a_tap_the_cache_does_not_keep_stays_none():
    cache = CutsCache()
    plain = cache.pair(0, 3)
    cache.pair = lambda k, i: plain._replace(conv6=None)
    entry = GainStateCache(cache).pair(0, 3)
    assert entry.conv6 is None and float(entry.conv6_1.mean()) == pytest.approx(0.95 - plain.miou)


def test_the_table_never_fills_a_missing_point():
    point = lambda aki, miou: dict(aki=aki, miou=miou, target_aki=aki, calibrated=True)  # noqa: E731
    out = {"fixed": [point(25.0, 43.0), point(50.0, 42.0)], "rl": [point(25.0, 42.5)],
           "rl_gain_state": [point(25.4, 43.8)]}
    table = oracle_state_markdown(out, [25.0, 50.0])
    assert "| 25 | 43.00 (25.0) | 42.50 (25.0) | 43.80 (25.4) | -0.50 | +0.80 |" in table
    assert "| 50 | 42.00 (50.0) | - | - | - | - |" in table


def test_it_needs_a_finished_workdir(tmp_path):
    from deeplab_face.errors import ConfigError

    with pytest.raises(ConfigError, match=r"checkpoints/segmenter is not a finished stage"):
        oracle_state(str(tmp_path))


def test_target_akis_must_be_numbers():
    from deeplab_face.errors import ConfigError
    from eval.workdir import parse_target_akis

    assert parse_target_akis(["5", "25.5"]) == [5.0, 25.5]
    with pytest.raises(ConfigError, match=r"--target_akis: 5,ten is not a list of numbers"):
        parse_target_akis(["5", "ten"])


class FramesCache(CutsCache):
    """CutsCache with frames: a flat grey that brightens by 2 levels a frame, twice as fast from frame 30."""

    def __init__(self):
        super().__init__(frames=40)
        level = np.cumsum([0] + [2 if j < 30 else 4 for j in range(1, self.num_frames)])
        self.images = np.tile((40 + level).astype(np.uint8)[:, None, None, None], (1, 6, 6, 3))


def test_the_frame_difference_is_the_mean_pixel_change_since_the_key():
    cache = FramesCache()
    wrapped = FrameDifferenceStateCache(cache)
    for k, i, levels in [(0, 1, 2), (0, 10, 20), (5, 35, 24 * 2 + 6 * 4), (30, 32, 8)]:
        entry = wrapped.pair(k, i)
        np.testing.assert_allclose(entry.conv6, levels / 255.0, rtol=1e-6)
        np.testing.assert_allclose(entry.conv6_1, levels / 255.0, rtol=1e-6)
        assert entry.miou == cache.pair(k, i).miou      # the reward still reads the labels


def test_the_relative_frame_difference_divides_by_the_running_consecutive_change():
    wrapped = RelativeFrameDifferenceStateCache(FramesCache())
    # up to frame 30 every step is 2 levels: the state is the gap
    np.testing.assert_allclose(wrapped.pair(0, 10).conv6, 10.0, rtol=1e-6)
    np.testing.assert_allclose(wrapped.pair(20, 25).conv6, 5.0, rtol=1e-6)
    # at frame 35 the running mean step is (29 * 2 + 6 * 4) / 35: causal, it has not seen frames 36-39
    np.testing.assert_allclose(wrapped.pair(30, 35).conv6, 20.0 / ((29 * 2 + 6 * 4) / 35), rtol=1e-6)


class MotionCache(CutsCache):
    """CutsCache whose flow magnitude from k to i is an offset of 0.3 plus 0.1 per frame of the gap, and
    whose Conv6 taps differ per pair."""

    def pair(self, k, i):
        entry = super().pair(k, i)
        return entry._replace(flow_magnitude=0.3 + 0.1 * (i - k), conv6=np.full((1, 1, 1, 4), k + 0.01 * i, np.float32))


def test_the_flow_change_state_keeps_the_taps_and_trains_with_the_motion_input():
    cache = MotionCache()
    wrapped = FlowChangeStateCache(cache)
    for k, i in [(0, 1), (0, 5), (13, 40)]:
        entry, plain = wrapped.pair(k, i), cache.pair(k, i)
        np.testing.assert_array_equal(entry.conv6, plain.conv6)           # Conv6 stays the policy's input
        assert wrapped.value(k, i, entry) == pytest.approx(0.1 * (i - k - 1))   # m(k, i) - m(k, k + 1)
    assert FlowChangeStateCache.options == {"motion_input": "flow_change"}
    assert GainStateCache.options == {"feature_norm": "standardize"}       # the replacing states: standardised


def test_each_state_has_its_own_stage_and_files_and_an_unknown_one_is_refused(tmp_path):
    from deeplab_face.errors import ConfigError

    assert stage_name("gain") == "rl_gain_state" and output_name("gain") == "oracle_state"
    names = {stage_name(s) for s in STATES} | {output_name(s) for s in STATES}
    assert len(names) == 2 * len(STATES)
    with pytest.raises(ConfigError, match=r"--state: 'flow' is not one of gain, frame_difference, relative_frame_difference, flow_change"):
        oracle_state(str(tmp_path), state="flow")
    point = dict(aki=25.0, miou=44.0, target_aki=25.0, calibrated=True)
    table = oracle_state_markdown({"fixed": [point], "rl_frame_difference_state": [dict(point, miou=43.0)]},
                                  [25.0], state="frame_difference")
    assert "frame-difference state - fixed" in table and "| 25 | 44.00 (25.0) | - | 43.00 (25.0) | - | -1.00 |" in table


def test_the_noisy_gain_is_fixed_per_pair_and_predicts_the_gain_only_so_well():
    cache = CutsCache()
    exact = GainStateCache(cache, "011")
    noisy, again, other = (GainStateCache(cache, v, gain_noise=0.3) for v in ("011", "011", "900"))
    pairs = [(k, i) for k in range(0, 50, 3) for i in range(k + 1, min(k + 10, 60))]
    errors = np.array([noisy.value(k, i, cache.pair(k, i)) - exact.value(k, i, cache.pair(k, i)) for k, i in pairs])
    assert [noisy.value(k, i, cache.pair(k, i)) for k, i in pairs] == \
        [again.value(k, i, cache.pair(k, i)) for k, i in pairs]          # one draw per (video, k, i)
    assert noisy.pair(3, 7).conv6.mean() == pytest.approx(noisy.value(3, 7, cache.pair(3, 7)), rel=1e-6)
    assert other.value(3, 7, cache.pair(3, 7)) != noisy.value(3, 7, cache.pair(3, 7))
    assert 0.2 < errors.std() < 0.4 and abs(errors.mean()) < 0.1
    assert state_r2([exact], pairs=200, max_gap=20) == pytest.approx(1.0)
    r2 = [state_r2([GainStateCache(cache, "011", gain_noise=n)], pairs=200, max_gap=20) for n in (0.05, 0.3, 1.0)]
    assert 1.0 > r2[0] > r2[1] > r2[2]


def test_the_noise_names_its_stage_and_needs_the_gain_state(tmp_path):
    from deeplab_face.errors import ConfigError

    assert stage_name("gain", 0.1) == "rl_gain_noise0.1_state" and output_name("gain", 0.1) == "oracle_state_gain_noise0.1"
    assert stage_name("gain", 0.0) == "rl_gain_state"
    with pytest.raises(ConfigError, match=r"--gain_noise: 0.1 applies to --state=gain only, not frame_difference"):
        oracle_state(str(tmp_path), state="frame_difference", gain_noise=0.1)
