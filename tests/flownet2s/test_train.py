"""flownet2s.train: the fine-tuning loss falls; F alone is trained; the stage is written and resumes."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

from flownet2s import build_flownet, load_flownet
from flownet2s.dff import DeepFeatureFlow
from flownet2s.train import finetune_logits, make_train_step, train_eval
from deeplab_face.training import pixel_cross_entropy
from tests.backend_parity import ROOT


def synthetic_pairs(batch=2, size=65, shift=4, seed=0):
    """Smooth random frames, the current frame moved right by `shift` px, blob labels moved alike."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (batch, 9, 9, 3)).astype(np.float32)
    key = tf.image.resize(coarse, (size, size)).numpy()
    yy, xx = np.mgrid[0:size, 0:size]
    label = np.zeros((batch, size, size), np.int32)
    for b in range(batch):
        cy, cx = rng.integers(20, 45, size=2)
        label[b][(yy - cy) ** 2 + (xx - cx) ** 2 < 150] = 1 + b % 4
    return key, np.roll(key, shift, axis=2), np.roll(label, shift, axis=2)


def conv_segmenter(num_classes=5, size=65):
    """A small N with the segmenter contract (an untrained DeepLab's features are ~1e-7, which
    gives F no signal): feature_net = one stride-4 conv to 256 channels on the (S-1)/4+1 grid,
    task_net = 1x1 logits + align-corners upsample + softmax, as build_segmenter splits it."""
    from deeplab_face.models.layers import BilinearResize
    frames = keras.Input((size, size, 3))
    features = keras.layers.Conv2D(256, 8, strides=4, padding="same", activation="relu")(frames / 255.0)
    feature_net = keras.Model(frames, features, name="feature_net")
    grid = keras.Input(features.shape[1:])
    logits = BilinearResize(size=(size, size))(keras.layers.Conv2D(
        num_classes, 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.3))(grid))
    task_net = keras.Model(grid, keras.layers.Softmax()(logits), name="task_net")
    model = keras.Model(frames, task_net(feature_net(frames)))
    object.__setattr__(model, "feature_net", feature_net)
    object.__setattr__(model, "task_net", task_net)
    return model


def test_finetuning_loss_falls_and_only_f_changes():
    keras.utils.set_random_seed(0)
    segmenter = conv_segmenter()
    dff = DeepFeatureFlow(segmenter, build_flownet(input_size=64, feature_channels=256), warp_jit=False)
    key, current, _ = synthetic_pairs()
    # A reachable target: N's own labelling of the current frame (what --pseudo_labels uses).
    label = np.argmax(np.asarray(segmenter(current)), axis=-1).astype(np.int32)
    n_before = [w.copy() for w in segmenter.get_weights()]

    def loss():
        return float(pixel_cross_entropy(finetune_logits(dff, key, current, training=False), label, 5))

    optimizer = keras.optimizers.Adam(1e-3)
    step = make_train_step(dff, optimizer, 5)
    initial = loss()
    for _ in range(8):
        step(tf.constant(key), tf.constant(current), tf.constant(label))
    assert loss() < 0.9 * initial, (initial, loss())
    for a, b in zip(n_before, segmenter.get_weights()):   # N frozen (§4.2)
        np.testing.assert_array_equal(a, b)
    # With the task_net logits, the loss is that of the DFF propagation's probabilities.
    probs = dff.propagate(key, dff.key(key)["features"], current)["probs"]
    logits = finetune_logits(dff, key, current, training=False)
    np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), np.asarray(probs), atol=1e-5)


def test_pseudo_label_step_runs():
    dff = DeepFeatureFlow(conv_segmenter(), build_flownet(input_size=64))
    key, current, label = synthetic_pairs(batch=1)
    step = make_train_step(dff, keras.optimizers.Adam(1e-4), 5, pseudo_labels=True)
    assert np.isfinite(float(step(tf.constant(key), tf.constant(current), tf.constant(label))))


def test_train_eval_writes_the_stage_and_resumes(flow_prepared, segmenter_stage, tmp_path):
    prepared, videos = flow_prepared
    root = str(tmp_path / "flownet")
    common = dict(batch_size=1, learning_rate=1e-4, checkpoint_every=1, seed=0, verbose=0)
    results = train_eval(root, prepared, segmenter_stage, [videos[0]], [videos[1]], steps=2,
                         val_pairs=2, **common)
    assert results["step"] == 2 and 0.0 <= results["val_miou"] <= 100.0
    for name in ("config.json", "final.weights.h5", "DONE", "hparams.json"):
        assert os.path.exists(os.path.join(root, name)), name
    with open(os.path.join(root, "config.json")) as f:
        config = json.load(f)
    assert config["input_size"] == 64 and config["width"] == 0.375 and config["feature_channels"] == 256
    flow_net = load_flownet(root)
    assert flow_net.input_shape[0][1:] == (64, 64, 3)
    assert any(f.startswith("events.out") for f in os.listdir(os.path.join(root, "tensorboard")))
    again = train_eval(root, prepared, segmenter_stage, [videos[0]], steps=3, **common)
    assert again["resumed_from_step"] == 2 and again["step"] == 3


def test_help_documents_the_flags():
    out = subprocess.run([sys.executable, "-m", "flownet2s.train", "--helpfull"], capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    for flag in ("--segmenter_dir", "--pseudo_labels", "--max_gap", "--init_checkpoint",
                 "--flow_resolution", "--normalization", "--checkpoint_every"):
        assert flag in out.stdout, flag
