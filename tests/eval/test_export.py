"""eval.export (issue 11, item 4): the SavedModel of tiny random-weight stages, driven by
examples/stream_exported.py in a clean process (tensorflow + numpy + cv2, no repository on its path),
gives the masks and key decisions of eval.runtime.DynamicSegmenter on the same generated clip; the
exported decide applies the trained expert-input scaling; TFLite conversions are checked or recorded."""
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.eval.test_runtime import CROP, moving_frames, write_tiny_checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FRAMES = 24
VIDEO_SIZE = 96
RL_STAGE = "rl_eta0.14"

# runs the example with every package of this repository made unimportable
_CLEAN_CHILD = r"""
import runpy, sys
for name in ("deeplab_face", "flownet2s", "rl_scheduler", "eval", "bench", "tests"):
    sys.modules[name] = None
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _condition_stages(root, frames):
    """Random weights give N features of ~1e-7 (every pixel a tie: mask 0) and F a flow of ~0 px. Scale
    the logits conv (logits of a few units), the last flow predictor (a mean flow of 2 px) and give the
    scale field small random weights, so that masks have several classes and the warp moves them."""
    from deeplab_face import load_segmenter
    from flownet2s import load_flownet
    from deeplab_face.models.layers import resize_align_corners

    x = frames.astype(np.float32)
    segmenter = load_segmenter(os.path.join(root, "segmenter"))
    logits = [layer for layer in segmenter.task_net.layers if layer.get_weights()][-1]
    kernel, bias = logits.get_weights()
    spread = np.std(np.asarray(logits(segmenter.feature_net(x))))
    logits.set_weights([kernel * (3.0 / spread), bias])
    segmenter.save_weights(os.path.join(root, "segmenter", "final.weights.h5"))
    flow_net = load_flownet(os.path.join(root, "flownet"))
    size = [int(d) for d in flow_net.input[0].shape[1:3]]
    small = np.asarray(resize_align_corners(x, size, method="gather"))  # as DeepFeatureFlow resizes
    magnitude = np.mean(np.linalg.norm(np.asarray(flow_net([small[:-1], small[1:]])["flow"]), axis=-1))
    predict = flow_net.get_layer("predict_flow2")
    predict.set_weights([w * (2.0 / magnitude) for w in predict.get_weights()])
    scale = flow_net.get_layer("scale_conv")
    rng = np.random.default_rng(1)
    scale.set_weights([rng.normal(0, 0.02, w.shape).astype(np.float32) if w.ndim > 1 else w
                       for w in scale.get_weights()])
    flow_net.save_weights(os.path.join(root, "flownet", "final.weights.h5"))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, clip):
    """Tiny stages (tests/eval/test_runtime.py), conditioned, whose policy was trained with the budget
    KAR input and log LKD, so that decide's scaling is not the identity."""
    root = write_tiny_checkpoints(tmp_path_factory.mktemp("export_checkpoints"), seed=3)
    _condition_stages(root, clip[1][::6])
    path = os.path.join(root, RL_STAGE, "config.json")
    with open(path) as f:
        config = json.load(f)
    config["training"].update(kar_input="budget", lkd_input="log")
    with open(path, "w") as f:
        json.dump(config, f)
    return root


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A lossless (FFV1) generated clip, 96 px (OpenCV's writers round odd sizes), and the frames the
    example feeds its model: read back, resized to the crop size as it resizes them."""
    frames, _ = moving_frames(FRAMES, VIDEO_SIZE, seed=5)
    path = str(tmp_path_factory.mktemp("clip") / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"FFV1"), 30.0, (VIDEO_SIZE, VIDEO_SIZE))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    capture, read = cv2.VideoCapture(path), []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        read.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    assert len(read) == FRAMES and np.array_equal(np.stack(read), frames)   # lossless
    return path, np.stack([cv2.resize(f, (CROP, CROP), interpolation=cv2.INTER_LINEAR) for f in read])


def _threshold_with_margin(checkpoints, frames):
    """A tau that gives both keys and non-keys with every score at least 1e-4 away from it, the
    runtime's results at that tau and its scheduler (the PolicyScheduler of eval.runtime.load_pipeline)."""
    from eval.runtime import DynamicSegmenter, load_pipeline

    dff, scheduler = load_pipeline(checkpoints, "rl", threshold=2.0, rl_stage=RL_STAGE)
    runtime = DynamicSegmenter(dff, scheduler)
    scores = np.array([r.score for r in list(runtime.stream(frames))[1:]])   # tau 2: never a key
    for tau in np.quantile(scores, [0.5, 0.4, 0.6, 0.3, 0.7]):
        scheduler.threshold = float(tau)
        results = list(runtime.stream(frames))
        decided = np.array([r.score for r in results[1:]])
        keys = [r.is_key for r in results[1:]]
        if any(keys) and not all(keys) and np.min(np.abs(decided - tau)) > 1e-4:
            return float(tau), results, scheduler
    pytest.fail(f"no threshold with margin for scores {scores}")


@pytest.fixture(scope="module")
def exported(checkpoints, clip, tmp_path_factory):
    from eval.export import export

    tau, results, scheduler = _threshold_with_margin(checkpoints, clip[1])
    out = str(tmp_path_factory.mktemp("exported") / "model")
    info = export(checkpoints, out, rl_stage=RL_STAGE, threshold=tau, log=lambda line: None)
    return out, info, results, scheduler


@pytest.fixture(scope="module")
def signatures(exported):
    """The exported SavedModel's signatures, loaded once for the tests that call them in this process."""
    import tensorflow as tf

    return tf.saved_model.load(exported[0]).signatures


def test_streaming_loop_in_a_clean_process_gives_the_runtime_masks(exported, clip, tmp_path):
    out, info, results, _ = exported
    assert {"saved_model.pb", "pipeline.json", "variables"} <= set(os.listdir(out))
    assert info["kar_scale"] == pytest.approx(1 / 0.14) and info["lkd_input"] == "log"
    script = str(tmp_path / "stream_exported.py")         # outside the repository
    shutil.copy(os.path.join(ROOT, "examples", "stream_exported.py"), script)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND")}
    masks_path = str(tmp_path / "masks.npz")
    proc = subprocess.run([sys.executable, "-c", _CLEAN_CHILD, script, f"--model={out}", f"--video={clip[0]}",
                           f"--masks={masks_path}", f"--csv={tmp_path / 'log.csv'}"],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = np.load(masks_path)
    keys = [r.is_key for r in results]
    assert 1 < sum(keys) < FRAMES                       # both paths are exercised
    assert saved["keys"].tolist() == keys
    assert saved["masks"].shape == (FRAMES, CROP, CROP) and saved["masks"].dtype == np.uint8
    for i, r in enumerate(results):
        assert np.array_equal(saved["masks"][i], r.mask), f"frame {i} ({'key' if r.is_key else 'non-key'})"
    # the masks are not trivial: several classes, and the warp moves them between keys
    assert len(np.unique(saved["masks"])) >= 3
    assert min(r.flow_magnitude for r in results[1:]) > 0.1
    last_key = {i: max(k for k in range(i + 1) if keys[k]) for i in range(FRAMES)}
    assert any(not np.array_equal(saved["masks"][i], saved["masks"][last_key[i]]) for i in range(FRAMES))
    rows = open(tmp_path / "log.csv").read().split()[1:]
    scores = [float(row.split(",")[2]) for row in rows]
    np.testing.assert_allclose(scores[1:], [r.score for r in results[1:]], rtol=1e-5, atol=1e-6)
    assert f"{FRAMES} frames, {sum(keys)} keys" in proc.stdout


def test_decide_applies_the_trained_expert_scaling(exported, signatures):
    """decide(tap, raw KAR, raw LKD) = the PolicyScheduler's score with the same history, over histories
    with KAR and LKD far apart (budget KAR x 1/0.14, log2(1 + LKD)). The scheduler is the one
    eval.runtime.load_pipeline gave the runtime (its threshold does not enter the score)."""
    import tensorflow as tf

    _, info, _, scheduler = exported
    decide = signatures["decide"]
    rng = np.random.default_rng(0)
    deviation = rng.normal(0, 3, (1, *scheduler.policy.inputs[0].shape[1:])).astype(np.float32)
    for decisions in ([], [True], [False] * 5, [True, False, True] * 10, [False] * 200, [True] * 95):
        scheduler.reset()
        scheduler.decide({"frame_index": 0})
        scheduler.record(True)
        for is_key in decisions:
            scheduler.history.push(is_key)
        expected = scheduler.score({info["deviation_tap"]: deviation, "flow_magnitude": 0.0})
        window = decisions[-info["window"]:]
        lkd = next((j + 1 for j, k in enumerate(reversed(decisions)) if k), len(decisions) + 1)
        got = decide(**{info["deviation_tap"]: tf.constant(deviation),
                        "kar": tf.constant([sum(window) / info["window"]], tf.float32),
                        "lkd": tf.constant([float(lkd)], tf.float32)})["p_key"].numpy()[0]
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6), decisions[:5]


def test_tflite_conversion_matches_or_is_recorded(exported, signatures, clip):
    """Every signature is converted or its failure recorded; the converted key and propagate give the
    SavedModel's outputs."""
    import tensorflow as tf

    out, info, _, _ = exported
    assert set(info["tflite"]) == {"key", "propagate", "decide"}
    for name, result in info["tflite"].items():
        assert result.startswith("ok") == os.path.isfile(os.path.join(out, "tflite", f"{name}.tflite")), result
    # all three converted with builtin ops when this was written (README): a failure is a regression
    assert info["tflite"]["key"].startswith("ok") and info["tflite"]["propagate"].startswith("ok"), info["tflite"]
    saved = signatures

    def lite(name):
        return tf.lite.Interpreter(model_path=os.path.join(out, "tflite", f"{name}.tflite")).get_signature_runner(name)

    key_frame, frame = clip[1][3:4], clip[1][7:8]
    expected = saved["key"](frame=tf.constant(key_frame))
    got = lite("key")(frame=key_frame)
    np.testing.assert_allclose(got["features"], expected["features"].numpy(), rtol=1e-4, atol=1e-5)
    assert np.mean(got["mask"] == expected["mask"].numpy()) > 0.999
    features = expected["features"].numpy()
    expected = saved["propagate"](key_frame=tf.constant(key_frame), key_features=tf.constant(features),
                                  frame=tf.constant(frame))
    got = lite("propagate")(key_frame=key_frame, key_features=features, frame=frame)
    assert np.mean(got["mask"] == expected["mask"].numpy()) > 0.999
    np.testing.assert_allclose(got["flow_magnitude"], expected["flow_magnitude"].numpy(), rtol=1e-4)
    np.testing.assert_allclose(got["conv6_1"], expected["conv6_1"].numpy(), rtol=1e-4, atol=1e-5)


def test_command_refuses_missing_stages(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "eval.export", f"--checkpoints={tmp_path / 'none'}",
                           f"--out={tmp_path / 'out'}"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    last = proc.stderr.strip().splitlines()[-1]     # (after TensorFlow's start-up lines)
    assert proc.returncode == 2 and last.startswith("error:") and "--checkpoints" in last, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_numeric_flags_are_bounded_and_bad_values_refused_at_parse_time():
    from absl import flags

    from tests.eval.test_flag_bounds import _has_bound, command_flags

    with command_flags("eval.export") as defined:
        numeric = [f for f in defined if f.flag_type() in ("int", "float")]
        assert numeric and all(_has_bound(f) for f in numeric)
        for bad in ("--threshold=nan", "--threshold=inf", "--flow_resolution=quarter"):
            with pytest.raises(flags.Error, match=bad.split("=")[0].lstrip("-")):
                flags.FLAGS(["prog", "--checkpoints=c", "--out=o", bad])
            flags.FLAGS.unparse_flags()
