"""eval.runtime.DynamicSegmenter on tiny random-weight models (S = 65, flow input 64).

Also home of the tiny stage writers that test_sweeps and test_segment_video import.
"""
import json
import math
import os

import numpy as np
import pytest

CROP = 65
NUM_CLASSES = 5


def _write_stage(stage_dir, model, config):
    os.makedirs(stage_dir, exist_ok=True)
    with open(os.path.join(stage_dir, "config.json"), "w") as f:
        json.dump(config, f)
    model.save_weights(os.path.join(stage_dir, "final.weights.h5"))
    with open(os.path.join(stage_dir, "DONE"), "w") as f:
        f.write("done\n")


def write_tiny_checkpoints(root, seed=0):
    """checkpoints/{segmenter, flownet, dvsnet, rl_eta0.14} with random weights, stage layout."""
    import keras

    from deeplab_face import build_segmenter
    from flownet2s import build_flownet
    from rl_scheduler import build_decision_network, build_policy

    keras.utils.set_random_seed(seed)
    root = str(root)
    segmenter = build_segmenter("mobilenet_v2", NUM_CLASSES, CROP)
    _write_stage(os.path.join(root, "segmenter"), segmenter, segmenter.segmenter_args)
    flow_net = build_flownet(input_size=64, feature_channels=int(segmenter.feature_net.output_shape[-1]))
    _write_stage(os.path.join(root, "flownet"), flow_net, flow_net.flownet_args)
    deviation = [int(d) for d in flow_net.output["conv6_1"].shape[1:]]
    _write_stage(os.path.join(root, "dvsnet"), build_decision_network(deviation),
                 dict(deviation_shape=deviation, deviation_tap="conv6_1"))
    _write_stage(os.path.join(root, "rl_eta0.14"), build_policy(deviation),
                 dict(deviation_shape=deviation, deviation_tap="conv6_1",
                      training=dict(kar_limit=0.14, window=90)))
    return root


def moving_frames(count, size=CROP, seed=0):
    """A bright square sliding over noise: uint8 (T, S, S, 3) with labels (T, S, S)."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    frames = np.repeat(background[None], count, axis=0)
    labels = np.zeros((count, size, size), np.uint8)
    for t in range(count):
        x = 5 + t % (size - 25)
        frames[t, 20:40, x:x + 20] = (230, 180, 150)
        labels[t, 20:40, x:x + 20] = 1
    return frames, labels


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    return write_tiny_checkpoints(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="session")
def tiny_dff(tiny_checkpoints):
    from flownet2s.dff import load_dff
    return load_dff(os.path.join(tiny_checkpoints, "segmenter"), os.path.join(tiny_checkpoints, "flownet"))


def test_fixed_scheduler_gives_exactly_k_spaced_keys(tiny_dff):
    from eval.runtime import DynamicSegmenter
    from rl_scheduler.schedulers import make_scheduler

    frames, _ = moving_frames(17)
    results = list(DynamicSegmenter(tiny_dff, make_scheduler("fixed", threshold=4)).stream(frames))
    assert [r.index for r in results] == list(range(17))
    assert [i for i, r in enumerate(results) if r.is_key] == [0, 4, 8, 12, 16]
    for r in results:
        assert r.mask.shape == (CROP, CROP) and r.mask.dtype == np.uint8 and r.mask.max() < NUM_CLASSES
        assert math.isclose(r.ms["total"], r.ms["flow"] + r.ms["policy"] + r.ms["key"] + r.ms["warp_task"])
        # key frames run N only (no flow for a fixed interval); non-key frames flow + warp + task
        assert (r.ms["key"] > 0) == r.is_key and (r.ms["warp_task"] > 0) != r.is_key
        assert (r.ms["flow"] > 0) != r.is_key


def test_masks_match_the_dff_paths_and_memory_is_one_key(tiny_dff):
    from eval.runtime import DynamicSegmenter
    from rl_scheduler.schedulers import make_scheduler

    frames, _ = moving_frames(6)
    runtime = DynamicSegmenter(tiny_dff, make_scheduler("flow_magnitude", threshold=1e9))
    results = list(runtime.stream(frames))
    assert [r.is_key for r in results] == [True] + [False] * 5   # threshold never reached
    assert all(r.ms["flow"] > 0 for r in results[1:]) and math.isnan(results[0].score)
    key = tiny_dff.key(frames[:1].astype(np.float32))
    assert np.array_equal(results[0].mask, np.argmax(np.asarray(key["probs"])[0], -1))
    out = tiny_dff.propagate(frames[:1].astype(np.float32), key["features"], frames[5:6].astype(np.float32))
    assert np.mean(results[5].mask == np.argmax(np.asarray(out["probs"])[0], -1)) > 0.999
    assert results[5].score == pytest.approx(results[5].flow_magnitude)
    # only the last key frame and its features are held, whatever the length of the stream
    assert runtime.keys.streams == 1 and runtime.keys.index() == 0
    assert runtime.keys.held().shape == (1, CROP, CROP, 3)
    held = [v for v in vars(runtime).values() if isinstance(v, (list, dict, tuple))]
    assert held == []


def test_frames_go_through_the_shared_key_step(tiny_dff, monkeypatch):
    """DynamicSegmenter keys and propagates through flownet2s.dff.KeyHolder: each mask is the argmax
    of what the shared step returned, one call per frame (issue 10: DFF has one home)."""
    from eval.runtime import DynamicSegmenter
    from flownet2s.dff import KeyHolder
    from rl_scheduler.schedulers import make_scheduler

    calls = []

    def spy(name):
        method = getattr(KeyHolder, name)

        def wrapped(self, frames, *args, **kwargs):
            out = method(self, frames, *args, **kwargs)
            calls.append((name, np.argmax(np.asarray(out["probs"])[0], -1)))
            return out
        return wrapped

    for name in ("key", "propagate"):
        monkeypatch.setattr(KeyHolder, name, spy(name))
    frames, _ = moving_frames(7)
    for scheduler in (make_scheduler("fixed", threshold=3), make_scheduler("flow_magnitude", threshold=1e9)):
        calls.clear()
        results = list(DynamicSegmenter(tiny_dff, scheduler).stream(frames))
        assert [name for name, _ in calls] == ["key" if r.is_key else "propagate" for r in results]
        for (_, mask), result in zip(calls, results):
            np.testing.assert_array_equal(result.mask, mask)


def test_policy_scheduler_sees_the_observation(tiny_dff, tiny_checkpoints):
    from eval.runtime import DynamicSegmenter
    from rl_scheduler import load_policy
    from rl_scheduler.schedulers import make_scheduler

    policy = load_policy(os.path.join(tiny_checkpoints, "rl_eta0.14"))
    frames, _ = moving_frames(5)
    always = list(DynamicSegmenter(tiny_dff, make_scheduler("rl", policy=policy, threshold=-1.0)).stream(frames))
    never = list(DynamicSegmenter(tiny_dff, make_scheduler("rl", policy=policy, threshold=2.0)).stream(frames))
    assert all(r.is_key for r in always) and [r.is_key for r in never] == [True] + [False] * 4
    assert all(0.0 <= r.score <= 1.0 and r.ms["flow"] > 0 and r.ms["policy"] > 0 for r in always[1:])


def test_budget_mode_holds_the_target_aki_end_to_end(tiny_dff):
    """Budget mode (eval.budget) on the real runtime with random-weight N and F: flow_magnitude held at
    AKI 4 over 200 frames, starting from its default threshold (1 px)."""
    from eval.budget import BudgetController
    from eval.runtime import DynamicSegmenter
    from rl_scheduler.schedulers import make_scheduler

    frames, _ = moving_frames(200)
    scheduler = make_scheduler("flow_magnitude")
    controller = BudgetController(scheduler, target_aki=4)
    results = list(DynamicSegmenter(tiny_dff, scheduler, budget=controller).stream(frames))
    assert len(results) / sum(r.is_key for r in results) == pytest.approx(4, rel=0.15)
    assert controller.running_aki == pytest.approx(4, rel=0.15)      # the last 90 frames
    assert results[1].knob == 1.0 and len({r.knob for r in results}) > 100   # moved every decided frame


def test_segmenter_stage_prefers_the_recalibrated_one(tmp_path):
    from eval.runtime import segmenter_stage_dir
    (tmp_path / "segmenter").mkdir()
    assert segmenter_stage_dir(str(tmp_path)) == str(tmp_path / "segmenter")
    (tmp_path / "segmenter_bn").mkdir()               # unfinished: not used
    assert segmenter_stage_dir(str(tmp_path)) == str(tmp_path / "segmenter")
    (tmp_path / "segmenter_bn" / "DONE").write_text("done\n")
    assert segmenter_stage_dir(str(tmp_path)) == str(tmp_path / "segmenter_bn")
