"""TF1 checkpoint import: model-zoo names and shapes, values arrive, readable mismatch errors."""
import numpy as np
import pytest
import tensorflow as tf

from deeplab_face import build_segmenter
from deeplab_face.errors import CheckpointError
from deeplab_face.models.checkpoint import load_tf1_checkpoint, tf1_variable_map
from tests.deeplab_face.test_models import randomize_weights

# Names and shapes from TF DeepLab checkpoints (reference/deeplab.md, model.py, 21 classes).
ZOO_NAMES = {
    "xception_65": {
        "xception_65/entry_flow/conv1_1/weights": [3, 3, 3, 32],
        "xception_65/entry_flow/block1/unit_1/xception_module/separable_conv1_depthwise/BatchNorm/gamma": [64],
        "xception_65/entry_flow/block1/unit_1/xception_module/shortcut/weights": [1, 1, 64, 128],
        "xception_65/middle_flow/block1/unit_16/xception_module/separable_conv3_pointwise/weights": [1, 1, 728, 728],
        "xception_65/exit_flow/block2/unit_1/xception_module/separable_conv3_pointwise/BatchNorm/moving_variance": [2048],
        "image_pooling/weights": [1, 1, 2048, 256],
        "aspp0/BatchNorm/beta": [256],
        "aspp1_depthwise/depthwise_weights": [3, 3, 2048, 1],
        "aspp3_pointwise/weights": [1, 1, 2048, 256],
        "concat_projection/weights": [1, 1, 1280, 256],
        "decoder/feature_projection0/weights": [1, 1, 256, 48],
        "decoder/decoder_conv0_depthwise/depthwise_weights": [3, 3, 304, 1],
        "decoder/decoder_conv1_pointwise/BatchNorm/moving_mean": [256],
        "logits/semantic/weights": [1, 1, 256, 21],
        "logits/semantic/biases": [21],
    },
    "resnet_v1_50_beta": {
        "resnet_v1_50/conv1_1/weights": [3, 3, 3, 64],
        "resnet_v1_50/conv1_3/BatchNorm/gamma": [128],
        "resnet_v1_50/block1/unit_1/bottleneck_v1/shortcut/weights": [1, 1, 128, 256],
        "resnet_v1_50/block3/unit_6/bottleneck_v1/conv2/BatchNorm/beta": [256],
        "resnet_v1_50/block4/unit_3/bottleneck_v1/conv3/weights": [1, 1, 512, 2048],
    },
    "mobilenet_v2": {
        "MobilenetV2/Conv/weights": [3, 3, 3, 32],
        "MobilenetV2/expanded_conv/depthwise/depthwise_weights": [3, 3, 32, 1],
        "MobilenetV2/expanded_conv_1/expand/weights": [1, 1, 16, 96],
        "MobilenetV2/expanded_conv_16/project/weights": [1, 1, 960, 320],
        "decoder/feature_projection0/weights": [1, 1, 144, 48],
    },
}


@pytest.mark.parametrize("backbone", sorted(ZOO_NAMES))
def test_name_map_uses_model_zoo_names(backbone):
    model = build_segmenter(backbone, 21, 65)
    mapping = tf1_variable_map(model)
    assert len(mapping) == len(model.weights)  # every weight has exactly one TF name
    for name, shape in ZOO_NAMES[backbone].items():
        assert name in mapping, name
        assert list(mapping[name].shape) == shape, name
    assert not [n for n in mapping if "activation" in n or "kernel" in n]
    # the ImageNet classifier is not built
    assert not [n for n in mapping if n.startswith(("MobilenetV2/Conv_1", "resnet_v1_50/logits"))]


def write_tf1_checkpoint(prefix, arrays, optimizer_slots=()):
    """A TF1 Saver checkpoint (graph mode) holding `arrays`, a global_step and Momentum slots."""
    graph = tf.Graph()
    with graph.as_default():
        for name, value in arrays.items():
            tf.compat.v1.Variable(value, name=name)
        for name in optimizer_slots:
            tf.compat.v1.Variable(np.zeros_like(arrays[name]), name=name + "/Momentum")
        tf.compat.v1.train.get_or_create_global_step()
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return saver.save(session, str(prefix))


def _random_arrays(mapping, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, variable in mapping.items():
        shape = tuple(variable.shape)
        if name.endswith("moving_variance") or name.endswith("gamma"):
            arrays[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            arrays[name] = (rng.normal(size=shape) * 0.2).astype(np.float32)
    return arrays


@pytest.fixture(scope="module")
def model_65():
    return randomize_weights(build_segmenter("mobilenet_v2", 5, 65))


def _frames():
    return np.random.default_rng(3).uniform(0, 255, (1, 65, 65, 3)).astype(np.float32)


def test_values_arrive_and_outputs_change(tmp_path, model_65):
    mapping = tf1_variable_map(model_65)
    arrays = _random_arrays(mapping)
    prefix = write_tf1_checkpoint(tmp_path / "model.ckpt", arrays,
                                  optimizer_slots=["concat_projection/weights"])
    before = np.asarray(model_65(_frames()))
    report = load_tf1_checkpoint(model_65, str(tmp_path))  # a directory works too
    assert report["loaded"] == len(mapping) and report["head"] == "loaded"
    assert report["checkpoint"] == prefix
    for name, variable in mapping.items():
        np.testing.assert_array_equal(np.asarray(variable), arrays[name], err_msg=name)
    assert np.abs(np.asarray(model_65(_frames())) - before).max() > 1e-3


def test_mismatch_lists_missing_unexpected_and_misshaped(tmp_path, model_65):
    arrays = _random_arrays(tf1_variable_map(model_65))
    del arrays["aspp2_pointwise/weights"], arrays["MobilenetV2/expanded_conv_3/expand/BatchNorm/beta"]
    arrays["aspp4_depthwise/depthwise_weights"] = np.zeros((3, 3, 320, 1), np.float32)
    arrays["concat_projection/weights"] = np.zeros((1, 1, 512, 256), np.float32)
    prefix = write_tf1_checkpoint(tmp_path / "bad.ckpt", arrays)
    before = [np.asarray(w).copy() for w in model_65.weights[:3]]
    with pytest.raises(CheckpointError) as error:
        load_tf1_checkpoint(model_65, prefix)
    message = str(error.value)
    assert "\n" not in message and message.startswith(prefix)
    assert "2 missing (MobilenetV2/expanded_conv_3/expand/BatchNorm/beta, aspp2_pointwise/weights)" in message
    assert "1 unexpected (aspp4_depthwise/depthwise_weights)" in message
    assert "1 mis-shaped (concat_projection/weights [1, 1, 512, 256]!=[1, 1, 1280, 256])" in message
    for old, w in zip(before, model_65.weights[:3]):  # nothing half-loaded
        np.testing.assert_array_equal(np.asarray(w), old)


def test_21_class_checkpoint_needs_reinit_logits(tmp_path, model_65):
    arrays = _random_arrays(tf1_variable_map(build_segmenter("mobilenet_v2", 21, 65)))
    prefix = write_tf1_checkpoint(tmp_path / "pascal.ckpt", arrays)
    with pytest.raises(CheckpointError, match=r"2 mis-shaped \(logits/semantic/biases .*reinit_logits"):
        load_tf1_checkpoint(model_65, prefix)
    logits = model_65.task_net.get_layer("logits__semantic")
    kept = [w.copy() for w in logits.get_weights()]
    report = load_tf1_checkpoint(model_65, prefix, reinit_logits=True)
    assert report["reinitialised"] == ["logits/semantic/biases", "logits/semantic/weights"]
    for old, new in zip(kept, logits.get_weights()):
        np.testing.assert_array_equal(old, new)
    decoder = model_65.feature_net.get_layer("decoder__decoder_conv1_pointwise")
    np.testing.assert_array_equal(decoder.get_weights()[0], arrays["decoder/decoder_conv1_pointwise/weights"])


def test_imagenet_backbone_only_checkpoint(tmp_path, model_65):
    mapping = tf1_variable_map(model_65)
    arrays = {n: a for n, a in _random_arrays(mapping, seed=5).items() if n.startswith("MobilenetV2/")}
    # the slim ImageNet classifier, which DeepLab does not build
    arrays["MobilenetV2/Conv_1/weights"] = np.zeros((1, 1, 320, 1280), np.float32)
    arrays["MobilenetV2/Logits/Conv2d_1c_1x1/weights"] = np.zeros((1, 1, 1280, 1001), np.float32)
    prefix = write_tf1_checkpoint(tmp_path / "mobilenet_v2_1.0_224.ckpt", arrays)
    head_before = np.asarray(mapping["aspp0/weights"]).copy()
    report = load_tf1_checkpoint(model_65, prefix)
    assert report["head"] == "not loaded: backbone-only checkpoint"
    assert "aspp0/weights" in report["reinitialised"] and "logits/semantic/weights" in report["reinitialised"]
    np.testing.assert_array_equal(np.asarray(mapping["MobilenetV2/Conv/weights"]),
                                  arrays["MobilenetV2/Conv/weights"])
    np.testing.assert_array_equal(np.asarray(mapping["aspp0/weights"]), head_before)


def test_unreadable_checkpoint_names_the_path(tmp_path, model_65):
    with pytest.raises(CheckpointError, match="nothing.ckpt: not a readable TF1 checkpoint"):
        load_tf1_checkpoint(model_65, str(tmp_path / "nothing.ckpt"))
    with pytest.raises(CheckpointError, match="expected one TF1 checkpoint"):
        load_tf1_checkpoint(model_65, str(tmp_path))
