"""The policy and reward probes: known answers on hand-made data."""
import keras
import numpy as np
import pytest

from rl_scheduler import build_policy
from rl_scheduler.history import expert_options
from rl_scheduler.policy import fit_deviation_norm
from rl_scheduler.probe import policy_probe, reward_probe, ridge_r2, select_ridge
from tests.rl_scheduler.toy_env import ToyVideoCache


def test_ridge_r2_is_one_on_a_linear_target_and_near_zero_on_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6))
    y = x @ np.arange(1.0, 7.0) + 0.5
    assert ridge_r2(x[:300], y[:300], x[300:], y[300:], ridge=1e-6) == pytest.approx(1.0, abs=1e-6)
    noise = rng.normal(size=400)
    assert ridge_r2(x[:300], noise[:300], x[300:], noise[300:]) < 0.05


def test_reward_probe_sees_motion_in_the_toy_features():
    """The toy's features carry the motion flag that decides the reward: R^2 is high for the
    features and near zero for the gap alone."""
    caches = [ToyVideoCache(120, motion_rate=0.4, seed=s) for s in range(3)]
    out = reward_probe(caches[:2], caches[2:], "conv6_1", samples=300, max_gap=20)
    assert out["r2_features"] > 0.9 and out["r2_gap"] < 0.1


def test_policy_probe_reports_lkd_dependence_and_spread():
    keras.utils.set_random_seed(0)
    policy = build_policy((2, 2, 4))
    kernel = policy.get_layer("fc3").kernel
    weights = np.zeros(kernel.shape, np.float32)
    weights[-1, 1] = 1.0                       # the key logit grows with the LKD input
    kernel.assign(weights)
    caches = [ToyVideoCache(60, seed=s) for s in range(2)]
    options = expert_options(0.1, "budget", "log")
    out = policy_probe(policy, caches, options, "conv6_1", 0.1, samples=16, max_gap=10)
    assert np.all(np.diff(out["p_key_mean"]) > 0)
    assert out["spread"] < 1e-6                 # no weight on the features: no spread across inputs
    assert len(out["p_key_by_kar"]) == len(out["kar_fraction"])


def test_select_ridge_shrinks_on_noise_and_not_on_a_clean_signal():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 40))
    assert select_ridge(x, x[:, 0] * 3.0) == 1.0
    assert select_ridge(x, rng.normal(size=300)) >= 1e3


def test_feature_norm_makes_a_tiny_tap_move_the_policy():
    """Taps of ~1e-3 with a 1e-4 spread (the tiny demo's Conv6 scale) barely move a raw policy's
    output; the standardised policy sees them at unit scale. The layer round-trips a save."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    taps = (3e-3 + 3e-4 * rng.normal(size=(64, 1, 1, 8))).astype(np.float32)
    expert = np.zeros((64, 2), np.float32)
    raw = build_policy((1, 1, 8))
    normed = build_policy((1, 1, 8), feature_norm=True)
    assert not fit_deviation_norm(raw, taps) and fit_deviation_norm(normed, taps)
    spread = lambda p: float(np.std(np.asarray(p([taps, expert]))[:, 1]))
    assert spread(normed) > 100 * spread(raw)
    scaled = np.asarray(normed.get_layer("deviation_norm")(taps))
    assert np.allclose(scaled.mean((0, 1, 2)), 0.0, atol=1e-3) and np.allclose(scaled.std((0, 1, 2)), 1.0, atol=1e-2)
