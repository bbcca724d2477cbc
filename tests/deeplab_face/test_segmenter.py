"""Segmenter as a Keras model: config round trips, its two layers, and the weight layouts of the
functional model it replaced (stage weights and checkpoints written before it still load)."""
import hashlib

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_face.models.backbones import BACKBONES
from deeplab_face.models.deeplab_v3plus import HEAD_OPTIONS
from deeplab_face.models.segmenter import Segmenter, build_segmenter, segmenter_args

# sha256 over the sorted "<h5 path> <shape or 'group'>" lines of save_weights files written by the
# functional build_segmenter (before Segmenter) for (backbone, 5 classes, crop 65, defaults).
OLD_LAYOUT_SHA256 = {
    "mobilenet_v2": (744, "1b5cdc68dde6dc0b415c2257c861ac13c9d91307ad6ccac0258d27af524f4852"),
    "fcn8s_vgg16": (125, "7445501a41573bd41ab16cdc1b60232ec835b4d18cf0b8655864e6074f2b32a3"),
}
SMALL = sorted(OLD_LAYOUT_SHA256)


def _x(model, seed=0):
    height, width = model.input.shape[1:3]
    return np.random.default_rng(seed).uniform(0, 255, (2, height, width, 3)).astype(np.float32)


def _layout(path):
    rows = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: rows.append(
            f"{name} {'x'.join(map(str, obj.shape)) if isinstance(obj, h5py.Dataset) else 'group'}"))
    return sorted(rows)


def _functional_segmenter(backbone, num_classes, crop_size):
    """The former build_segmenter: a functional model with the sub-models pinned on untracked."""
    args = segmenter_args(backbone, num_classes, crop_size)
    head = {k: args[k] for k in HEAD_OPTIONS if k in args}
    feature_net, task_net = BACKBONES[backbone].build(num_classes, crop_size, 16, "decoder", **head)
    frames = keras.Input((crop_size, crop_size, 3), name="frames")
    features = feature_net(frames)
    model = keras.Model(frames, task_net(features), name=f"segmenter_{backbone}")
    last = task_net.layers[-1]
    logits = keras.Model(frames, keras.Model(task_net.inputs, last.input)(features))
    for name, value in (("feature_net", feature_net), ("task_net", task_net),
                        ("logits_model", logits)):
        object.__setattr__(model, name, value)
    return model


@pytest.fixture(scope="module", params=SMALL)
def model(request):
    keras.utils.set_random_seed(0)
    return build_segmenter(request.param, 5, 65)


def test_config_round_trip_rebuilds_the_same_model(model):
    config = model.get_config()
    assert {k: config[k] for k in model.segmenter_args} == model.segmenter_args
    copy = Segmenter.from_config(config)
    assert type(copy) is Segmenter and copy.get_config() == config
    copy.set_weights(model.get_weights())
    x = _x(model)
    np.testing.assert_array_equal(np.asarray(copy(x)), np.asarray(model(x)))
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert type(revived) is Segmenter and revived.get_config() == config


def test_feature_net_and_task_net_are_its_layers(model):
    assert model.get_layer("feature_net") is model.feature_net
    assert model.get_layer("task_net") is model.task_net
    assert model.count_params() == model.feature_net.count_params() + model.task_net.count_params()
    x = _x(model)
    probabilities = np.asarray(model(x))
    np.testing.assert_array_equal(np.asarray(model.task_net(model.feature_net(x))), probabilities)
    logits = np.asarray(model.logits_model(x))
    np.testing.assert_allclose(np.asarray(keras.ops.softmax(logits, axis=-1)), probabilities,
                               atol=1e-6)


def test_segmenter_args_is_a_copy(model):
    args = model.segmenter_args
    args["num_classes"] = 99
    assert model.segmenter_args["num_classes"] == 5


def test_weight_file_layout_is_the_functional_models(model, tmp_path):
    path = str(tmp_path / "new.weights.h5")
    model.save_weights(path)
    rows = _layout(path)
    count, digest = OLD_LAYOUT_SHA256[model.segmenter_args["backbone"]]
    assert (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest()) == (count, digest)


@pytest.mark.parametrize("backbone", ["mobilenet_v2"])
def test_files_of_the_functional_model_load(backbone, tmp_path):
    """save_weights and tf.train.Checkpoint files of the former model restore exactly."""
    keras.utils.set_random_seed(1)
    old = _functional_segmenter(backbone, 5, 65)
    old.save_weights(str(tmp_path / "old.weights.h5"))
    tf.train.Checkpoint(model=old).write(str(tmp_path / "ckpt" / "ckpt"))
    x = _x(old)
    expected = np.asarray(old(x))
    keras.utils.set_random_seed(2)
    new = build_segmenter(backbone, 5, 65)
    new.load_weights(str(tmp_path / "old.weights.h5"))
    np.testing.assert_array_equal(np.asarray(new(x)), expected)
    keras.utils.set_random_seed(3)
    restored = build_segmenter(backbone, 5, 65)
    tf.train.Checkpoint(model=restored).read(str(tmp_path / "ckpt" / "ckpt")) \
        .assert_existing_objects_matched()
    np.testing.assert_array_equal(np.asarray(restored(x)), expected)
    new.save_weights(str(tmp_path / "new.weights.h5"))
    assert _layout(str(tmp_path / "new.weights.h5")) == _layout(str(tmp_path / "old.weights.h5"))
