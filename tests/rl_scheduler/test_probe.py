"""The policy and reward probes: known answers on hand-made data."""
import keras
import numpy as np
import pytest

from rl_scheduler import build_policy
from rl_scheduler.history import expert_options
from rl_scheduler.probe import policy_probe, reward_probe, ridge_r2
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
