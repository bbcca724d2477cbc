"""flownet2s.synthetic_flow + flownet2s.pretrain: pairs with known flow, supervised pretraining of F,
the stage it writes and fine-tuning starting from it (flownet2s.train --init_stage)."""
import json
import os
import subprocess
import sys

import cv2
import keras
import numpy as np
import pytest

from deeplab_face.errors import CheckpointError, ConfigError
from flownet2s import build_flownet, load_flownet
from flownet2s import pretrain as pretrain_module
from flownet2s.model import MULTISCALE_LEVELS, scale_head_layer_names
from flownet2s.pretrain import (average_epe, level_targets, make_train_step, pretrain, stack_targets,
                                zero_epe)
from flownet2s.synthetic_flow import make_pairs, pair_stream, resize_pair
from flownet2s.warp import warp
from tests.backend_parity import ROOT

SIZE = 64


@pytest.fixture(scope="module")
def pairs():
    return make_pairs(6, SIZE, seed=1, photometric=False)


def _warp_error(pairs, flow):
    warped = np.asarray(warp(pairs["key"].astype(np.float32), flow))
    return np.abs(warped - pairs["current"]).mean(-1)


def test_ground_truth_flow_warps_the_key_frame_onto_the_current_frame(pairs):
    error = _warp_error(pairs, pairs["flow"])
    # Non-occluded pixels, one pixel away from a layer's antialiased outline.
    inner = np.stack([cv2.erode(v.astype(np.uint8), np.ones((3, 3), np.uint8)) for v in pairs["valid"]])
    inner = inner.astype(bool)
    assert 0.5 < inner.mean() < 1.0
    assert error[inner].mean() < 1.5 and np.percentile(error[inner], 99) < 12
    # The test can fail: no motion, or the forward sign, leaves large errors on the same pixels.
    assert _warp_error(pairs, np.zeros_like(pairs["flow"]))[inner].mean() > 8 * error[inner].mean()
    assert _warp_error(pairs, -pairs["flow"])[inner].mean() > 8 * error[inner].mean()


def test_motion_is_face_video_sized(pairs):
    magnitude = np.linalg.norm(make_pairs(16, SIZE, seed=2)["flow"], axis=-1)
    assert 1.0 < magnitude.mean() < 0.15 * SIZE
    assert magnitude.max() < 0.4 * SIZE


def test_pairs_are_deterministic_per_seed(pairs):
    again = make_pairs(6, SIZE, seed=1, photometric=False)
    for name in pairs:
        np.testing.assert_array_equal(again[name], pairs[name])
    other = next(pair_stream(SIZE, 2))
    assert not np.array_equal(other["key"], pairs["key"][0])


def test_resize_pair_scales_the_vectors():
    flow = np.zeros((129, 129, 2), np.float32)
    flow[..., 0] = 4.0
    image = np.zeros((129, 129, 3), np.uint8)
    _, _, small, valid = resize_pair(image, image, flow, np.ones((129, 129), bool), 64)
    np.testing.assert_allclose(small[..., 0], 4.0 * 63 / 128, rtol=1e-5)
    assert small.shape == (64, 64, 2) and valid.all()


def test_multiscale_outputs_add_no_weights(tmp_path):
    plain = build_flownet(input_size=SIZE, feature_channels=8)
    multi = build_flownet(input_size=SIZE, feature_channels=8, multiscale=True)
    assert [w.shape for w in plain.weights] == [w.shape for w in multi.weights]
    assert "multiscale" not in plain.flownet_args and multi.flownet_args["multiscale"]
    frames = np.random.default_rng(0).uniform(0, 255, (1, SIZE, SIZE, 3)).astype(np.float32)
    out = multi([frames, frames[:, ::-1]])
    for level in MULTISCALE_LEVELS:
        assert out[f"predict_flow{level}"].shape == (1, SIZE >> level, SIZE >> level, 2)
    np.testing.assert_allclose(np.asarray(out["flow"]), 20 * np.asarray(out["predict_flow2"]), rtol=1e-5)
    multi.save_weights(str(tmp_path / "multi.weights.h5"))
    plain.load_weights(str(tmp_path / "multi.weights.h5"))
    np.testing.assert_allclose(np.asarray(plain([frames, frames[:, ::-1]])["flow"]),
                               np.asarray(out["flow"]), atol=1e-5)


def test_level_targets_are_pooled_and_divided_by_20():
    flow = np.zeros((SIZE, SIZE, 2), np.float32)
    flow[:, :32, 0] = 8.0
    targets = level_targets(flow, SIZE)
    assert [t.shape[0] for t in targets] == [SIZE >> level for level in MULTISCALE_LEVELS]
    np.testing.assert_allclose(targets[0], [[[0.2, 0.0]]], atol=1e-5)   # predict_flow6: 1x1, the mean
    np.testing.assert_allclose(targets[-1][:, :8, 0], 0.4, atol=1e-5)   # predict_flow2: left half


def test_the_loss_pulls_the_flow_towards_the_ground_truth():
    """On one batch, a few dozen steps bring the AEE far below predicting no motion: the targets'
    sign, x/y order, scale (/20) and pooling are right (a wrong one converges elsewhere)."""
    keras.utils.set_random_seed(0)
    flow_net = build_flownet(input_size=SIZE, multiscale=True)
    pretrain_module.msra_initialization(flow_net, 0)
    pretrain_module.bilinear_flow_upsampling(flow_net)
    optimizer = keras.optimizers.Adam(1e-3)
    batch = make_pairs(4, SIZE, seed=3)
    step = make_train_step(flow_net, optimizer)
    targets = stack_targets(batch["flow"], SIZE)
    key, current = batch["key"].astype(np.float32), batch["current"].astype(np.float32)
    for _ in range(40):
        step(key, current, targets)
    assert average_epe(flow_net, batch) < 0.6 * zero_epe(batch)


def test_pretraining_lowers_the_end_point_error(tmp_path):
    root = str(tmp_path / "pretrain")
    results = pretrain(root, input_size=SIZE, steps=20, batch_size=4, learning_rate=1e-3, seed=0,
                       checkpoint_every=0, val_pairs=8, face_pairs=0, log=lambda _: None, verbose=0)
    # A few dozen steps take the MSRA-initialised net from random flows to motions of the right
    # size (held-out pairs); learning their direction takes FlowNetS thousands of steps.
    assert results["val_epe_after"] < 0.75 * results["val_epe_before"], results
    assert results["val_epe_after"] < 1.3 * results["val_epe_zero"], results
    assert results["face_epe_after"] is None and results["step"] == 20
    for name in ("config.json", "final.weights.h5", "hparams.json", "DONE"):
        assert os.path.exists(os.path.join(root, name)), name
    assert any(f.startswith("events.out") for f in os.listdir(os.path.join(root, "tensorboard")))
    flow_net = load_flownet(root)          # the stage loads as any flow stage does
    assert flow_net.input_shape[0][1:] == (SIZE, SIZE, 3) and set(flow_net.output) == {
        "flow", "scale", "conv6", "conv6_1"}
    with open(os.path.join(root, "DONE")) as f:
        assert json.load(f)["val_epe_after"] == results["val_epe_after"]


def test_interrupted_pretraining_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    root = str(tmp_path / "pretrain")
    common = dict(input_size=SIZE, batch_size=2, checkpoint_every=2, val_pairs=2, face_pairs=1,
                  face_crop_size=65, face_frame_size=96, log=lambda _: None, verbose=0)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(pretrain_module, "finish_stage", killed)
    with pytest.raises(KeyboardInterrupt):
        pretrain(root, steps=4, **common)
    assert not os.path.exists(os.path.join(root, "DONE"))
    with open(os.path.join(root, pretrain_module.BEFORE)) as f:
        before = json.load(f)
    monkeypatch.undo()
    results = pretrain(root, steps=5, **common)
    assert results["resumed_from_step"] == 4 and results["step"] == 5
    assert results["val_epe_before"] == before["val_epe_before"]   # the untrained net's, kept
    assert results["face_epe_after"] is not None and results["face_epe_zero"] > 0
    assert os.path.exists(os.path.join(root, "DONE"))


@pytest.mark.parametrize("kwargs", [dict(input_size=100), dict(input_size=32), dict(steps=0),
                                    dict(batch_size=0), dict(learning_rate=0.0), dict(face_pairs=-1),
                                    dict(val_pairs=0), dict(width=0.0), dict(normalization="bgr")])
def test_bad_arguments_raise_config_error(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        pretrain(str(tmp_path / "x"), **kwargs)
    assert not os.path.exists(tmp_path / "x")   # rejected before anything is written


def test_command_prints_one_error_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "flownet2s.pretrain", f"--root_dir={tmp_path}",
                          "--input_size=100"], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 2
    assert "--input_size=100" in out.stderr and "Traceback" not in out.stderr


def _fake_pretrain_stage(root, width=0.375, input_size=128):
    """A finished pretraining stage (random weights) at another input size than F's."""
    net = build_flownet(width=width, input_size=input_size)
    os.makedirs(root)
    net.save_weights(os.path.join(root, "final.weights.h5"))
    with open(os.path.join(root, "config.json"), "w") as f:
        json.dump(net.flownet_args, f)
    open(os.path.join(root, "DONE"), "w").close()
    return net


def test_finetuning_starts_from_the_pretraining_stage(flow_prepared, segmenter_stage, tmp_path):
    from flownet2s.train import train_eval
    prepared, videos = flow_prepared
    stage = _fake_pretrain_stage(str(tmp_path / "pretrained"))
    root = str(tmp_path / "flownet")
    # lr ~0: after one step F still holds the pretrained weights (at input 64, not 128).
    train_eval(root, prepared, segmenter_stage, [videos[0]], steps=1, batch_size=1, learning_rate=1e-12,
               checkpoint_every=0, verbose=0, init_stage=str(tmp_path / "pretrained"))
    tuned = load_flownet(root)
    assert tuned.input_shape[0][1:] == (64, 64, 3)
    skip = set(scale_head_layer_names(stage))
    for layer in stage.layers:
        if layer.weights and layer.name not in skip:
            for a, b in zip(layer.get_weights(), tuned.get_layer(layer.name).get_weights()):
                np.testing.assert_allclose(a, b, atol=1e-6, err_msg=layer.name)
    with open(os.path.join(root, "hparams.json")) as f:
        assert json.load(f)["init_stage"] == str(tmp_path / "pretrained")


def test_init_stage_must_match_width_and_not_come_with_a_checkpoint(flow_prepared, segmenter_stage,
                                                                    tmp_path):
    from flownet2s.train import train_eval
    prepared, videos = flow_prepared
    _fake_pretrain_stage(str(tmp_path / "wide"), width=0.5, input_size=64)
    with pytest.raises(ConfigError, match="width"):
        train_eval(str(tmp_path / "a"), prepared, segmenter_stage, [videos[0]], steps=1, verbose=0,
                   init_stage=str(tmp_path / "wide"))
    with pytest.raises(ConfigError, match="init_stage"):
        train_eval(str(tmp_path / "b"), prepared, segmenter_stage, [videos[0]], steps=1, verbose=0,
                   init_stage=str(tmp_path / "wide"), init_checkpoint="x")
    with pytest.raises(CheckpointError):
        train_eval(str(tmp_path / "c"), prepared, segmenter_stage, [videos[0]], steps=1, verbose=0,
                   init_stage=str(tmp_path / "missing"))
