"""§3.1 split: task_net(feature_net(x)) == N(x) for both named split points; stage loading."""
import json

import keras
import numpy as np
import pytest

from deeplab_face import build_segmenter, load_segmenter
from deeplab_face.errors import CheckpointError, ConfigError
from tests.deeplab_face.test_models import randomize_weights


def _frames(n=2, size=65, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "resnet_v1_50_beta"])
def test_decoder_split_composes_to_the_whole_model(backbone):
    model = randomize_weights(build_segmenter(backbone, 5, 65))
    x = _frames()
    features = model.feature_net(x)
    assert tuple(features.shape) == (2, 17, 17, 256)  # the decoder's last 256-ch stride-4 map
    np.testing.assert_allclose(model.task_net(features), model(x), atol=1e-6)
    probs = np.asarray(model(x))
    assert probs.std() > 1e-3  # not a degenerate uniform output
    logits = np.asarray(model.logits_model(x))
    np.testing.assert_allclose(keras.ops.softmax(logits, axis=-1), probs, atol=1e-6)


def test_logits_split_ends_feature_net_at_stride4_logits():
    model = randomize_weights(build_segmenter("mobilenet_v2", 5, 65, split="logits"))
    x = _frames()
    features = model.feature_net(x)
    assert tuple(features.shape) == (2, 17, 17, 5)
    assert not model.task_net.trainable_weights  # upsample + softmax only
    np.testing.assert_allclose(model.task_net(features), model(x), atol=1e-6)


def test_parts_share_the_models_weights():
    model = randomize_weights(build_segmenter("mobilenet_v2", 5, 65))
    x = _frames(1)
    before = np.asarray(model(x))
    logits = model.task_net.get_layer("logits__semantic")
    kernel, bias = logits.get_weights()
    logits.set_weights([kernel, bias + np.arange(5, dtype=np.float32)])
    after = np.asarray(model(x))
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_allclose(model.task_net(model.feature_net(x)), after, atol=1e-6)
    # no weight is counted twice by the extra attributes
    assert model.count_params() == (model.feature_net.count_params()
                                    + model.task_net.count_params())


def test_unknown_split_is_a_config_error():
    with pytest.raises(ConfigError, match="split"):
        build_segmenter("mobilenet_v2", 5, 65, split="aspp")


def test_load_segmenter_round_trip(tmp_path):
    model = randomize_weights(build_segmenter("mobilenet_v2", 5, 65))
    (tmp_path / "config.json").write_text(json.dumps(dict(model.segmenter_args, steps=3)))
    model.save_weights(str(tmp_path / "final.weights.h5"))
    loaded = load_segmenter(str(tmp_path))
    x = _frames(1)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    assert loaded.segmenter_args == model.segmenter_args


def test_load_segmenter_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        load_segmenter(str(tmp_path))
    model = build_segmenter("mobilenet_v2", 5, 65)
    model.save_weights(str(tmp_path / "final.weights.h5"))
    (tmp_path / "config.json").write_text(json.dumps(
        dict(backbone="mobilenet_v2", num_classes=7, crop_size=65)))
    with pytest.raises(CheckpointError, match="final.weights.h5"):
        load_segmenter(str(tmp_path))
