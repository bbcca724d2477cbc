"""The environment core on the toy cache: stop rule, forced first key, rewards, shared pairs."""
import numpy as np
import pytest

from rl_scheduler.environment import KeyEnvironment, sampled_actions, threshold_actions
from tests.rl_scheduler.toy_env import ToyVideoCache

# The paper's reconstructed semantics: Eq. 1 credits the key's own frame; raw KAR, LKD / H.
PAPER = dict(reward_credit="frame", kar_input="raw", lkd_input="linear")


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
                         kar_limit=1.0 / k, window=window, lkd_scale=1.0 / window, **PAPER)
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
    before = KeyEnvironment([cache], episode_length=40, trials=2, kar_limit=0.2, window=20, **PAPER)
    ep = before.rollout(always, threshold_actions(0.5), 0, 0)
    np.testing.assert_array_equal(ep.active.sum(axis=0), [5, 5])   # 5/20 = 0.25 > 0.2 stops the 6th
    np.testing.assert_allclose(ep.rewards[:5], 0.5)
    assert (ep.rewards[5:] == 0).all()
    after = KeyEnvironment([cache], episode_length=40, trials=2, kar_limit=0.2, window=20, stop_check="after", **PAPER)
    ep = after.rollout(always, threshold_actions(0.5), 0, 0)
    np.testing.assert_array_equal(ep.active.sum(axis=0), [5, 5])
    np.testing.assert_allclose(ep.rewards[:4], 0.5)
    assert ep.rewards[4, 0] == 0.0                                 # the crossing key earns nothing


def test_first_frame_is_a_forced_key_and_rewards_follow_eq1():
    cache = ToyVideoCache(50, motion_rate=0.5, gain=0.4, cost=0.1, seed=3)
    env = KeyEnvironment([cache], episode_length=30, trials=4, kar_limit=1.0, window=10, **PAPER)
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
    env = KeyEnvironment([cache], episode_length=5, trials=1, kar_limit=1.0, reward="eq2", window=10, **PAPER)
    ep = env.rollout(lambda d, e: np.ones(1, np.float32), threshold_actions(0.5), 0, 0)
    np.testing.assert_allclose(ep.rewards[:, 0], 0.3)


def test_trials_share_pairs_and_step_as_one_batch():
    cache = ToyVideoCache(80, seed=1)
    calls = []

    def policy(deviation, expert):
        calls.append(len(expert))
        return np.full(len(expert), 0.1, np.float32)

    env = KeyEnvironment([cache], episode_length=60, trials=16, kar_limit=0.5, window=20, **PAPER)
    ep = env.rollout(policy, sampled_actions(), 0, 10, np.random.default_rng(5))
    assert calls == [16] * len(calls) and len(calls) == ep.active.any(axis=1).sum()
    distinct = {(int(ep.key_frames[t, j]), int(ep.frames[t])) for t, j in zip(*np.nonzero(ep.active))}
    assert cache.pair_computations == len(distinct) < ep.active.sum()
    assert len(cache.prefetched) == len(calls)                     # one prefetch per step


def test_sample_start_stays_inside_short_videos():
    env = KeyEnvironment([ToyVideoCache(12), ToyVideoCache(100)], episode_length=30, trials=2, **PAPER)
    rng = np.random.default_rng(0)
    for _ in range(50):
        video, start = env.sample_start(rng)
        assert start + env.length_for(video) <= env.caches[video].num_frames
    assert env.length_for(0) == 12


class _GapCache(ToyVideoCache):
    """Propagation loses 0.01 per frame of distance to the key: q(k, j) = 0.01 (j - k)."""

    def _make(self, k, i):
        pair = super()._make(k, i)
        return pair._replace(miou=0.9 - 0.01 * (i - k))


def test_span_credit_counts_the_frames_a_key_serves():
    cache = _GapCache(40)
    env = KeyEnvironment([cache], episode_length=21, trials=1, kar_limit=1.0, window=10, credit_horizon=100)
    key_at = {5, 12}                                          # decided keys at frames 5 and 12

    def policy(deviation, expert):
        policy.t += 1
        return np.full(len(expert), float(policy.t in key_at), np.float32)
    policy.t = 0
    ep = env.rollout(policy, threshold_actions(0.5), 0, 0)
    # key 5 (prev 0): sum_{j=5}^{20} 0.01 [(j - 0) - (j - 5)] = 16 * 0.05, as if no later key came
    # key 12 (prev 5): sum_{j=12}^{20} 0.01 [(j - 5) - (j - 12)] = 9 * 0.07
    assert ep.rewards[4, 0] == pytest.approx(16 * 0.05)
    assert ep.rewards[11, 0] == pytest.approx(9 * 0.07)
    # the return telescopes to the total loss removed: sum_j q(0, j) - sum_j q(key(j), j)
    no_keys = sum(0.01 * j for j in range(1, 21))
    with_keys = sum(0.01 * j for j in range(1, 5)) + sum(0.01 * (j - 5) for j in range(6, 12)) \
        + sum(0.01 * (j - 12) for j in range(13, 21))
    assert ep.returns[0] == pytest.approx(no_keys - with_keys)
    # frame credit pays each key its own frame's gain only: 0.05 and 0.07
    frame = KeyEnvironment([cache], episode_length=21, trials=1, kar_limit=1.0, window=10, reward_credit="frame")
    policy.t = 0
    ep = frame.rollout(policy, threshold_actions(0.5), 0, 0)
    assert ep.rewards.sum() == pytest.approx(0.05 + 0.07)


def test_span_credit_horizon_and_saturated_loss():
    cache = _GapCache(40)
    env = KeyEnvironment([cache], episode_length=21, trials=1, kar_limit=1.0, window=10, credit_horizon=8)

    def policy(deviation, expert):
        policy.t += 1
        return np.full(len(expert), float(policy.t in (5, 15)), np.float32)
    policy.t = 0
    ep = env.rollout(policy, threshold_actions(0.5), 0, 0)
    # key 5: frames 5..12 (8 frames); q(0, j) saturates at q(0, 8) = 0.08 for j > 8
    expected = sum(0.01 * min(j, 8) - 0.01 * (j - 5) for j in range(5, 13))
    assert ep.rewards[4, 0] == pytest.approx(expected)
    # key 15 (prev 5): frames 15..20; q(5, j) saturates at 0.08
    assert ep.rewards[14, 0] == pytest.approx(sum(0.08 - 0.01 * (j - 15) for j in range(15, 21)))


def test_rollout_many_batches_episodes_into_one_policy_call():
    caches = [ToyVideoCache(60, seed=s) for s in range(3)]
    env = KeyEnvironment(caches, episode_length=20, trials=4, kar_limit=0.5, window=10)
    calls = []

    def policy(deviation, expert):
        calls.append(len(expert))
        return np.full(len(expert), 0.2, np.float32)
    episodes = env.rollout_many(policy, sampled_actions(), [(0, 3), (2, 10), (1, 0)], np.random.default_rng(0))
    assert set(calls) == {12} and len(episodes) == 3
    for e, (video, start) in zip(episodes, [(0, 3), (2, 10), (1, 0)]):
        assert e.video == video and e.frames[0] == start + 1 and e.key_frames.shape == (19, 4)
        # each trial's key frames are its own decisions (or the forced start)
        for j in range(4):
            keys = [start] + [int(f) for f in e.frames[e.actions[:, j]]]
            for t, f in enumerate(e.frames):
                assert e.key_frames[t, j] == max(k for k in keys if k < f)


def test_budget_and_log_expert_inputs():
    env = KeyEnvironment([ToyVideoCache(40)], episode_length=30, trials=1, kar_limit=0.1, window=10)
    ep = env.rollout(lambda d, e: np.full(len(e), float(e[0, 1] > 2.9), np.float32), threshold_actions(0.5), 0, 0,
                     enforce_limit=False)
    assert ep.actions.sum() >= 3
    lkd = np.rint(np.exp2(ep.expert[:, 0, 1]) - 1)
    np.testing.assert_allclose(lkd, ep.frames - ep.key_frames[:, 0])    # log2(1 + LKD)
    keys_in_window = np.array([ep.actions[max(0, t - 10):t, 0].sum() for t in range(len(ep.frames))])
    np.testing.assert_allclose(ep.expert[:, 0, 0], keys_in_window / 10 / 0.1, rtol=1e-6)   # KAR / eta


def test_flow_change_motion_input_is_the_magnitude_since_the_key_less_its_first_value():
    cache = ToyVideoCache(40, motion_rate=0.5, seed=3)
    env = KeyEnvironment([cache], episode_length=30, trials=2, kar_limit=0.1, window=10,
                         motion_input="flow_change", motion_scale=2.0)
    assert env.expert_size == 3
    ep = env.rollout(lambda d, e: np.full(len(e), 0.2, np.float32), sampled_actions(), 0, 0,
                     rng=np.random.default_rng(0), enforce_limit=False)
    assert ep.expert.shape[-1] == 3
    for t in range(len(ep.frames)):
        for j in range(2):
            k, i = int(ep.key_frames[t, j]), int(ep.frames[t])
            expected = 2.0 * (cache.pair(k, i).flow_magnitude - cache.pair(k, k + 1).flow_magnitude)
            assert ep.expert[t, j, 2] == pytest.approx(expected)
    assert np.any(ep.expert[:, :, 2] != 0)
    assert env.flow_change_scale(np.random.default_rng(0)) > 0
