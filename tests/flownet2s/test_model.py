"""flownet2s.model: FlowNet2-S/-s sizes, shapes, scale heads, normalisation, loading, parity."""
import json

import keras
import numpy as np
import pytest

from deeplab_face.errors import CheckpointError, ConfigError
from flownet2s import build_flownet, load_flownet
from flownet2s.model import (CropTo, PairNormalization, count_flow_parameters, resized_flownet,
                             scale_head_layer_names)
from tests.backend_parity import numpy_backend_outputs

# DVSNet's `FlowNets` variables (flownet_dff.md "Checkpoint names"): an independent count of
# the 3/8-width net (conv/predict biases; deconvs and upsamples have none).
DVSNET_SHAPES = {
    "conv1": (7, 7, 6, 24), "conv2": (5, 5, 24, 48), "conv3": (5, 5, 48, 96),
    "conv3_1": (3, 3, 96, 96), "conv4": (3, 3, 96, 192), "conv4_1": (3, 3, 192, 192),
    "conv5": (3, 3, 192, 192), "conv5_1": (3, 3, 192, 192), "conv6": (3, 3, 192, 384),
    "conv6_1": (3, 3, 384, 384), "predict_flow6": (3, 3, 384, 2), "predict_flow5": (3, 3, 386, 2),
    "predict_flow4": (3, 3, 290, 2), "predict_flow3": (3, 3, 146, 2), "predict_flow2": (3, 3, 74, 2),
    "deconv5": (4, 4, 192, 384), "deconv4": (4, 4, 96, 386), "deconv3": (4, 4, 48, 290),
    "deconv2": (4, 4, 24, 146), "upsample_flow6to5": (4, 4, 2, 2), "upsample_flow5to4": (4, 4, 2, 2),
    "upsample_flow4to3": (4, 4, 2, 2), "upsample_flow3to2": (4, 4, 2, 2)}


def test_flownet2_S_has_the_published_size():
    model = build_flownet(width=1.0, input_size=64)
    assert count_flow_parameters(model) == pytest.approx(38.68e6, abs=0.006e6)  # FlowNet 2.0: 38.68 M


def test_flownet2_s_matches_dvsnet_variables():
    model = build_flownet(width=0.375, input_size=64, scale_head="dvsnet", feature_channels=19)
    for name, shape in DVSNET_SHAPES.items():
        layer = model.get_layer(name)
        assert tuple(layer.kernel.shape) == shape, name
        assert (layer.bias is not None) == (not name.startswith(("deconv", "upsample"))), name
    expected = sum(int(np.prod(s)) + (0 if n.startswith(("deconv", "upsample")) else s[-1])
                   for n, s in DVSNET_SHAPES.items())
    assert count_flow_parameters(model) == expected
    assert tuple(model.get_layer("predict_scale").kernel.shape) == (3, 3, 74, 19)
    assert scale_head_layer_names(model) == ["predict_scale"]


@pytest.mark.parametrize("size", [64, 128, (64, 128)])
def test_output_shapes(size):
    h, w = (size, size) if isinstance(size, int) else size
    model = build_flownet(input_size=size, feature_channels=16)
    frames = np.random.default_rng(0).uniform(0, 255, (2, h, w, 3)).astype(np.float32)
    out = model([frames, frames[::-1]])
    assert out["flow"].shape == (2, h // 4, w // 4, 2)
    assert out["scale"].shape == (2, h // 4, w // 4, 16)
    assert out["conv6"].shape == out["conv6_1"].shape == (2, h // 64, w // 64, 384)
    # conv6_1 is tapped after its LeakyReLU 0.1 (DVSNet's `feature`).
    pre = keras.Model(model.inputs, model.get_layer("conv6_1").output)([frames, frames[::-1]])
    pre = np.asarray(pre)
    np.testing.assert_allclose(np.asarray(out["conv6_1"]), np.where(pre > 0, pre, 0.1 * pre), rtol=1e-6)
    assert pre.min() < 0
    np.testing.assert_array_equal(np.asarray(out["scale"]), 1.0)   # weights 0, bias 1


def test_513_input_gives_the_os4_grid():
    model = build_flownet(input_size=513, feature_channels=4)
    frames = np.zeros((1, 513, 513, 3), np.float32)
    out = model([frames, frames])
    assert out["flow"].shape == (1, 129, 129, 2) and out["conv6_1"].shape == (1, 9, 9, 384)


def test_flow_is_predict_flow2_times_20():
    model = build_flownet(input_size=64, feature_channels=4)
    layer = model.get_layer("predict_flow2")
    kernel, bias = layer.get_weights()
    layer.set_weights([np.zeros_like(kernel), np.array([0.25, -0.5], np.float32)])
    frames = np.zeros((1, 64, 64, 3), np.float32)
    flow = np.asarray(model([frames, frames])["flow"])
    np.testing.assert_allclose(flow[..., 0], 5.0)
    np.testing.assert_allclose(flow[..., 1], -10.0)


def test_pair_normalisations():
    rng = np.random.default_rng(1)
    key = rng.uniform(0, 255, (1, 4, 4, 3)).astype(np.float32)
    current = rng.uniform(0, 255, (1, 4, 4, 3)).astype(np.float32)
    pair = np.asarray(PairNormalization("pair_mean")([key, current]))
    # [current, key], BGR, minus the colour mean over both frames, / 255.
    both = np.concatenate([current, key], axis=0)
    mean = both.mean(axis=(0, 1, 2))
    np.testing.assert_allclose(pair[..., :3], ((current - mean) / 255.0)[..., ::-1], atol=1e-6)
    np.testing.assert_allclose(pair[..., 3:], ((key - mean) / 255.0)[..., ::-1], atol=1e-6)
    scale_only = np.asarray(PairNormalization("scale_only")([key, current]))
    np.testing.assert_allclose(scale_only[..., 3:], key[..., ::-1] / 255.0, atol=1e-6)
    dff = np.asarray(PairNormalization("dff")([key, current]))
    np.testing.assert_allclose(dff[..., :3], (current - [123.15, 115.90, 103.06]) / 255.0, atol=1e-6)
    with pytest.raises(ConfigError, match="normalization"):
        PairNormalization("nope")


def test_custom_layers_round_trip_their_config():
    norm = PairNormalization.from_config(PairNormalization("dff", name="n").get_config())
    crop = CropTo.from_config(CropTo((5, 7), name="c").get_config())
    assert norm.normalization == "dff" and crop.size == (5, 7)


def test_load_flownet_round_trip_and_resize(tmp_path):
    model = build_flownet(input_size=64, feature_channels=8, scale_head="dvsnet")
    model.save_weights(str(tmp_path / "final.weights.h5"))
    with open(tmp_path / "config.json", "w") as f:
        json.dump(dict(model.flownet_args, steps=3), f)
    loaded = load_flownet(str(tmp_path))
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    bigger = resized_flownet(loaded, 128)
    assert bigger.input_shape[0][1] == 128
    for a, b in zip(model.get_weights(), bigger.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(CheckpointError, match="config.json: not found"):
        load_flownet(str(tmp_path / "missing"))


def test_numpy_backend_parity(tmp_path):
    kwargs = dict(width=0.375, feature_channels=8, input_size=64, scale_head="dvsnet")
    model = build_flownet(**kwargs)
    rng = np.random.default_rng(2)
    for layer in ("predict_scale",):   # non-trivial scale weights so the head is compared too
        weights = model.get_layer(layer).get_weights()
        model.get_layer(layer).set_weights([rng.normal(0, 0.01, w.shape).astype(np.float32)
                                            for w in weights])
    frames = [rng.uniform(0, 255, (1, 64, 64, 3)).astype(np.float32) for _ in range(2)]
    expected = {k: np.asarray(v) for k, v in model(frames).items()}
    got = numpy_backend_outputs("flownet2s:build_flownet", kwargs, model, frames, tmp_path)
    for name in ("flow", "scale", "conv6", "conv6_1"):
        np.testing.assert_allclose(got[name], expected[name], atol=1e-3, rtol=1e-3, err_msg=name)
