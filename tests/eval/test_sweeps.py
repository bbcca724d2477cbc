"""eval.sweeps: the decision loop over VideoCache entries, FPS formation, matched AKI, run_sweeps."""
import json
import os

import numpy as np
import pytest

from eval import sweeps
from tests.eval.test_runtime import CROP, NUM_CLASSES, moving_frames, tiny_checkpoints, tiny_dff  # noqa: F401


@pytest.fixture(scope="module")
def video():
    return moving_frames(13, seed=3)


def test_cached_decisions_equal_the_runtime_and_pairs_are_computed_once(tiny_dff, video):
    from eval.runtime import DynamicSegmenter
    from rl_scheduler.cache import VideoCache
    from rl_scheduler.schedulers import make_scheduler

    images, labels = video
    cache = VideoCache(tiny_dff, images, labels, num_classes=NUM_CLASSES, batch_size=4)
    run = sweeps.run_decisions(cache, make_scheduler("fixed", threshold=5), NUM_CLASSES, keep_masks=True)
    assert np.flatnonzero(run["keys"]).tolist() == [0, 5, 10]
    streamed = list(DynamicSegmenter(tiny_dff, make_scheduler("fixed", threshold=5)).stream(images))
    assert [r.is_key for r in streamed] == run["keys"].tolist()
    agreement = np.mean([np.mean(m == r.mask) for m, r in zip(run["masks"], streamed)])
    assert agreement > 0.999   # batched vs single-frame float round-off only
    confusion = sum(c.confusion for c in [cache.key(0), cache.pair(0, 1), cache.pair(0, 4), cache.key(5)])
    assert run["confusion"].sum() == labels.size and confusion.sum() == 4 * labels[0].size
    assert run["frame_miou"][3] == pytest.approx(cache.pair(0, 3).miou)

    # a second sweep point over the same pairs computes nothing new
    pairs, keys = cache.pair_computations, cache.key_computations
    again = sweeps.run_decisions(cache, make_scheduler("flow_magnitude", threshold=1e9), NUM_CLASSES)
    assert np.flatnonzero(again["keys"]).tolist() == [0]
    assert cache.key_computations == keys
    assert set((0, i) for i in range(1, 13)) <= set(cache._pairs) and cache.pair_computations > pairs
    pairs = cache.pair_computations
    sweeps.run_decisions(cache, make_scheduler("flow_magnitude", threshold=1e9), NUM_CLASSES)
    assert cache.pair_computations == pairs


def test_model_time_fps_formula():
    stage_ms = {"flow": 5.0, "key": 40.0, "warp_task": 3.0, "policy": {"rl": 1.0, "fixed": 0.1}}
    keys = [np.array([1, 0, 0, 1, 0], bool)]
    # rl: 2 keys * 40 + 3 non-keys * 3 + 4 decisions * (5 flow + 1 policy) = 113 ms for 5 frames
    assert sweeps.model_time_fps(keys, "rl", stage_ms) == pytest.approx(5000 / 113)
    # fixed: the flow runs on the 3 non-key frames only; 2*40 + 3*3 + 3*5 + 4*0.1 = 104.4 ms
    assert sweeps.model_time_fps(keys, "fixed", stage_ms) == pytest.approx(5000 / 104.4)


def test_miou_at_aki_interpolates_in_log_aki_on_the_frontier():
    curve = [{"aki": 10.0, "miou": 70.0}, {"aki": 40.0, "miou": 60.0}, {"aki": 20.0, "miou": 50.0}]
    # (20, 50) is beaten by (40, 60): the frontier is 10 -> 40
    assert sweeps.upper_frontier(curve) == [(10.0, 70.0), (40.0, 60.0)]
    assert sweeps.miou_at_aki(curve, 20.0) == pytest.approx(65.0)    # log 20 is halfway from 10 to 40
    assert sweeps.miou_at_aki(curve, 10.0) == pytest.approx(70.0)
    assert sweeps.miou_at_aki(curve, 50.0) is None and sweeps.miou_at_aki(curve, 5.0) is None
    table = sweeps.matched_aki_table({"a": curve, "b": [{"aki": 20.0, "miou": 1.0}]}, [20.0])
    assert table == {20.0: {"a": pytest.approx(65.0), "b": 1.0}}


def _write_prepared(prepared_dir, videos):
    from deeplab_face.data.tfrecords import encode_example, write_examples, write_manifest

    os.makedirs(prepared_dir, exist_ok=True)
    manifest = {"size": CROP, "videos": {}}
    for video_id, (images, labels) in videos.items():
        examples = [encode_example(im, lb, video_id, t + 1, np.zeros((68, 2), np.float32))
                    for t, (im, lb) in enumerate(zip(images, labels))]
        write_examples(os.path.join(prepared_dir, f"{video_id}.tfrecord"), examples)
        manifest["videos"][video_id] = {"frames": len(images), "file": f"{video_id}.tfrecord"}
    write_manifest(prepared_dir, manifest)


def test_run_sweeps_end_to_end(tmp_path, tiny_checkpoints):  # noqa: F811
    prepared = str(tmp_path / "prepared")
    _write_prepared(prepared, {"001": moving_frames(12, seed=1), "002": moving_frames(10, seed=2)})
    ck = lambda name: os.path.join(tiny_checkpoints, name)  # noqa: E731
    lines = []
    result = sweeps.run_sweeps(str(tmp_path / "sweeps"), prepared, ck("segmenter"), ck("flownet"),
                               {0.14: ck("rl_eta0.14")}, ck("dvsnet"), ["001", "002"],
                               rl_thresholds=(-1.0, 2.0), dvsnet_thresholds=(50.0,),
                               flow_magnitude_thresholds=(1e9,), intervals=(4,), timing_frames=6,
                               log=lines.append)
    curves = result["curves"]
    assert set(curves) == {"rl", "dvsnet", "flow_magnitude", "fixed", "random"}
    for points in curves.values():
        for p in points:
            assert p["aki"] >= 1.0 and 0.0 <= p["miou"] <= 100.0 and p["fps"] > 0 and "threshold" in p
            assert 0.0 <= p["flicker"] <= 1.0
    rl = {p["threshold"]: p for p in curves["rl"]}
    assert rl[-1.0]["aki"] == 1.0 and rl[2.0]["aki"] == 11.0   # every frame a key / only forced keys
    assert rl[-1.0]["kar_limit"] == 0.14 and rl[-1.0]["fps"] < rl[2.0]["fps"]
    assert curves["fixed"][0]["aki"] == pytest.approx(22 / 6)   # keys 0, 4, 8 of 12 + 0, 4, 8 of 10
    on_disk = json.loads((tmp_path / "sweeps" / "points.json").read_text())
    fixed = on_disk["records"]["fixed"][0]
    assert fixed["keys"] == [[0, 4, 8], [0, 4, 8]] and len(fixed["frame_miou"]) == 12
    samples = np.load(tmp_path / "sweeps" / "fig8_samples.npz")
    assert samples["images"].shape[1:] == (CROP, CROP, 3) and samples["mask_rl"].shape[1:] == (CROP, CROP)
    assert not samples["is_key_rl"].any()
    assert set(result["stage_ms"]["policy"]) == set(curves) and result["stage_ms"]["key"] > 0
