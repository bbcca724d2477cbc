"""flownet2s.dff.DeepFeatureFlow: sizes, flow rescaling, identity, and a known translation."""
import keras
import numpy as np
import pytest

from deeplab_face import build_segmenter
from deeplab_face.errors import ConfigError
from flownet2s import build_flownet
from flownet2s.dff import DeepFeatureFlow, flow_input_size, mean_flow_magnitude, resize_flow


@pytest.fixture(scope="module")
def segmenter():
    keras.utils.set_random_seed(0)
    return build_segmenter("mobilenet_v2", 5, 65)


def constant_flow_net(input_size, flow_xy, channels):
    """Stand-in F returning a known, constant flow (in flow-input pixels) and scale 1."""
    key = keras.Input((input_size, input_size, 3), name="key_frame")
    current = keras.Input((input_size, input_size, 3), name="current_frame")
    zeros = keras.layers.AveragePooling2D(4)(key) * 0.0     # (B, s/4, s/4, 3), batch-shaped zeros
    flow = keras.layers.Concatenate()([zeros[..., :1] + flow_xy[0], zeros[..., :1] + flow_xy[1]])
    scale = keras.layers.Concatenate()([zeros[..., :1] + 1.0] * channels)
    six = keras.layers.AveragePooling2D(input_size)(current)
    return keras.Model([key, current], {"flow": flow, "scale": scale, "conv6": six, "conv6_1": six})


def test_flow_input_sizes():
    assert flow_input_size(513) == 512 and flow_input_size(513, "half") == 256
    assert flow_input_size(129) == 128 and flow_input_size(65, "half") == 32
    with pytest.raises(ConfigError, match="flow_resolution"):
        flow_input_size(513, "quarter")


def test_resize_flow_scales_vectors_align_corners():
    flow = np.zeros((1, 16, 16, 2), np.float32)
    flow[..., 0], flow[..., 1] = 63.0 / 16.0, -2 * 63.0 / 16.0   # input 64 -> grid 17: x 16/63
    out = np.asarray(resize_flow(flow, (17, 17), (64, 64)))
    assert out.shape == (1, 17, 17, 2)
    np.testing.assert_allclose(out[..., 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(out[..., 1], -2.0, atol=1e-6)


def test_mean_flow_magnitude():
    flow = np.zeros((2, 3, 3, 2), np.float32)
    flow[0, ..., 0], flow[0, ..., 1] = 3.0, 4.0
    np.testing.assert_allclose(np.asarray(mean_flow_magnitude(flow)), [5.0, 0.0])


@pytest.mark.parametrize("resolution", ["full", "half"])
def test_key_and_propagate_shapes(segmenter, resolution):
    dff = DeepFeatureFlow(segmenter, build_flownet(input_size=64), flow_resolution=resolution,
                          warp_jit=False)
    assert dff.feature_grid == (17, 17) and dff.crop_size == 65
    frames = np.random.default_rng(0).uniform(0, 255, (2, 65, 65, 3)).astype(np.float32)
    key = dff.key(frames)
    assert key["features"].shape == (2, 17, 17, 256) and key["probs"].shape == (2, 65, 65, 5)
    np.testing.assert_allclose(np.asarray(key["probs"]), np.asarray(segmenter(frames)), atol=1e-5)
    out = dff.propagate(frames, key["features"], frames[::-1])
    assert out["flow"].shape == (2, 17, 17, 2) and out["scale"].shape == (2, 17, 17, 256)
    assert out["conv6_1"].shape == (2, 1, 1, 384)   # ceil(64 / 64) = ceil(32 / 64) = 1
    assert dff.flow_input == ((64, 64) if resolution == "full" else (32, 32))
    np.testing.assert_allclose(np.asarray(out["probs"]).sum(-1), 1.0, atol=1e-5)
    # flow_outputs given: the same result without running F again.
    again = dff.propagate(frames, key["features"], frames[::-1], flow_outputs=dff.flow(frames, frames[::-1]))
    np.testing.assert_allclose(np.asarray(again["probs"]), np.asarray(out["probs"]), atol=1e-5)


def test_zero_flow_and_unit_scale_reproduce_the_key(segmenter):
    flow_net = build_flownet(input_size=64)
    layer = flow_net.get_layer("predict_flow2")
    layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    dff = DeepFeatureFlow(segmenter, flow_net, warp_jit=False)
    frames = np.random.default_rng(1).uniform(0, 255, (1, 65, 65, 3)).astype(np.float32)
    key = dff.key(frames)
    out = dff.propagate(frames, key["features"], frames[:, ::-1])
    np.testing.assert_allclose(np.asarray(out["features"]), np.asarray(key["features"]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(out["probs"]), np.asarray(key["probs"]), atol=1e-5)


def test_translated_frame_is_propagated_from_the_key(segmenter):
    """The current frame is the key moved right by 8 px = 2 feature-grid cells (grid 17 over 65).

    F (a stand-in returning the true backward flow, -8 frame px = -2 cells) drives the real
    resize + warp + task path; interior features must equal the key's, shifted right by 2.
    """
    rng = np.random.default_rng(2)
    key_frame = rng.uniform(0, 255, (1, 65, 65, 3)).astype(np.float32)
    current = np.roll(key_frame, 8, axis=2)
    # -2 grid cells, in flow-input pixels: x (input - 1) / (grid - 1) = 63 / 16.
    flow_net = constant_flow_net(64, (-2.0 * 63.0 / 16.0, 0.0), 256)
    dff = DeepFeatureFlow(segmenter, flow_net)
    key_features = np.asarray(dff.key(key_frame)["features"])
    out = dff.propagate(key_frame, key_features, current)
    propagated = np.asarray(out["features"])
    np.testing.assert_allclose(np.asarray(out["flow"])[..., 0], -2.0, atol=1e-5)
    np.testing.assert_allclose(propagated[:, :, 2:], key_features[:, :, :-2], atol=1e-4)
    assert np.all(propagated[:, :, :2] == 0.0)   # sampled from outside the key map: zeros (DFF)
    expected_probs = np.asarray(segmenter.task_net(propagated))
    np.testing.assert_allclose(np.asarray(out["probs"]), expected_probs, atol=1e-5)
    # The same through flow_outputs (a scheduler that already ran F).
    given = {"flow": np.full((1, 17, 17, 2), [-2.0, 0.0], np.float32),
             "scale": np.ones((1, 17, 17, 256), np.float32)}
    out2 = dff.propagate(key_frame, key_features, current, flow_outputs=given)
    np.testing.assert_allclose(np.asarray(out2["features"]), propagated, atol=1e-4)


def test_clamp_border_repeats_the_edge(segmenter):
    flow_net = constant_flow_net(64, (-2.0 * 63.0 / 16.0, 0.0), 256)
    dff = DeepFeatureFlow(segmenter, flow_net, border="clamp", warp_jit=False)
    frames = np.random.default_rng(3).uniform(0, 255, (1, 65, 65, 3)).astype(np.float32)
    key_features = np.asarray(dff.key(frames)["features"])
    out = np.asarray(dff.propagate(frames, key_features, frames)["features"])
    np.testing.assert_allclose(out[:, :, 0], key_features[:, :, 0], atol=1e-4)
    with pytest.raises(ConfigError, match="border"):
        DeepFeatureFlow(segmenter, flow_net, border="wrap")


def test_gather_resize_matches_the_deeplab_resize():
    from deeplab_face.models.layers import resize_align_corners
    x = np.random.default_rng(4).normal(size=(2, 13, 16, 5)).astype(np.float32)
    for size in ((17, 17), (12, 15), (13, 31), (1, 4), (4, 1)):
        np.testing.assert_allclose(np.asarray(resize_align_corners(x, size, method="gather")),
                                   np.asarray(resize_align_corners(x, size)), atol=1e-5, err_msg=str(size))


def test_stage_options_are_the_defaults(segmenter, tmp_path):
    import json
    from flownet2s import load_flownet
    flow_net = build_flownet(input_size=32)
    flow_net.save_weights(str(tmp_path / "final.weights.h5"))
    with open(tmp_path / "config.json", "w") as f:
        json.dump(dict(flow_net.flownet_args, flow_resolution="half", border="clamp"), f)
    dff = DeepFeatureFlow(segmenter, load_flownet(str(tmp_path)))
    assert dff.flow_input == (32, 32) and dff.border == "clamp"
    dff = DeepFeatureFlow(segmenter, load_flownet(str(tmp_path)), flow_resolution="full")
    assert dff.flow_input == (64, 64) and dff.flow_net.input_shape[0][1] == 64


def test_xla_warp_path_matches_the_plain_one(segmenter):
    flow_net = constant_flow_net(64, (2.3, -1.7), 256)
    plain = DeepFeatureFlow(segmenter, flow_net, warp_jit=False)
    xla = DeepFeatureFlow(segmenter, flow_net, warp_jit=True)
    frames = np.random.default_rng(5).uniform(0, 255, (2, 65, 65, 3)).astype(np.float32)
    features = plain.key(frames)["features"]
    a, b = plain.propagate(frames, features, frames), xla.propagate(frames, features, frames)
    np.testing.assert_allclose(np.asarray(b["features"]), np.asarray(a["features"]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(b["probs"]), np.asarray(a["probs"]), atol=1e-5)


def test_key_holder_is_deep_feature_flow_on_the_held_keys(segmenter):
    """The streaming runners' shared step (KeyHolder) gives DeepFeatureFlow's own results on the key
    it holds, for one stream and for several batched in any order."""
    from flownet2s.dff import KeyHolder

    dff = DeepFeatureFlow(segmenter, build_flownet(input_size=64), warp_jit=False)
    frames = np.random.default_rng(2).uniform(0, 255, (4, 65, 65, 3)).astype(np.float32)
    holder = KeyHolder(dff, streams=3)
    key = holder.key(frames[:2], streams=(0, 2), index=7)
    assert [holder.has_key(s) for s in range(3)] == [True, False, True] and holder.index(2) == 7
    np.testing.assert_array_equal(np.asarray(key["probs"]), np.asarray(dff.key(frames[:2])["probs"]))
    features = np.asarray(key["features"])
    out = holder.propagate(frames[2:3], streams=(2,))
    expected = dff.propagate(frames[1:2], features[1:2], frames[2:3])
    for name in ("features", "probs", "flow", "scale", "conv6_1"):
        np.testing.assert_array_equal(np.asarray(out[name]), np.asarray(expected[name]))
    flow = holder.flow(frames[2:4], streams=(2, 0))
    np.testing.assert_array_equal(np.asarray(flow["flow"]),
                                  np.asarray(dff.flow(frames[[1, 0]], frames[2:4])["flow"]))
    out = holder.propagate(frames[2:4], streams=(2, 0), flow_outputs=flow)
    expected = dff.propagate(frames[[1, 0]], features[[1, 0]], frames[2:4])
    np.testing.assert_array_equal(np.asarray(out["probs"]), np.asarray(expected["probs"]))
    holder.reset()
    assert not any(holder.has_key(s) for s in range(3))
