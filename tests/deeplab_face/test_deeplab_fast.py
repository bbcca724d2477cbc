"""DVSNet's DeepLab-Fast: layout, the 550 DVSNet names, TF1 checkpoint import, numpy-backend parity.

The expected names, shapes and the reference forward pass below are written from reference/dvsnet.md
and DVSNet's model/deeplabmodel.py independently of deeplab_fast.py.
"""
import numpy as np
import pytest
import tensorflow as tf

from deeplab_face.errors import CheckpointError, ConfigError
from deeplab_face.models.deeplab_fast import (build_deeplab_fast, build_deeplab_fast_model,
                                              logits_grid)
from deeplab_face.models.dvsnet_checkpoint import dvsnet_variable_map, load_dvsnet_checkpoint
from tests.backend_parity import numpy_backend_outputs

CROP = 65
GRID = 5  # 65 -> conv1 s2 33 -> pool1 s2 17 -> res3a s2 9 -> res4a s2 5 (SAME: ceil(n / 2))
CLASSES = 19
IMG_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)  # DVSNet IMG_MEAN


def dvsnet_units():
    """(unit, depth, out depth, stride, 3x3 rate, has branch1) in DVSNet's order."""
    units = []
    res4_rates = [1] + [4 if i % 3 == 1 else 2 for i in range(1, 23)]  # b1 = 4, b2 = b3 = 2, ...
    for stage, suffixes, depth, stride, rates in (
            ("2", ["a", "b", "c"], 64, 1, [1, 1, 1]),
            ("3", ["a", "b1", "b2", "b3"], 128, 2, [1] * 4),
            ("4", ["a"] + [f"b{i}" for i in range(1, 23)], 256, 2, res4_rates),
            ("5", ["a", "b", "c"], 512, 1, [4, 8, 16])):
        for i, (suffix, rate) in enumerate(zip(suffixes, rates)):
            units.append((stage + suffix, depth, 4 * depth, stride if i == 0 else 1, rate, i == 0))
    return units


def dvsnet_shapes(num_classes=CLASSES):
    """{DVSNet segmentation variable name: shape} (dvsnet.md "Checkpoints and variable names")."""
    shapes = {}

    def conv_bn(conv, bn, kh, cin, cout, bias=False):
        shapes[f"{conv}/weights"] = (kh, kh, cin, cout)
        if bias:
            shapes[f"{conv}/biases"] = (cout,)
        for v in ("beta", "gamma", "moving_mean", "moving_variance"):
            shapes[f"{bn}/{v}"] = (cout,)

    conv_bn("conv1", "bn_conv1", 7, 3, 64)
    channels = 64
    for unit, depth, out, _, _, projection in dvsnet_units():
        if projection:
            conv_bn(f"res{unit}_branch1", f"bn{unit}_branch1", 1, channels, out)
        conv_bn(f"res{unit}_branch2a", f"bn{unit}_branch2a", 1, channels, depth)
        conv_bn(f"res{unit}_branch2b", f"bn{unit}_branch2b", 3, depth, depth)
        conv_bn(f"res{unit}_branch2c", f"bn{unit}_branch2c", 1, depth, out)
        channels = out
    for i in range(4):
        conv_bn(f"fc1_voc12_c{i}", f"fc1_voc12_c{i}_bn", 3 if i < 3 else 1, 2048, 256, bias=True)
    conv_bn("fc_oooo", "fc_oooo_bn", 1, 256, 256)
    shapes["fc_out/weights"] = (1, 1, 256, num_classes)
    return shapes


def dvsnet_arrays(seed=0):
    """Random weights that keep ResNet-101's activations in a sane range (He-normal kernels)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in dvsnet_shapes().items():
        if name == "fc_out/weights":  # fc_oooo_bn gives ~1e4: logits of a few units (no saturation)
            value = rng.normal(size=shape) * 2e-4
        elif name.endswith("/weights"):
            value = rng.normal(size=shape) * np.sqrt(2.0 / np.prod(shape[:3]))
        elif name.endswith("moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith("gamma"):  # small last-BN scale keeps the residual sums bounded
            low, high = (0.1, 0.3) if "branch2c" in name else (0.5, 1.5)
            value = rng.uniform(low, high, shape)
        else:  # beta, moving_mean, biases
            value = rng.normal(size=shape) * 0.1
        arrays[name] = value.astype(np.float32)
    return arrays


def write_tf1_checkpoint(prefix, arrays):
    """TF1 Saver checkpoint: `arrays`, DVSNet's other networks, global_step, Adam slots."""
    extras = {"FlowNets/conv1/weights": (7, 7, 6, 24), "decision/Conv/weights": (3, 3, 384, 96),
              "decision/fully_connected_3/biases": (1,), "fc_out/weights/Adam": (1, 1, 256, 19),
              "fc_out/weights/Adam_1": (1, 1, 256, 19)}
    graph = tf.Graph()
    with graph.as_default():
        # Variables initialised from placeholders: one session run feeds all values.
        feeds = {}
        for name, value in arrays.items():
            placeholder = tf.compat.v1.placeholder(tf.float32, value.shape)
            tf.compat.v1.Variable(placeholder, name=name)
            feeds[placeholder] = value
        for name, shape in extras.items():
            tf.compat.v1.Variable(tf.ones(shape), name=name)
        tf.compat.v1.train.get_or_create_global_step()
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer(), feed_dict=feeds)
            return saver.save(session, str(prefix))


def reference_logits(arrays, frames_rgb):
    """DeepLab-Fast's forward pass written with tf.nn ops as DVSNet's network.py runs it."""
    def conv(x, name, stride=1, rate=1):
        w = arrays[f"{name}/weights"]
        x = (tf.nn.atrous_conv2d(x, w, rate, "SAME") if rate > 1
             else tf.nn.conv2d(x, w, stride, "SAME"))
        return tf.nn.bias_add(x, arrays[f"{name}/biases"]) if f"{name}/biases" in arrays else x

    def bn(x, name, relu):
        a = {v: arrays[f"{name}/{v}"] for v in ("beta", "gamma", "moving_mean", "moving_variance")}
        x = tf.nn.batch_normalization(x, a["moving_mean"], a["moving_variance"], a["beta"],
                                      a["gamma"], 1e-3)
        return tf.nn.relu(x) if relu else x

    x = tf.constant(frames_rgb[..., ::-1] - np.float32(IMG_MEAN_BGR))  # RGB -> BGR - IMG_MEAN
    x = bn(conv(x, "conv1", 2), "bn_conv1", True)
    x = tf.nn.max_pool2d(x, 3, 2, "SAME")
    for unit, _, _, stride, rate, projection in dvsnet_units():
        shortcut = x
        if projection:
            shortcut = bn(conv(x, f"res{unit}_branch1", stride), f"bn{unit}_branch1", False)
        y = bn(conv(x, f"res{unit}_branch2a", stride), f"bn{unit}_branch2a", True)
        y = bn(conv(y, f"res{unit}_branch2b", 1, rate), f"bn{unit}_branch2b", True)
        y = bn(conv(y, f"res{unit}_branch2c"), f"bn{unit}_branch2c", False)
        x = tf.nn.relu(tf.add_n([shortcut, y]))
    heads = [bn(conv(x, f"fc1_voc12_c{i}", 1, rate), f"fc1_voc12_c{i}_bn", False)
             for i, rate in enumerate((6, 12, 18, 1))]
    x = bn(conv(tf.add_n(heads), "fc_oooo"), "fc_oooo_bn", False)
    return conv(x, "fc_out").numpy()


def _frames(seed=3):
    return np.random.default_rng(seed).uniform(0, 255, (1, CROP, CROP, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    return build_deeplab_fast_model(CLASSES, CROP)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    arrays = dvsnet_arrays()
    prefix = write_tf1_checkpoint(tmp_path_factory.mktemp("dvsnet") / "model.ckpt-60000", arrays)
    return prefix, arrays


def test_layout_shapes_strides_and_rates(model):
    feature_net, task_net = model.feature_net, model.task_net
    assert tuple(feature_net.output.shape) == (None, GRID, GRID, CLASSES)
    assert tuple(task_net.output.shape) == (None, CROP, CROP, CLASSES)
    for name, shape in (("pool1", (17, 17, 64)), ("res2c_relu", (17, 17, 256)),
                        ("res3b3_relu", (9, 9, 512)), ("res4b22_relu", (GRID, GRID, 1024)),
                        ("res5c_relu", (GRID, GRID, 2048)), ("fc1_voc12", (GRID, GRID, 256))):
        assert tuple(feature_net.get_layer(name).output.shape[1:]) == shape, name
    layer = feature_net.get_layer
    # Caffe layout: the stride sits in branch2a (the first 1x1) and branch1, not in the 3x3.
    for unit in ("3a", "4a"):
        assert layer(f"res{unit}_branch2a").strides == (2, 2)
        assert layer(f"res{unit}_branch1").strides == (2, 2)
        assert layer(f"res{unit}_branch2b").strides == (1, 1)
    assert layer("res5a_branch1").strides == (1, 1)  # OS16: block 5 keeps stride 16
    rates = {"res4a": 1, "res4b1": 4, "res4b2": 2, "res4b3": 2, "res4b4": 4, "res4b21": 2,
             "res4b22": 4, "res5a": 4, "res5b": 8, "res5c": 16}
    for unit, rate in rates.items():
        assert layer(f"{unit}_branch2b").dilation_rate == (rate, rate), unit
    for i, rate in enumerate((6, 12, 18)):
        branch = layer(f"fc1_voc12_c{i}")
        assert branch.dilation_rate == (rate, rate) and branch.use_bias
    assert layer("fc1_voc12_c3").kernel_size == (1, 1) and layer("fc1_voc12_c3").use_bias
    assert not layer("fc_out").use_bias and not layer("fc_oooo").use_bias
    assert layer("bn_conv1").epsilon == 1e-3 and layer("bn_conv1").scale
    preprocess = layer("rgb_to_caffe_bgr")
    assert type(preprocess).from_config(preprocess.get_config()).mean_bgr == IMG_MEAN_BGR


def test_task_net_upsamples_align_corners_then_softmax(model):
    x = _frames()
    logits = np.asarray(model.feature_net(x))
    probabilities = np.asarray(model(x))
    np.testing.assert_allclose(probabilities, np.asarray(model.task_net(logits)), atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)

    def softmax(v):
        e = np.exp(v - v.max())
        return e / e.sum()
    # align corners: pixel 16 k lies exactly on logits cell k (65 px, 5 cells)
    for (py, px), (gy, gx) in (((0, 0), (0, 0)), ((64, 64), (4, 4)), ((16, 48), (1, 3))):
        np.testing.assert_allclose(probabilities[0, py, px], softmax(logits[0, gy, gx]), atol=1e-5)


def test_name_map_is_the_550_dvsnet_variables(model):
    mapping = dvsnet_variable_map(model)
    expected = dvsnet_shapes()
    assert len(expected) == 550 and len(mapping) == 550 == len(model.weights)
    assert set(mapping) == set(expected)
    for name, shape in expected.items():
        assert tuple(mapping[name].shape) == shape, name
    assert tuple(mapping["res4b22_branch2c/weights"].shape) == (1, 1, 256, 1024)
    assert tuple(mapping["fc1_voc12_c0/weights"].shape) == (3, 3, 2048, 256)


def test_dvsnet_checkpoint_loads_and_matches_reference(model, checkpoint):
    prefix, arrays = checkpoint
    x = _frames()
    before = np.asarray(model.feature_net(x))
    report = load_dvsnet_checkpoint(model, prefix)
    # FlowNets/* and decision/* skipped; global_step and Adam slots never count
    assert report == dict(loaded=550, skipped=3, checkpoint=prefix)
    for name, variable in dvsnet_variable_map(model).items():
        np.testing.assert_array_equal(np.asarray(variable), arrays[name], err_msg=name)
    logits = np.asarray(model.feature_net(x))
    expected = reference_logits(arrays, x)
    assert 1.0 < expected.std() < 20.0  # a meaningful comparison, not zeros or overflow
    np.testing.assert_allclose(logits, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
    assert np.abs(logits - before).max() > 1e-2
    np.testing.assert_array_equal(np.asarray(model.feature_net(x)), logits)  # deterministic


def test_wrong_checkpoint_lists_missing_unexpected_misshaped(model, checkpoint, tmp_path):
    arrays = dict(checkpoint[1])
    del arrays["res4b7_branch2b/weights"], arrays["bn5c_branch2c/moving_mean"]
    arrays["res6a_branch1/weights"] = np.zeros((1, 1, 2048, 4096), np.float32)
    arrays["fc_out/weights"] = np.zeros((1, 1, 256, 21), np.float32)
    prefix = write_tf1_checkpoint(tmp_path / "bad.ckpt", arrays)
    before = [np.asarray(w).copy() for w in model.weights[:3]]
    with pytest.raises(CheckpointError) as error:
        load_dvsnet_checkpoint(model, prefix)
    message = str(error.value)
    assert "\n" not in message and message.startswith(prefix)
    assert "2 missing (bn5c_branch2c/moving_mean, res4b7_branch2b/weights)" in message
    assert "1 unexpected (res6a_branch1/weights)" in message
    assert "1 mis-shaped (fc_out/weights [1, 1, 256, 21]!=[1, 1, 256, 19])" in message
    for old, w in zip(before, model.weights[:3]):  # nothing half-loaded
        np.testing.assert_array_equal(np.asarray(w), old)
    with pytest.raises(CheckpointError, match="nothing.ckpt: not a readable TF1 checkpoint"):
        load_dvsnet_checkpoint(model, str(tmp_path / "nothing.ckpt"))


def test_numpy_backend_parity(model, checkpoint, tmp_path):
    load_dvsnet_checkpoint(model, checkpoint[0])  # meaningful weights, whatever ran before
    x = _frames(seed=7)
    logits = np.asarray(model.feature_net(x))
    probabilities = np.asarray(model(x))
    got = numpy_backend_outputs("deeplab_face.models.deeplab_fast:build_deeplab_fast_model",
                                dict(num_classes=CLASSES, crop_size=CROP, with_logits=True),
                                model, [x], tmp_path)
    np.testing.assert_allclose(got["logits"], logits, rtol=1e-4, atol=1e-4 * np.abs(logits).max())
    np.testing.assert_allclose(got["probabilities"], probabilities, atol=1e-4)
    assert probabilities.max(-1).min() < 0.9  # not saturated one-hot maps: the comparison has teeth


def test_builder_rejects_other_strides_and_splits():
    with pytest.raises(ConfigError, match="--output_stride=8"):
        build_deeplab_fast(CLASSES, CROP, output_stride=8)
    with pytest.raises(ConfigError, match="--split=middle"):
        build_deeplab_fast(CLASSES, CROP, split="middle")
    # DVSNet's 576x1088 regions give its 36x68 fc_out (dvsnet.md "Output")
    assert logits_grid((576, 1088)) == (36, 68) and logits_grid(CROP) == (GRID, GRID)
