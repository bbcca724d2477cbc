"""Table 1's VGG16 rows (deeplab_face/models/vgg.py): layout, shapes, split, backend parity."""
import keras
import numpy as np
import pytest

from deeplab_face import build_segmenter
from deeplab_face.errors import ConfigError
from deeplab_face.models import vgg
from tests.backend_parity import parity_outputs

C = 5
VGG16_CONV_PARAMS = 14_714_688  # slim vgg_16 conv1..conv5 (= keras.applications.VGG16 without top)


def _frames(size, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (1, size, size, 3)).astype("float32")


def _randomize_zero_weights(model, seed=0):
    """FCN's score layers start at zero; give every all-zero weight random values so outputs vary."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        value = np.asarray(w)
        if not value.any():
            w.assign(rng.normal(0.0, 0.05, value.shape).astype("float32"))


def test_fcn8s_layout_and_shapes_at_65_and_129():
    feature_net, task_net = vgg.build_fcn8s_vgg16(C, 65)
    # Whole FCN-8s: VGG16 convs + fc6 7x7x512x4096 + fc7 1x1 4096 + 3 score layers + 2 upscores.
    expected = (VGG16_CONV_PARAMS + (7 * 7 * 512 + 1) * 4096 + (4096 + 1) * 4096
                + (4096 + 1) * C + (512 + 1) * C + (256 + 1) * C + 2 * 4 * 4 * C * C)
    assert feature_net.count_params() + task_net.count_params() == expected
    names = {layer.name for layer in feature_net.layers}
    assert {"vgg_16__conv1__conv1_1", "vgg_16__conv5__conv5_3", "vgg_16__fc6", "vgg_16__fc7",
            "score_fr", "score_pool4", "score_pool3", "upscore2", "upscore_pool4"} <= names
    # SAME padding: pool3/pool4/pool5 of 65 are 9/5/3; scores fuse at stride 8: (S - 1) / 8 + 1.
    assert feature_net.get_layer("vgg_16__pool5").output.shape[1:3] == (3, 3)
    assert feature_net.output.shape == (None, 9, 9, C)
    assert task_net.output.shape == (None, 65, 65, C)
    feature_net_129, _ = vgg.build_fcn8s_vgg16(C, 129)
    assert feature_net_129.output.shape == (None, 17, 17, C)


def test_deeplab_v2_layout_and_shapes_at_65_and_129():
    feature_net, task_net = vgg.build_deeplab_v2_vgg16(C, 65)
    expected = (VGG16_CONV_PARAMS + 4 * ((9 * 512 + 1) * 1024 + (1024 + 1) * 1024 + (1024 + 1) * C))
    assert feature_net.count_params() + task_net.count_params() == expected
    rates = [feature_net.get_layer(f"fc6_{i}").dilation_rate for i in range(1, 5)]
    assert rates == [(6, 6), (12, 12), (18, 18), (24, 24)]
    assert feature_net.get_layer("vgg_16__conv5__conv5_1").dilation_rate == (2, 2)
    assert feature_net.get_layer("vgg_16__pool4").strides == (1, 1)
    assert feature_net.output.shape == (None, 9, 9, C)  # output stride 8
    assert task_net.output.shape == (None, 65, 65, C)
    feature_net_129, _ = vgg.build_deeplab_v2_vgg16(C, 129)
    assert feature_net_129.output.shape == (None, 17, 17, C)


def test_deeplab_v2_branches_are_summed():
    feature_net, _ = vgg.build_deeplab_v2_vgg16(C, 65)
    x = _frames(65)
    branch_outputs = [feature_net.get_layer(f"fc8_{i}").output for i in range(1, 5)]
    probe = keras.Model(feature_net.inputs[0], branch_outputs + [feature_net.output])
    *branches, total = [np.asarray(o) for o in probe(x, training=False)]
    np.testing.assert_allclose(sum(branches), total, rtol=1e-5, atol=1e-5)


def test_fcn_upscore_is_bilinear_and_crop_aligns_the_grids():
    """A ramp on the coarse grid, 2x upsampled and cropped at 1, lands on cell i -> 2i + 0.5."""
    coarse = keras.Input((5, 5, 1))
    fine = keras.Input((9, 9, 1))
    up = keras.layers.Conv2DTranspose(1, 4, strides=2, use_bias=False,
                                      kernel_initializer=vgg.BilinearUpsampleInitializer())(coarse)
    probe = keras.Model([coarse, fine], vgg.CropToMatch(1)([up, fine]))
    ramp = np.tile(np.arange(5, dtype="float32")[None, :, None], (5, 1, 1))[None]
    out = np.asarray(probe([ramp, np.zeros((1, 9, 9, 1), "float32")]))[0, 2, :, 0]
    interior = np.arange(1, 8)
    np.testing.assert_allclose(out[interior], (interior - 0.5) / 2.0, atol=1e-6)


def test_split_equality_through_build_segmenter():
    x = _frames(65, seed=1)
    for backbone in ("fcn8s_vgg16", "deeplab_v2_vgg16"):
        model = build_segmenter(backbone, C, 65)
        _randomize_zero_weights(model)
        whole = np.asarray(model(x, training=False))
        split = np.asarray(model.task_net(model.feature_net(x, training=False), training=False))
        np.testing.assert_allclose(split, whole, atol=1e-6)
        np.testing.assert_allclose(whole.sum(-1), 1.0, atol=1e-5)


def test_bad_arguments_raise_config_error():
    with pytest.raises(ConfigError, match="output_stride"):
        vgg.build_deeplab_v2_vgg16(C, 65, output_stride=4)
    with pytest.raises(ConfigError, match="split"):
        vgg.build_fcn8s_vgg16(C, 65, split="aspp")


@pytest.fixture(scope="module")
def parity_runs(tmp_path_factory):
    """{backbone: (TensorFlow output, numpy-backend output)}, both VGG rows in one numpy-backend child."""
    models = {}
    for backbone in ("fcn8s_vgg16", "deeplab_v2_vgg16"):
        kwargs = dict(backbone=backbone, num_classes=C, crop_size=65)
        model = build_segmenter(**kwargs)
        _randomize_zero_weights(model)
        models[backbone] = ("deeplab_face:build_segmenter", kwargs, model, _frames(65, seed=2))
    return parity_outputs(models, tmp_path_factory.mktemp("parity"))


@pytest.mark.parametrize("backbone", ["fcn8s_vgg16", "deeplab_v2_vgg16"])
def test_numpy_backend_parity(backbone, parity_runs):
    expected, got = parity_runs[backbone]
    assert expected.std() > 1e-3  # outputs are not a flat softmax: the comparison means something
    np.testing.assert_allclose(got, expected, atol=1e-4)
