"""deeplab_face.train: the loss goes down; a killed run resumes from its checkpoint step."""
import glob
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_face import build_segmenter, load_segmenter
from deeplab_face.data.pipelines import load_video
from deeplab_face.errors import ConfigError
from deeplab_face.train import poly_learning_rate, train_eval
from deeplab_face.training import pixel_cross_entropy
from tests.backend_parity import ROOT

TINY = dict(backbone="mobilenet_v2", crop_size=65, batch_size=2, seed=0, augment=False, verbose=0)


def scalar_events(logdir, tag):
    """{step: value} of a TensorBoard scalar over every event file under `logdir`, and per file."""
    per_file = []
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        values = {}
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = float(tf.make_ndarray(value.tensor))
        per_file.append(values)
    return per_file


def fixed_batch_loss(model, images, labels):
    logits = model.logits_model(tf.constant(images, tf.float32), training=False)
    return float(pixel_cross_entropy(logits, tf.constant(labels), 5))


def test_poly_learning_rate():
    assert float(poly_learning_rate(0, 0.01, 100)) == pytest.approx(0.01)
    assert float(poly_learning_rate(50, 0.01, 100)) == pytest.approx(0.01 * 0.5 ** 0.9)
    assert float(poly_learning_rate(100, 0.01, 100)) == 0.0


def test_cross_entropy_ignores_label_255():
    logits = tf.constant(np.log([[[[0.7, 0.3]], [[0.2, 0.8]]]], dtype="float32"))  # (1,2,1,2)
    labels = tf.constant([[[0], [255]]])
    assert float(pixel_cross_entropy(logits, labels, 2)) == pytest.approx(-np.log(0.7), rel=1e-5)


def test_short_training_lowers_the_loss(tiny_prepared, tmp_path):
    prepared, videos = tiny_prepared
    images, labels = load_video(prepared, videos[0], count=4)
    # Same seed as the training run -> the same initial weights (train_eval seeds, then builds).
    keras.utils.set_random_seed(0)
    initial = fixed_batch_loss(build_segmenter("mobilenet_v2", 5, 65), images, labels)
    root = str(tmp_path / "segmenter")
    results = train_eval(root, prepared, [videos[0]], [videos[1]], steps=8, learning_rate=0.2,
                         checkpoint_every=4, fine_tune_batch_norm=False, **TINY)
    trained = fixed_batch_loss(load_segmenter(root), images, labels)
    assert trained < 0.75 * initial, (initial, trained)
    assert results["step"] == 8 and 0.0 <= results["val_miou"] <= 100.0
    for name in ("config.json", "final.weights.h5", "DONE", "hparams.json"):
        assert os.path.exists(os.path.join(root, name)), name
    with open(os.path.join(root, "config.json")) as f:
        assert json.load(f)["backbone"] == "mobilenet_v2"
    tensorboard = os.path.join(root, "tensorboard")
    (losses,) = scalar_events(tensorboard, "loss")
    assert sorted(losses) == list(range(1, 9))
    (rates,) = scalar_events(tensorboard, "learning_rate")
    assert rates[1] == pytest.approx(0.2) and rates[8] < rates[4] < rates[1]
    assert len(scalar_events(tensorboard, "val_miou")[0]) == 1


def _latest_step(ckpt_dir):
    latest = tf.train.latest_checkpoint(ckpt_dir)
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def test_bad_video_id_is_a_config_error(tiny_prepared, tmp_path):
    prepared, _ = tiny_prepared
    with pytest.raises(ConfigError, match="train_videos"):
        train_eval(str(tmp_path), prepared, ["no_such_video"], steps=1, **TINY)


def test_help_documents_the_flags():
    out = subprocess.run([sys.executable, "-m", "deeplab_face.train", "--helpfull"],
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                         timeout=120)
    for flag in ("--workdir", "--learning_power", "--init_checkpoint", "--checkpoint_every"):
        assert flag in out.stdout, flag
