"""The environment core on the toy cache: stop rule, forced first key, rewards, shared pairs."""
import numpy as np
import pytest

from rl_scheduler.environment import KeyEnvironment, sampled_actions, threshold_actions
from tests.rl_scheduler.toy_env import ToyVideoCache


def _every_k(k, lkd_scale):
    """A policy that keys exactly every k frames, read off its own LKD input."""
    def policy(deviation, expert):
        distance = np.rint(expert[:, 1] / lkd_scale)
        return (distance >= k).astype(np.float32)
    return policy


@pytest.mark.parametrize("k,multiple", [(3, 4), (4, 5), (5, 3), (7, 2)])
def test_keying_at_the_limit_finishes_and_faster_stops(k, multiple):
    window = k * multiple
    env = KeyEnvironment([ToyVideoCache(5 * window + 1)], episode_length=5 * window, trials=3,
                         kar_limit=1.0 / k, window=window, lkd_scale=1.0 / window)
    exact = env.rollout(_every_k(k, 1.0 / window), threshold_actions(0.5), 0, 0)
    assert exact.completed.all()
    assert exact.active.all()
    keys = exact.actions[:, 0]
    assert np.array_equal(np.nonzero(keys)[0] + 1, np.arange(k, 5 * window, k))
    faster = env.rollout(_every_k(k - 1, 1.0 / window), threshold_actions(0.5), 0, 0)
    assert not faster.completed.any()
    # it stops right when the window holds more than window / k keys, before acting again
    stop = faster.active[:, 0].sum()
    keys_before_stop = faster.actions[:stop, 0]
    assert keys_before_stop[-window:].sum() == multiple + 1
    first_over = next(t for t in range(1, stop + 1)
                      if keys_before_stop[max(0, t - window):t].sum() > multiple)
    assert first_over == stop


def test_stop_before_acting_keeps_the_crossing_reward():
    always = lambda deviation, expert: np.ones(len(expert), np.float32)  # noqa: E731
    cache = ToyVideoCache(60, motion_rate=1.0, gain=0.5)
    before = KeyEnvironment([cache], episode_length=40, trials=2, kar_limit=0.2, window=20)
    ep = before.rollout(always, threshold_actions(0.5), 0, 0)
    np.testing.assert_array_equal(ep.active.sum(axis=0), [5, 5])   # 5/20 = 0.25 > 0.2 stops the 6th
    np.testing.assert_allclose(ep.rewards[:5], 0.5)
    assert (ep.rewards[5:] == 0).all()
    after = KeyEnvironment([cache], episode_length=40, trials=2, kar_limit=0.2, window=20, stop_check="after")
    ep = after.rollout(always, threshold_actions(0.5), 0, 0)
    np.testing.assert_array_equal(ep.active.sum(axis=0), [5, 5])
    np.testing.assert_allclose(ep.rewards[:4], 0.5)
    assert ep.rewards[4, 0] == 0.0                                 # the crossing key earns nothing


def test_first_frame_is_a_forced_key_and_rewards_follow_eq1():
    cache = ToyVideoCache(50, motion_rate=0.5, gain=0.4, cost=0.1, seed=3)
    env = KeyEnvironment([cache], episode_length=30, trials=4, kar_limit=1.0, window=10)
    rng = np.random.default_rng(0)
    ep = env.rollout(lambda d, e: np.full(len(e), 0.5, np.float32), sampled_actions(), 0, 7, rng)
    assert ep.frames[0] == 8 and len(ep.frames) == 29
    assert (ep.key_frames[0] == 7).all()                           # frame 7 was the forced key
    np.testing.assert_allclose(ep.expert[0], [[0.0, 1 / 90]] * 4)  # no decision in the history yet
    for t, i in enumerate(ep.frames):
        for j in range(4):
            expected = 0.0
            if ep.actions[t, j]:
                expected = cache.key(i).miou - cache.pair(ep.key_frames[t, j], i).miou
            assert ep.rewards[t, j] == pytest.approx(expected)
            if t + 1 < len(ep.frames):
                assert ep.key_frames[t + 1, j] == (i if ep.actions[t, j] else ep.key_frames[t, j])


def test_eq2_reward_uses_agreement():
    cache = ToyVideoCache(20, motion_rate=1.0, gain=0.3)
    env = KeyEnvironment([cache], episode_length=5, trials=1, kar_limit=1.0, reward="eq2", window=10)
    ep = env.rollout(lambda d, e: np.ones(1, np.float32), threshold_actions(0.5), 0, 0)
    np.testing.assert_allclose(ep.rewards[:, 0], 0.3)


def test_trials_share_pairs_and_step_as_one_batch():
    cache = ToyVideoCache(80, seed=1)
    calls = []

    def policy(deviation, expert):
        calls.append(len(expert))
        return np.full(len(expert), 0.1, np.float32)

    env = KeyEnvironment([cache], episode_length=60, trials=16, kar_limit=0.5, window=20)
    ep = env.rollout(policy, sampled_actions(), 0, 10, np.random.default_rng(5))
    assert calls == [16] * len(calls) and len(calls) == ep.active.any(axis=1).sum()
    distinct = {(int(ep.key_frames[t, j]), int(ep.frames[t])) for t, j in zip(*np.nonzero(ep.active))}
    assert cache.pair_computations == len(distinct) < ep.active.sum()
    assert len(cache.prefetched) == len(calls)                     # one prefetch per step


def test_sample_start_stays_inside_short_videos():
    env = KeyEnvironment([ToyVideoCache(12), ToyVideoCache(100)], episode_length=30, trials=2)
    rng = np.random.default_rng(0)
    for _ in range(50):
        video, start = env.sample_start(rng)
        assert start + env.length_for(video) <= env.caches[video].num_frames
    assert env.length_for(0) == 12
