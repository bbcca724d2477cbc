"""flownet2s.warp: against independent references (numpy loops, scipy.ndimage), exact shifts,
identity, gradients, DVSNet's swapped-weight mode, backend parity."""
import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from flownet2s.warp import Warp, warp
from tests.backend_parity import numpy_backend_outputs


def reference_warp(features, flow, border):
    """Plain-loop bilinear backward warp: out(p) = f(p + flow(p)), flow = (x, y)."""
    b_, h, w, c = features.shape
    out = np.zeros_like(features, dtype=np.float64)
    for b in range(b_):
        for i in range(h):
            for j in range(w):
                x = j + float(flow[b, i, j, 0])
                y = i + float(flow[b, i, j, 1])
                if border == "clamp":
                    x, y = min(max(x, 0.0), w - 1.0), min(max(y, 0.0), h - 1.0)
                x0, y0 = int(np.floor(x)), int(np.floor(y))
                for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                    weight = (1.0 - abs(x - xx)) * (1.0 - abs(y - yy))
                    if weight == 0.0:
                        continue
                    if 0 <= xx < w and 0 <= yy < h:
                        out[b, i, j] += weight * features[b, yy, xx]
                    elif border == "clamp":  # only reached with weight 0 after clamping
                        raise AssertionError("clamped sample outside the map")
    return out


def scipy_warp(features, flow, border):
    """scipy.ndimage.map_coordinates (order 1): zeros = 'grid-constant', clamp = clipped coords."""
    b_, h, w, c = features.shape
    out = np.zeros_like(features, dtype=np.float64)
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float64)
    for b in range(b_):
        y = gy + flow[b, ..., 1]
        x = gx + flow[b, ..., 0]
        if border == "clamp":
            y, x = np.clip(y, 0, h - 1), np.clip(x, 0, w - 1)
        mode = "grid-constant" if border == "zeros" else "nearest"
        for ch in range(c):
            out[b, ..., ch] = ndimage.map_coordinates(features[b, ..., ch].astype(np.float64),
                                                      [y, x], order=1, mode=mode, cval=0.0)
    return out


def random_case(seed, shape=(2, 7, 9, 3), spread=3.0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=shape).astype(np.float32)
    flow = rng.uniform(-spread, spread, size=shape[:3] + (2,)).astype(np.float32)
    return features, flow


@pytest.mark.parametrize("border", ["zeros", "clamp"])
def test_matches_the_loop_and_scipy_references(border):
    features, flow = random_case(0)
    got = np.asarray(warp(features, flow, border=border))
    np.testing.assert_allclose(got, reference_warp(features, flow, border), atol=1e-5)
    np.testing.assert_allclose(got, scipy_warp(features, flow, border), atol=1e-5)


def test_zero_border_and_clamp_differ_outside():
    features, _ = random_case(1)
    flow = np.full(features.shape[:3] + (2,), 0.0, np.float32)
    flow[..., 0] = 100.0  # everything samples far right of the map
    assert np.all(np.asarray(warp(features, flow, border="zeros")) == 0.0)
    clamped = np.asarray(warp(features, flow, border="clamp"))
    np.testing.assert_array_equal(clamped, np.repeat(features[:, :, -1:], features.shape[2], axis=2))


@pytest.mark.parametrize("border", ["zeros", "clamp"])
def test_zero_flow_is_the_identity(border):
    features, _ = random_case(2)
    got = np.asarray(warp(features, np.zeros(features.shape[:3] + (2,), np.float32), border=border))
    np.testing.assert_array_equal(got, features)


def test_integer_flow_is_an_exact_shift():
    features, _ = random_case(3)
    flow = np.zeros(features.shape[:3] + (2,), np.float32)
    flow[..., 0], flow[..., 1] = 2.0, -1.0   # out[y, x] = f[y - 1, x + 2]
    got = np.asarray(warp(features, flow))
    expected = np.zeros_like(features)
    expected[:, 1:, :-2] = features[:, :-1, 2:]
    np.testing.assert_array_equal(got, expected)


def test_per_pixel_integer_flow_gathers_exactly():
    rng = np.random.default_rng(4)
    features, _ = random_case(4)
    flow = rng.integers(-2, 3, size=features.shape[:3] + (2,)).astype(np.float32)
    got = np.asarray(warp(features, flow, border="clamp"))
    b, h, w, _ = features.shape
    ys = np.clip(np.arange(h)[None, :, None] + flow[..., 1].astype(int), 0, h - 1)
    xs = np.clip(np.arange(w)[None, None, :] + flow[..., 0].astype(int), 0, w - 1)
    np.testing.assert_array_equal(got, features[np.arange(b)[:, None, None], ys, xs])


def test_gradients_reach_the_flow_and_the_features():
    features, flow = random_case(5, spread=1.5)
    f, fl = tf.constant(features), tf.constant(flow)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([f, fl])
        loss = tf.reduce_sum(warp(f, fl) * tf.constant(features[::-1]))
    grad_flow, grad_features = tape.gradient(loss, fl), tape.gradient(loss, f)
    assert grad_flow is not None and np.abs(grad_flow.numpy()).max() > 0
    assert grad_features is not None and np.abs(grad_features.numpy()).max() > 0
    # Finite difference on one flow component (away from integer coordinates).
    eps = 1e-2
    bumped = flow.copy()
    bumped[0, 3, 4, 0] += eps
    numeric = (np.sum(np.asarray(warp(features, bumped)) * features[::-1])
               - np.sum(np.asarray(warp(features, flow)) * features[::-1])) / eps
    assert grad_flow.numpy()[0, 3, 4, 0] == pytest.approx(numeric, rel=0.05, abs=1e-2)


def dvsnet_reference(features, flow):
    """DVSNet tools/flow_utils.warp, transcribed to numpy (clamp, floor/ceil, swapped weights)."""
    b, h, w, _ = features.shape
    x = np.clip(np.arange(w)[None, None, :] + flow[..., 0], 0, w - 1)
    y = np.clip(np.arange(h)[None, :, None] + flow[..., 1], 0, h - 1)
    xf, xc, yf, yc = (np.floor(x).astype(int), np.ceil(x).astype(int),
                      np.floor(y).astype(int), np.ceil(y).astype(int))
    tx, ty = (x - np.floor(x))[..., None], (y - np.floor(y))[..., None]
    bi = np.arange(b)[:, None, None]
    return (features[bi, yf, xf] * (1 - tx) * (1 - ty) + features[bi, yc, xf] * tx * (1 - ty)
            + features[bi, yf, xc] * (1 - tx) * ty + features[bi, yc, xc] * tx * ty)


def test_dvsnet_compat_reproduces_dvsnet_and_differs_from_bilinear():
    features, flow = random_case(6, spread=2.0)
    standard = np.asarray(warp(features, flow, border="clamp"))
    compat = np.asarray(warp(features, flow, border="clamp", dvsnet_compat=True))
    np.testing.assert_allclose(compat, dvsnet_reference(features, flow), atol=1e-5)
    assert np.abs(compat - standard).max() > 1e-2
    # Equal fractional parts on both axes (flownet_dff.md): the two modes agree.
    diagonal = np.full_like(flow, 0.3)
    np.testing.assert_allclose(np.asarray(warp(features, diagonal, "clamp", True))[:, :-1, :-1],
                               np.asarray(warp(features, diagonal, "clamp"))[:, :-1, :-1], atol=1e-5)
    zero = np.zeros_like(flow)
    np.testing.assert_array_equal(np.asarray(warp(features, zero, "clamp", True)), features)


def test_layer_config_round_trip():
    layer = Warp(border="clamp", dvsnet_compat=True, name="w")
    clone = Warp.from_config(layer.get_config())
    assert (clone.border, clone.dvsnet_compat, clone.name) == ("clamp", True, "w")


@pytest.mark.parametrize("border", ["zeros", "clamp"])
def test_numpy_backend_parity(border, tmp_path):
    from tests.flownet2s.parity_builders import build_warp_model
    kwargs = dict(height=7, width=9, channels=3, border=border)
    model = build_warp_model(**kwargs)
    features, flow = random_case(7)
    expected = np.asarray(model([features, flow]))
    got = numpy_backend_outputs("tests.flownet2s.parity_builders:build_warp_model", kwargs, model,
                                [features, flow], tmp_path)
    np.testing.assert_allclose(got["output_0"], expected, atol=1e-5)
