"""eval.oracle_state: the RL policy's Conv6 taps replaced by the pair's true gain (a reference that reads the
labels). The end-to-end run on a finished workdir is tests/eval/test_reproduce.py's (the smoke workdir)."""
import numpy as np
import pytest

from eval.oracle_state import GainStateCache, oracle_state, oracle_state_markdown
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
