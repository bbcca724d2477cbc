import json

import keras
import numpy as np
import pytest

from rl_scheduler import build_policy, expert_weights, load_dvsnet, load_policy
from rl_scheduler.dvsnet_decision import build_decision_network
from tests.backend_parity import numpy_backend_outputs


def test_layout_matches_section_3_2():
    policy = build_policy((9, 9, 384))
    assert policy.get_layer("conv0").filters == 96
    assert policy.get_layer("conv0").kernel.shape == (3, 3, 384, 96)
    assert [policy.get_layer(f"fc{i}").units for i in range(4)] == [1024, 1024, 128, 2]
    assert policy.get_layer("fc0").kernel.shape[0] == 9 * 9 * 96      # SAME keeps the 9x9 grid
    assert policy.get_layer("fc3").kernel.shape == (130, 2)            # 128 + KAR + LKD
    x = np.random.default_rng(0).normal(size=(3, 9, 9, 384)).astype(np.float32)
    probs = np.asarray(policy([x, np.zeros((3, 2), np.float32)]))
    assert probs.shape == (3, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_expert_weights_read_the_kar_and_lkd_rows():
    policy = build_policy((2, 2, 8))
    kernel = np.zeros((130, 2), np.float32)
    kernel[128] = [0.5, 2.0]       # KAR
    kernel[129] = [-1.0, -4.0]     # LKD
    policy.get_layer("fc3").kernel.assign(kernel)
    assert expert_weights(policy) == pytest.approx((1.5, -3.0))
    # the logit difference moves exactly by these weights when KAR/LKD move
    x = np.zeros((2, 2, 2, 8), np.float32)
    probs = np.asarray(policy([x, np.array([[0, 0], [1, 0]], np.float32)]))
    logit = np.log(probs[:, 1] / probs[:, 0])
    assert logit[1] - logit[0] == pytest.approx(1.5, abs=1e-4)


def test_optional_resize_to_dvsnet_grid():
    policy = build_policy((9, 9, 16), deviation_size=(4, 8))
    assert policy.get_layer("fc0").kernel.shape[0] == 4 * 8 * 96


def test_dvsnet_decision_layout():
    net = build_decision_network((4, 8, 384))
    assert net.get_layer("conv").kernel.shape == (3, 3, 384, 96)
    assert [net.get_layer(f"fc{i}").units for i in range(3)] == [1024, 1024, 10]
    assert net.get_layer("fc0").kernel.shape[0] == 3072
    for name in ("fc0", "fc1", "fc2", "score"):
        np.testing.assert_allclose(np.asarray(net.get_layer(name).bias), 0.1)
    assert len([layer for layer in net.layers if isinstance(layer, keras.layers.Dropout)]) == 3
    x = np.random.default_rng(0).normal(size=(2, 4, 8, 384)).astype(np.float32)
    a, b = np.asarray(net(x, training=False)), np.asarray(net(x, training=False))
    np.testing.assert_array_equal(a, b)                          # dropout only in training
    assert a.shape == (2, 1)


def test_numpy_backend_parity(tmp_path):
    policy = build_policy((3, 3, 16))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 3, 16)).astype(np.float32)
    expert = np.array([[0.1, 0.3], [0.0, 1.2]], np.float32)
    expected = np.asarray(policy([x, expert]))
    got = numpy_backend_outputs("rl_scheduler:build_policy", dict(deviation_shape=[3, 3, 16]),
                                policy, [x, expert], tmp_path)
    np.testing.assert_allclose(got["output_0"], expected, atol=1e-5)


def test_load_round_trip(tmp_path):
    from deeplab_face.errors import CheckpointError
    policy = build_policy((2, 2, 8))
    policy.save_weights(str(tmp_path / "final.weights.h5"))
    (tmp_path / "config.json").write_text(json.dumps(
        dict(deviation_shape=[2, 2, 8], activation="leaky_relu", deviation_size=None, deviation_tap="conv6")))
    loaded = load_policy(str(tmp_path))
    assert loaded.deviation_tap == "conv6"
    x = np.ones((1, 2, 2, 8), np.float32)
    e = np.array([[0.2, 0.1]], np.float32)
    np.testing.assert_allclose(np.asarray(loaded([x, e])), np.asarray(policy([x, e])), atol=1e-6)
    with pytest.raises(CheckpointError, match="config.json"):
        load_dvsnet(str(tmp_path / "missing"))
