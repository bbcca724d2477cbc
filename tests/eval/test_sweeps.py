"""eval.sweeps: the decision loop over VideoCache entries, FPS formation, matched AKI, run_sweeps."""
import json
import os

import numpy as np
import pytest

from eval import sweeps
from eval.calibrate import in_band
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


def test_dense_keys_compute_about_one_interval_ahead(tiny_dff, video):
    """A key every 2nd frame needs 6 pairs over 13 frames; prefetching a whole batch (4) at each miss
    would compute 24, one key interval ahead computes at most 2 per key."""
    from rl_scheduler.cache import VideoCache
    from rl_scheduler.schedulers import make_scheduler

    images, labels = video
    cache = VideoCache(tiny_dff, images, labels, num_classes=NUM_CLASSES, batch_size=4)
    run = sweeps.run_decisions(cache, make_scheduler("fixed", threshold=2), NUM_CLASSES)
    assert np.flatnonzero(run["keys"]).tolist() == list(range(0, 13, 2))
    assert {(i - 1, i) for i in range(1, 13, 2)} <= set(cache._pairs)
    assert 6 <= cache.pair_computations <= 12


def test_model_time_fps_formula():
    stage_ms = {"flow": 5.0, "key": 40.0, "warp_task": 3.0, "policy": {"rl": 1.0, "fixed": 0.1}}
    keys = [np.array([1, 0, 0, 1, 0], bool)]
    # rl: 2 keys * 40 + 3 non-keys * 3 + 4 decisions * (5 flow + 1 policy) = 113 ms for 5 frames
    assert sweeps.model_time_fps(keys, "rl", stage_ms) == pytest.approx(5000 / 113)
    # fixed: the flow runs on the 3 non-key frames only; 2*40 + 3*3 + 3*5 + 4*0.1 = 104.4 ms
    assert sweeps.model_time_fps(keys, "fixed", stage_ms) == pytest.approx(5000 / 104.4)


def test_matched_aki_reads_calibrated_points_only_and_never_interpolates():
    curve = [{"aki": 10.5, "miou": 70.0, "target_aki": 10.0, "calibrated": True},
             {"aki": 40.0, "miou": 60.0, "target_aki": 25.0, "calibrated": False},   # a miss: not at 25
             {"aki": 1.45, "miou": 80.0, "target_aki": 2.0, "calibrated": False}]
    assert sweeps.point_at_target(curve, 10.0)["miou"] == 70.0
    assert sweeps.point_at_target(curve, 25.0) is None and sweeps.point_at_target(curve, 2.0) is None
    assert sweeps.point_at_target(curve, 20.0) is None      # no chord between 10.5 and 40
    # a hand-written curve without flags: a point counts at a target within +-10 % of its AKI
    legacy = [{"aki": 9.5, "miou": 1.0}, {"aki": 10.8, "miou": 2.0}]
    assert sweeps.point_at_target(legacy, 10.0)["miou"] == 1.0     # the nearer AKI (log)
    table = sweeps.matched_aki_table({"a": curve, "b": legacy}, [10.0, 25.0])
    assert table == {10.0: {"a": 70.0, "b": 1.0}, 25.0: {"a": None, "b": None}}
    assert sweeps.unreached({"a": curve, "b": legacy}, [2.0, 10.0, 25.0]) == {"a": [2.0, 25.0], "b": [2.0, 25.0]}


def test_targets_keep_eight_keys_per_video():
    kept, dropped = sweeps.select_targets((2, 5, 10, 25, 50, 100, 150, 200), [200, 240, 1600])
    assert kept == [2.0, 5.0, 10.0, 25.0] and dropped == [50.0, 100.0, 150.0, 200.0]
    assert sweeps.select_targets((2, 5), [24])[0] == [2.0]     # the smoke preset's 24-frame videos


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


def test_run_sweeps_end_to_end(tmp_path, tiny_checkpoints, tiny_dff, monkeypatch):  # noqa: F811
    from flownet2s import dff as dff_module

    prepared = str(tmp_path / "prepared")
    _write_prepared(prepared, {"001": moving_frames(12, seed=1), "002": moving_frames(10, seed=2)})
    ck = lambda name: os.path.join(tiny_checkpoints, name)  # noqa: E731
    # run_sweeps loads these stages at full flow resolution: the worker's shared tiny_dff is that DFF (N and F
    # are frozen, the streaming state lives in the runtime), so it is not built and traced a second time.
    real_load, shared = dff_module.load_dff, []

    def load_dff(segmenter_dir, flownet_dir, **options):
        if (segmenter_dir, flownet_dir, options) == (ck("segmenter"), ck("flownet"), {"flow_resolution": "full"}):
            shared.append(True)
            return tiny_dff
        return real_load(segmenter_dir, flownet_dir, **options)
    assert tiny_dff.flow_resolution == "full"
    monkeypatch.setattr(dff_module, "load_dff", load_dff)
    lines = []
    result = sweeps.run_sweeps(str(tmp_path / "sweeps"), prepared, ck("segmenter"), ck("flownet"),
                               {0.14: ck("rl_eta0.14")}, ck("dvsnet"), ["001", "002"],
                               target_akis=(2, 4, 50), min_keys_per_video=2, max_calibration_runs=4,
                               rl_thresholds=(0.5,), dvsnet_thresholds=(50.0,), flow_magnitude_thresholds=(1.0,),
                               timing_frames=6, log=lines.append)
    assert result["target_akis"] == [2.0, 4.0] and result["dropped_target_akis"] == [50.0]
    curves = result["curves"]
    assert set(curves) == {"rl", "dvsnet", "flow_magnitude", "fixed", "random", "oracle", "causal_oracle"}
    for name, points in curves.items():
        assert points, name
        for p in points:
            assert p["aki"] >= 1.0 and 0.0 <= p["miou"] <= 100.0 and "threshold" in p
            assert p["target_aki"] in (2.0, 4.0) and isinstance(p["calibrated"], bool)
            assert p["calibrated"] == in_band(p["aki"], p["target_aki"], 0.1)
            if name not in ("oracle", "causal_oracle"):
                assert p["fps"] > 0 and 0.0 <= p["flicker"] <= 1.0
    assert all(p["fps"] is None for p in curves["oracle"] + curves["causal_oracle"])   # they read labels
    assert all(p["kar_limit"] == 0.14 for p in curves["rl"]) and list(result["rl_policies"]) == ["0.14"]
    # fixed K is chosen from the target: K = 2 and 4 give exactly AKI 2 and 22 / 6
    fixed = {p["target_aki"]: p for p in curves["fixed"]}
    assert fixed[2.0]["threshold"] == 2.0 and fixed[2.0]["aki"] == 2.0 and fixed[2.0]["calibrated"]
    assert fixed[4.0]["aki"] == pytest.approx(22 / 6)            # keys 0, 4, 8 of 12 + 0, 4, 8 of 10
    oracle = {p["target_aki"]: p for p in curves["oracle"]}
    assert oracle[2.0]["keys"] == 11 and oracle[2.0]["aki"] == 2.0
    # the matched-AKI table holds exactly the calibrated points
    for target, row in result["matched_aki"].items():
        for name, miou in row.items():
            calibrated = [p for p in curves[name] if p["calibrated"] and p["target_aki"] == target]
            assert (miou is None) == (not calibrated)
    assert set(result["calibration"]) == {"rl_eta0.14", "dvsnet", "flow_magnitude", "fixed", "random",
                                          "causal_oracle"}
    for name, rows in result["calibration"].items():
        assert [r["target_aki"] for r in rows] == [2.0, 4.0]
        assert all(r["calibrated"] or r["reason"] in ("out_of_range", "jump", "max_runs") for r in rows)
        assert all(r["new_runs"] <= 4 for r in rows)
    assert result["runs"]["fixed"] == 2 and result["runs"]["random"] <= 2   # one run per chosen K
    on_disk = json.loads((tmp_path / "sweeps" / "points.json").read_text())
    fixed_record = [r for r in on_disk["records"]["fixed"] if r["threshold"] == 4.0][0]
    assert fixed_record["keys"] == [[0, 4, 8], [0, 4, 8]] and len(fixed_record["frame_miou"]) == 12
    assert "oracle" not in on_disk["records"] and len(on_disk["oracle_keys"]["2"]) == 2
    assert json.loads((tmp_path / "sweeps" / "sweeps.json").read_text())["target_akis"] == [2.0, 4.0]
    samples = np.load(tmp_path / "sweeps" / "fig8_samples.npz")
    assert samples["images"].shape[1:] == (CROP, CROP, 3) and samples["mask_rl"].shape[1:] == (CROP, CROP)
    assert not samples["is_key_rl"].any()
    assert set(result["stage_ms"]["policy"]) == set(curves) - {"oracle", "causal_oracle"}
    assert result["stage_ms"]["key"] > 0
    assert any("dropped" in line for line in lines) and any("oracle AKI 2" in line for line in lines)
    assert shared == [True]
