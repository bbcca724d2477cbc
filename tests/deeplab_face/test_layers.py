"""The align-corners resize and the padding helpers against TensorFlow's own ops."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_face.models.layers import (BilinearResize, align_corners_matrix, fixed_padding,
                                        resize_align_corners, scale_dimension)


@pytest.mark.parametrize("method", ["matmul", "gather"])
@pytest.mark.parametrize("in_hw,out_hw", [((5, 7), (17, 13)), ((33, 33), (129, 129)),
                                          ((65, 65), (33, 33)), ((1, 1), (9, 9)), ((9, 4), (9, 4))])
def test_resize_matches_tf1_align_corners(in_hw, out_hw, method):
    images = np.random.default_rng(0).normal(size=(2, *in_hw, 3)).astype(np.float32)
    expected = tf.compat.v1.image.resize_bilinear(images, out_hw, align_corners=True).numpy()
    got = keras.ops.convert_to_numpy(resize_align_corners(keras.ops.convert_to_tensor(images), out_hw,
                                                          method=method))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_resize_differs_from_half_pixel():
    # The trap this layer exists for: Keras/TF2 resizing is half-pixel.
    images = np.random.default_rng(1).normal(size=(1, 17, 17, 2)).astype(np.float32)
    half_pixel = tf.image.resize(images, (65, 65), method="bilinear").numpy()
    got = keras.ops.convert_to_numpy(resize_align_corners(keras.ops.convert_to_tensor(images), (65, 65)))
    assert np.abs(got - half_pixel).max() > 1e-2
    # align corners: the corner pixels are copied exactly
    np.testing.assert_array_equal(got[:, ::4, ::4], images)


def test_interpolation_rows_sum_to_one():
    m = align_corners_matrix(129, 33)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=1e-6)
    assert m[0, 0] == 1.0 and m[-1, -1] == 1.0


def test_bilinear_resize_layer_config_round_trip_and_like_input():
    layer = BilinearResize((9, 11), name="r")
    clone = BilinearResize.from_config(layer.get_config())
    assert clone.size == (9, 11) and clone.name == "r"
    x = keras.ops.ones((1, 3, 3, 2))
    like = keras.ops.zeros((1, 5, 6, 1))
    assert tuple(BilinearResize()([x, like]).shape) == (1, 5, 6, 2)


def test_scale_dimension_matches_tf_deeplab():
    assert scale_dimension(513, 1 / 16) == 33
    assert scale_dimension(513, 1 / 4) == 129
    assert scale_dimension(513, 1.25) == 641
    assert scale_dimension(513, 1.75) == 897
    assert scale_dimension(65, 1 / 4) == 17


@pytest.mark.parametrize("rate,pads", [(1, (1, 1)), (2, (2, 2)), (4, (4, 4))])
def test_fixed_padding_grows_with_rate(rate, pads):
    x = keras.Input((9, 9, 1))
    y = fixed_padding(x, 3, rate)
    assert y.shape[1] == 9 + sum(pads)


def test_fixed_padding_then_valid_matches_tf_same_on_odd_input():
    # conv2d_same on a 16k+1 input equals TF's SAME stride-2 conv (pads split 1/1)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 17, 17, 2)).astype(np.float32)
    k = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
    inp = keras.Input((17, 17, 2))
    conv = keras.layers.Conv2D(4, 3, strides=2, padding="valid", use_bias=False)
    model = keras.Model(inp, conv(fixed_padding(inp, 3)))
    conv.set_weights([k])
    expected = tf.nn.conv2d(x, k, 2, "SAME").numpy()
    np.testing.assert_allclose(model(x).numpy(), expected, atol=1e-5)


def test_zero_mean_unit_range_is_tf_deeplab_preprocessing():
    from deeplab_face.models.layers import ZeroMeanUnitRange
    layer = ZeroMeanUnitRange.from_config(ZeroMeanUnitRange(name="p").get_config())
    x = np.array([[0.0, 127.5, 255.0]], np.float32)
    np.testing.assert_allclose(np.asarray(layer(x)), (2.0 / 255.0) * x - 1.0, atol=1e-7)
