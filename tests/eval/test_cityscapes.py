"""eval.cityscapes + rl_scheduler.dvsnet_import: DVSNet's 4-region Cityscapes protocol on fake data.

Small frames (192x320, overlap 32 -> 128x192 regions, flow input 64x96) and random-weight
DeepLab-Fast / FlowNets / decision nets, written to a TF1 "all in one" checkpoint and loaded back.
"""
import json
import math

import cv2
import numpy as np
import pytest
import tensorflow as tf

from deeplab_face.data.cityscapes import ANNOTATED_INDEX
from deeplab_face.errors import CheckpointError, ConfigError
from deeplab_face.models.dvsnet_checkpoint import dvsnet_variable_map
from eval import metrics
from eval.cityscapes import RegionalSegmenter, make_region_schedulers, run
from eval.regions import merge_regions, region_boxes, region_size
from flownet2s.checkpoint import checkpoint_map
from flownet2s.dff import DeepFeatureFlow
from rl_scheduler.dvsnet_import import (build_dvsnet_networks, decision_variable_map,
                                        load_decision_checkpoint, load_dvsnet_release,
                                        resize_bilinear_tf1)

FRAME_HW = (192, 320)
OVERLAP = 32
REGION_HW = (128, 192)  # FRAME_HW / 2 + OVERLAP
ANNOTATED = (19, 294)  # the usual F and val frankfurt_000000_000294 (datasets.md §3)
VOID_AND_CLASS_IDS = (0, 1, 4, 7, 8, 11, 21, 23, 26)  # void ids 0, 1, 4 map to 255


def write_tf1_checkpoint(prefix, arrays):
    """TF1 Saver checkpoint of {name: array}, plus global_step and an Adam slot (ignored)."""
    graph = tf.Graph()
    with graph.as_default():
        feeds = {}
        for name, value in arrays.items():
            placeholder = tf.compat.v1.placeholder(tf.float32, value.shape)
            tf.compat.v1.Variable(placeholder, name=name)
            feeds[placeholder] = value
        tf.compat.v1.Variable(tf.zeros((1, 1)), name="decision/fully_connected_3/weights/Adam")
        tf.compat.v1.train.get_or_create_global_step()
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer(), feed_dict=feeds)
            return saver.save(session, str(prefix))


def decision_arrays(network, seed):
    rng = np.random.default_rng(seed)
    return {name: (rng.normal(size=v.shape) * 0.05).astype(np.float32)
            for name, v in decision_variable_map(network).items()}


def write_cityscapes(root, seed=0):
    """Two fake val snippets (F = 19 and 294) of moving random blobs, labelIds with void ids."""
    rng = np.random.default_rng(seed)
    height, width = FRAME_HW
    for frame_number in ANNOTATED:
        base = cv2.resize(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8), (width + 64, height),
                          interpolation=cv2.INTER_LINEAR)
        seq_dir = root / "leftImg8bit_sequence" / "val" / "frankfurt"
        seq_dir.mkdir(parents=True, exist_ok=True)
        for offset, number in enumerate(range(frame_number - 19, frame_number + 11)):
            frame = base[:, 2 * offset:2 * offset + width]  # pans 2 px per frame
            cv2.imwrite(str(seq_dir / f"frankfurt_000000_{number:06d}_leftImg8bit.png"), frame)
        label = rng.choice(VOID_AND_CLASS_IDS, size=(height // 16, width // 16)).astype(np.uint8)
        label = cv2.resize(label, (width, height), interpolation=cv2.INTER_NEAREST)
        gt_dir = root / "gtFine" / "val" / "frankfurt"
        gt_dir.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(gt_dir / f"frankfurt_000000_{frame_number:06d}_gtFine_labelIds.png"), label)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """Random-weight networks written as DVSNet's "all in one" checkpoint and loaded back."""
    root = tmp_path_factory.mktemp("dvsnet")
    segmenter, flow_net, decision_net = build_dvsnet_networks(REGION_HW)
    rng = np.random.default_rng(1)
    scale = flow_net.get_layer("predict_scale")
    scale.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.01 + (i == 1)
                       for i, w in enumerate(scale.get_weights())])
    arrays = {name: np.asarray(v.numpy(), np.float32)
              for name, v in dvsnet_variable_map(segmenter).items()}
    for name, (layer, index) in checkpoint_map(flow_net, "FlowNets").items():
        arrays[name] = np.asarray(layer.weights[index].numpy(), np.float32)
    scale_weights, scale_biases = scale.get_weights()
    arrays.update({"FlowNets/predict_scale/weights": scale_weights,
                   "FlowNets/predict_scale/biases": scale_biases})
    arrays.update(decision_arrays(decision_net, seed=2))
    prefix = write_tf1_checkpoint(root / "model.ckpt", arrays)
    loaded = load_dvsnet_release(prefix, region_size=REGION_HW)
    return dict(release=loaded, arrays=arrays, prefix=prefix, root=root,
                dff=DeepFeatureFlow(loaded.segmenter, loaded.flow_net, flow_resolution="half",
                                    border="clamp", dvsnet_compat=True))


def test_region_geometry_is_dvsnets_and_covers_the_frame():
    assert region_boxes((1024, 2048)) == ((0, 576, 0, 1088), (0, 576, 960, 2048),
                                          (448, 1024, 0, 1088), (448, 1024, 960, 2048))
    assert region_size((1024, 2048)) == (576, 1088)
    assert region_size(FRAME_HW, OVERLAP) == REGION_HW
    coverage = np.zeros(FRAME_HW, int)
    for box in region_boxes(FRAME_HW, OVERLAP):
        assert (box.y1 - box.y0, box.x1 - box.x0) == REGION_HW
        coverage[box.y0:box.y1, box.x0:box.x1] += 1
    assert coverage.min() == 1
    rows_twice = np.flatnonzero(coverage[:, 0] == 2)  # horizontal band: 2 * overlap rows
    cols_twice = np.flatnonzero(coverage[0] == 2)
    assert (rows_twice.min(), rows_twice.max() + 1) == (96 - OVERLAP, 96 + OVERLAP)
    assert (cols_twice.min(), cols_twice.max() + 1) == (160 - OVERLAP, 160 + OVERLAP)
    assert (coverage == 4).sum() == (2 * OVERLAP) ** 2
    with pytest.raises(ConfigError, match="overlap"):
        region_boxes(FRAME_HW, 30)


def test_merge_takes_the_label_of_the_larger_score():
    boxes = region_boxes((32, 32), 8)  # 24x24 regions
    labels = [np.full((24, 24), r, np.uint8) for r in range(4)]
    scores = [np.full((24, 24), s, np.float32) for s in (1.0, 3.0, 2.0, 0.5)]
    mask = merge_regions(labels, scores, boxes, (32, 32))
    assert mask[0, 0] == 0 and mask[31, 31] == 3  # covered by one region
    assert mask[0, 12] == 1  # top band: region 1 (3.0) beats region 0 (1.0)
    assert mask[12, 0] == 2  # left band: region 2 (2.0) beats region 0
    assert mask[12, 12] == 1  # centre: all four, region 1 is the largest
    assert mask[31, 12] == 2  # bottom band: region 2 beats region 3


def test_release_loads_all_three_networks(release):
    loaded, arrays = release["release"], release["arrays"]
    assert loaded.reports["decision_net"]["loaded"] == 10
    for name, variable in decision_variable_map(loaded.decision_net).items():
        np.testing.assert_array_equal(variable.numpy(), arrays[name])
    for name in ("fc_out/weights", "res4b22_branch2c/weights", "bn_conv1/moving_variance"):
        np.testing.assert_array_equal(dvsnet_variable_map(loaded.segmenter)[name].numpy(), arrays[name])
    np.testing.assert_array_equal(loaded.flow_net.get_layer("predict_scale").get_weights()[0],
                                  arrays["FlowNets/predict_scale/weights"])
    assert tuple(release["dff"].flow_input) == (64, 96)  # half the region


def test_decision_checkpoint_round_trip_and_readable_mismatch(tmp_path, release):
    network = build_dvsnet_networks(REGION_HW, decision=True)[2]
    good = decision_arrays(network, seed=5)
    report = load_decision_checkpoint(network, write_tf1_checkpoint(tmp_path / "good" / "m", good))
    assert report["loaded"] == 10
    np.testing.assert_array_equal(network.get_layer("fc0").kernel.numpy(),
                                  good["decision/fully_connected/weights"])
    bad = dict(good)
    del bad["decision/fully_connected_3/biases"]
    bad["decision/Conv/weights"] = np.zeros((3, 3, 384, 64), np.float32)
    bad["decision/fully_connected_4/weights"] = np.zeros((1, 1), np.float32)
    before = network.get_layer("fc0").kernel.numpy()
    with pytest.raises(CheckpointError) as error:
        load_decision_checkpoint(network, write_tf1_checkpoint(tmp_path / "bad" / "m", bad))
    message = str(error.value)
    assert "\n" not in message
    for part in ("missing (decision/fully_connected_3/biases)",
                 "unexpected (decision/fully_connected_4/weights)",
                 "mis-shaped (decision/Conv/weights [3, 3, 384, 64]!=[3, 3, 384, 96])"):
        assert part in message
    np.testing.assert_array_equal(network.get_layer("fc0").kernel.numpy(), before)  # nothing assigned


def test_resize_bilinear_tf1_matches_tf_v1_op():
    features = np.random.default_rng(0).normal(size=(1, 5, 9, 3)).astype(np.float32)
    expected = tf.compat.v1.image.resize_bilinear(features, (4, 8), align_corners=False).numpy()
    np.testing.assert_allclose(resize_bilinear_tf1(features, (4, 8)), expected, atol=1e-6)


def test_fixed_interval_one_equals_per_frame_segmentation_merged(tmp_path, release):
    dff, segmenter = release["dff"], release["release"].segmenter
    runner = RegionalSegmenter(dff, make_region_schedulers("fixed", 1), FRAME_HW, OVERLAP)
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (2,) + FRAME_HW + (3,), dtype=np.uint8)
    results = list(runner.stream(frames))
    assert all(all(r.is_key) for r in results)
    assert metrics.aki([[r.is_key[region] for r in results] for region in range(4)]) == 1.0
    boxes = region_boxes(FRAME_HW, OVERLAP)
    for frame, result in zip(frames, results):
        crops = np.stack([frame[b.y0:b.y1, b.x0:b.x1] for b in boxes]).astype(np.float32)
        logits = np.asarray(segmenter.logits_model(crops))  # upsampled logits per region
        best = np.full((4,) + FRAME_HW, -np.inf, np.float32)
        labels = np.zeros((4,) + FRAME_HW, np.int64)
        for r, b in enumerate(boxes):
            best[r, b.y0:b.y1, b.x0:b.x1] = logits[r].max(-1)
            labels[r, b.y0:b.y1, b.x0:b.x1] = logits[r].argmax(-1)
        expected = np.take_along_axis(labels, best.argmax(0)[None], 0)[0]
        np.testing.assert_array_equal(result.mask, expected)


def test_command_runs_the_protocol_on_fake_snippets(tmp_path, release):
    write_cityscapes(tmp_path / "cityscapes")
    out = tmp_path / "out" / "results.json"
    # a target below any score: every region keeps its frame-1 key to the annotated frame
    results = run(tmp_path / "cityscapes", release["prefix"], scheduler="dvsnet", threshold=-1e9,
                  overlap=OVERLAP, out=str(out), warm_up=False)
    numbers = results["cityscapes"]
    assert numbers["snippets"] == 2 and numbers["frames"] == 2 * (ANNOTATED_INDEX + 1)
    assert numbers["first_frame_keys"] == [4, 4]
    assert numbers["keys_per_region"] == [2, 2, 2, 2]
    assert numbers["aki"] == pytest.approx(ANNOTATED_INDEX + 1)
    assert math.isfinite(numbers["miou"]) and 0.0 <= numbers["miou"] <= 100.0
    assert math.isfinite(numbers["fps"]) and numbers["fps"] > 0
    assert results["config"]["region_size"] == list(REGION_HW)
    saved = json.loads(out.read_text())
    assert saved["curves"]["dvsnet"][0]["aki"] == pytest.approx(ANNOTATED_INDEX + 1)


def test_flow_magnitude_keys_follow_the_threshold(release):
    frames = np.random.default_rng(4).integers(0, 256, (3,) + FRAME_HW + (3,), dtype=np.uint8)
    for threshold, keys_after_first in ((-1.0, True), (1e9, False)):  # key iff mean |flow| > threshold
        runner = RegionalSegmenter(release["dff"], make_region_schedulers("flow_magnitude", threshold),
                                   FRAME_HW, OVERLAP, merge_score="probability")
        if threshold < 0:
            runner.warm_up(frames[0], batch_sizes=(4,))
            assert runner.index == 0 and not any(runner.keys.has_key(r) for r in range(4))  # fresh after
        results = list(runner.stream(frames))
        assert results[0].is_key == (True,) * 4
        for result in results[1:]:
            assert result.is_key == (keys_after_first,) * 4
            assert all(math.isfinite(m) and m >= 0 for m in result.flow_magnitudes)
        assert results[-1].mask.shape == FRAME_HW


def test_random_keys_are_per_region_streams_with_mixed_batches(release, monkeypatch):
    """Seeded per-region draws decide each region alone; key and warp regions share a frame."""
    frames = np.random.default_rng(6).integers(0, 256, (4,) + FRAME_HW + (3,), dtype=np.uint8)
    runner = RegionalSegmenter(release["dff"], make_region_schedulers("random", 3, seed=1),
                               FRAME_HW, OVERLAP)
    calls = []

    def spy(name, method):
        def wrapped(frames, streams, *args, **kwargs):
            calls.append((name, list(streams)))
            return method(frames, streams, *args, **kwargs)
        return wrapped

    for name in ("key", "propagate"):  # the regions key and propagate through the shared step
        monkeypatch.setattr(runner.keys, name, spy(name, getattr(runner.keys, name)))
    results = list(runner.stream(frames))
    draws = np.stack([np.random.default_rng(1 + r).random(len(frames) - 1) for r in range(4)], 1)
    expected = draws < 1.0 / 3
    assert (expected.any(1) & (~expected).any(1)).any()  # some frame mixes keys and warps
    assert calls[0] == ("key", [0, 1, 2, 3])
    steps = iter(calls[1:])
    for result, row in zip(results[1:], expected):
        assert result.is_key == tuple(row.tolist())
        warped = np.isfinite(result.flow_magnitudes)  # flow runs on the non-key regions only
        np.testing.assert_array_equal(warped, ~row)
        for name, regions in (("key", np.flatnonzero(row)), ("propagate", np.flatnonzero(~row))):
            if len(regions):
                assert next(steps) == (name, regions.tolist())
    assert next(steps, None) is None
