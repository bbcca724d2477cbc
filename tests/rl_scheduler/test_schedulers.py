import keras
import numpy as np
import pytest

from deeplab_face.errors import ConfigError
from rl_scheduler import build_policy
from rl_scheduler.dvsnet_decision import build_decision_network
from rl_scheduler.schedulers import make_scheduler


def _obs(i, magnitude=0.0, shape=(1, 2, 2, 8)):
    conv = np.full(shape, 0.1, np.float32)
    return dict(conv6=conv, conv6_1=conv, flow_magnitude=magnitude, frame_index=i)


def _run(scheduler, observations):
    scheduler.reset()
    out = []
    for obs in observations:
        is_key, score = scheduler.decide(obs)
        scheduler.record(is_key)
        out.append(is_key)
    return out


def test_fixed_interval():
    keys = _run(make_scheduler("fixed", threshold=4), [_obs(i) for i in range(13)])
    assert [i for i, k in enumerate(keys) if k] == [0, 4, 8, 12]


def test_frame_zero_is_always_a_key_and_resets():
    s = make_scheduler("flow_magnitude", threshold=1e9)
    keys = _run(s, [_obs(i) for i in range(5)])
    assert keys == [True, False, False, False, False]
    assert s.history.keys == 0 and s.history.last_key_distance == 5
    assert _run(s, [_obs(0)]) == [True] and s.history.last_key_distance == 1


def test_flow_magnitude_keys_above_threshold():
    mags = [0, 0.5, 2.5, 0.1, 3.0, 1.0]
    keys = _run(make_scheduler("flow_magnitude", threshold=1.0), [_obs(i, m) for i, m in enumerate(mags)])
    assert keys == [True, False, True, False, True, False]


def test_random_rate_and_seed():
    obs = [_obs(i) for i in range(4000)]
    a = _run(make_scheduler("random", threshold=8, seed=3), obs)
    b = _run(make_scheduler("random", threshold=8, seed=3), obs)
    c = _run(make_scheduler("random", threshold=8, seed=4), obs)
    assert a == b and a != c
    assert abs(np.mean(a[1:]) - 1 / 8) < 0.02


def test_dvsnet_keys_when_predicted_confidence_is_below_target():
    net = build_decision_network((2, 2, 8))
    score = float(net(_obs(1)["conv6_1"], training=False)[0, 0])
    below = make_scheduler("dvsnet", network=net, threshold=score + 1.0)
    above = make_scheduler("dvsnet", network=net, threshold=score - 1.0)
    assert _run(below, [_obs(0), _obs(1)]) == [True, True]
    assert _run(above, [_obs(0), _obs(1)]) == [True, False]
    assert below.decide(_obs(1))[1] == pytest.approx(score, abs=1e-4)


def test_rl_keys_when_key_probability_exceeds_threshold():
    policy = build_policy((2, 2, 8))
    s = make_scheduler("rl", policy=policy, threshold=0.5)
    s.decide(_obs(0))
    s.record(True)
    _, p = s.decide(_obs(1))
    expected = float(policy([_obs(1)["conv6_1"], np.array([[0.0, 1 / 90]], np.float32)])[0, 1])
    assert p == pytest.approx(expected, abs=1e-5)      # the state carries KAR = 0, LKD = 1/90
    for threshold, key in ((p - 1e-3, True), (p + 1e-3, False)):
        s = make_scheduler("rl", policy=policy, threshold=threshold)
        assert _run(s, [_obs(0), _obs(1)]) == [True, key]


def test_unknown_scheduler_is_a_config_error():
    with pytest.raises(ConfigError, match="scheduler"):
        make_scheduler("oracle")


def test_compiled_scores_equal_the_model_and_follow_weight_updates():
    policy = build_policy((2, 2, 8))
    network = build_decision_network((2, 2, 8))
    rl = make_scheduler("rl", policy=policy, deviation_tap="conv6")
    again = make_scheduler("rl", policy=policy, deviation_tap="conv6")
    assert again._forward is rl._forward                      # one compiled forward per model
    obs = dict(_obs(1), conv6=np.random.default_rng(0).normal(size=(1, 2, 2, 8)).astype(np.float32))
    policy.get_layer("fc3").bias.assign(np.array([0.0, -5.0], np.float32))
    expected = np.asarray(policy([obs["conv6"], rl.history.expert()], training=False))[0, 1]
    assert rl.score(obs) == pytest.approx(float(expected), abs=1e-6)
    policy.get_layer("fc3").bias.assign(np.array([0.0, 5.0], np.float32))   # trained further
    assert rl.score(obs) > 0.5 > expected                    # the compiled call reads the variables
    dvsnet = make_scheduler("dvsnet", network=network)
    expected = np.asarray(network(obs["conv6_1"], training=False))[0, 0]
    assert dvsnet.score(obs) == pytest.approx(float(expected), rel=1e-5)


def test_rl_motion_input_is_read_from_the_observation_since_the_key():
    """A policy with the motion input (expert_size 3) sees the flow magnitude since the key less its
    value at the first frame after the key, times the training's motion_scale."""
    keras.utils.set_random_seed(0)
    policy = build_policy((1, 1, 4), expert_size=3)
    kernel = policy.get_layer("fc3").kernel
    weights = np.zeros(kernel.shape, np.float32)
    weights[-1, 1] = 1.0                         # key logit = the motion input
    kernel.assign(weights)
    policy.get_layer("fc3").bias.assign(np.zeros(2, np.float32))
    policy.stage_config = {"training": {"kar_limit": 0.1, "kar_input": "budget", "lkd_input": "log",
                                        "motion_scale": 2.0}}
    scheduler = make_scheduler("rl", policy=policy, threshold=0.99)
    tap = np.zeros((1, 1, 1, 4), np.float32)
    obs = lambda i, m: dict(conv6=tap, conv6_1=tap, flow_magnitude=m, frame_index=i)  # noqa: E731
    scheduler.decide(obs(0, 0.0))
    scheduler.record(True)
    first = scheduler.decide(obs(1, 0.7))[1]        # the base: change 0
    scheduler.record(False)
    later = scheduler.decide(obs(2, 1.2))[1]        # change 0.5 x scale 2 = 1
    assert first == pytest.approx(0.5, abs=1e-6)
    assert later == pytest.approx(1.0 / (1.0 + np.exp(-1.0)), abs=1e-5)
