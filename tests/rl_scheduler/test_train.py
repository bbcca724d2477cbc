"""The training stages: files, resume, TensorBoard; and the absl stage functions end to end."""
import json
import os

import numpy as np
import pytest

from rl_scheduler import load_dvsnet, load_policy
from rl_scheduler.schedulers import make_scheduler
from rl_scheduler.policy_training import train_policy
from rl_scheduler.dvsnet_training import train_decision_network
from rl_scheduler.dvsnet_pairs import sample_pairs
from tests.rl_scheduler.toy_env import ToyVideoCache
from tests.tensorboard_events import tensorboard_tags

TOY = dict(episode_length=15, trials=4, episodes_per_update=2, window=10, kar_limit=0.5,
           checkpoint_every=1, validate_every=2, validation_episodes=2, verbose=0)


def test_policy_stage_files_resume_and_load(tmp_path):
    caches = [ToyVideoCache(60, seed=s) for s in range(2)]
    root = str(tmp_path / "rl")
    result = train_policy(root, caches, [], episodes=6, **TOY)
    for name in ("config.json", "final.weights.h5", "DONE", "history.json", "best.weights.h5"):
        assert os.path.exists(os.path.join(root, name)), name
    history = json.load(open(os.path.join(root, "history.json")))
    assert len(history) == result["updates"] == 3
    assert {"mean_return", "key_ratio", "entropy", "kar_weight", "lkd_weight"} <= set(history[0])
    assert {"mean_return", "key_ratio", "entropy", "kar_weight", "lkd_weight", "val_return"} <= tensorboard_tags(root)
    # resuming continues from the checkpoint: the first updates are not redone
    train_policy(root, caches, [], episodes=10, **TOY)
    resumed = json.load(open(os.path.join(root, "history.json")))
    assert len(resumed) == 5 and resumed[:3] == history
    # a fresh run with the same seed repeats the resumed one's first updates exactly
    fresh = str(tmp_path / "fresh")
    train_policy(fresh, caches, [], episodes=6, **TOY)
    assert json.load(open(os.path.join(fresh, "history.json")))[0]["mean_return"] == history[0]["mean_return"]
    policy = load_policy(root)
    stage = json.load(open(os.path.join(root, "config.json")))
    assert stage["deviation_shape"] == [2, 2, 4] and stage["training"]["kar_limit"] == 0.5
    # the deployed threshold is the validated operating point, and the key price resumed with the policy
    assert stage["operating_threshold"] in [float(t) for t in __import__("rl_scheduler.config").config.VALIDATION_TAUS]
    assert {"val_quality", "val_tau", "completed", "key_price"} <= set(resumed[-1]) | tensorboard_tags(root)
    assert resumed[3]["key_price"] > 0 and len(resumed[-1]["lkd_histogram"]) == 9
    scheduler = make_scheduler("rl", policy=policy)
    obs = dict(conv6=caches[0].pair(0, 1).conv6, conv6_1=caches[0].pair(0, 1).conv6_1,
               flow_magnitude=0.0, frame_index=1)
    scheduler.decide(dict(obs, frame_index=0))
    scheduler.record(True)
    assert 0.0 <= scheduler.decide(obs)[1] <= 1.0


def test_decision_network_learns_the_confidence_target(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(320, 2, 2, 8)).astype(np.float32)
    y = (80.0 + 10.0 * x[:, 0, 0, 0]).astype(np.float32)          # percent, depends on the features
    root = str(tmp_path / "dvsnet")
    from rl_scheduler.dvsnet_decision import build_decision_network
    untrained = build_decision_network((2, 2, 8))
    untrained_mae = float(np.mean(np.abs(np.asarray(untrained(x[256:]))[:, 0] - y[256:])))
    result = train_decision_network(root, (x[:256], y[:256]), (x[256:], y[256:]), epochs=12, verbose=0)
    assert untrained_mae > 40 and result["best_val_mae"] < 15   # it learns the percent scale
    net = load_dvsnet(root)
    predicted = np.asarray(net(x[256:], training=False))[:, 0]
    assert np.mean(np.abs(predicted - y[256:])) == pytest.approx(result["best_val_mae"], rel=1e-3)
    assert {"loss", "val_mae"} <= tensorboard_tags(root)


def test_sample_pairs_respects_max_gap():
    pairs = sample_pairs(20, 3, None, np.random.default_rng(0))
    assert len(pairs) == 20 * 4 - 6 and all(0 <= i - k <= 3 for k, i in pairs)
    sub = sample_pairs(20, 3, 10, np.random.default_rng(0))
    assert len(sub) == 10 and set(sub) <= set(pairs)


def _stage_dirs(tmp_path, videos=("001", "002"), speeds=None):
    """Prepared data (8-frame videos at S = 65, video n moving `speeds[n]` rows a frame), an (untrained)
    N stage and F stage in the documented formats. Also the pair-table and DVSNet tests' stages."""
    import keras
    from deeplab_face import build_segmenter
    from deeplab_face.data.tfrecords import encode_example, write_examples, write_manifest
    from flownet2s import build_flownet

    keras.utils.set_random_seed(0)
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (90, 90, 3)).astype(np.uint8)
    manifest = {}
    for vid, speed in zip(videos, speeds or [1] * len(videos)):
        examples = []
        for t in range(8):
            image = np.roll(base, (speed * t, 2 * t), axis=(0, 1))[:65, :65]
            label = (image[..., 0] // 52).astype(np.uint8)
            examples.append(encode_example(image, label, vid, t + 1, np.zeros((68, 2))))
        write_examples(prepared / f"{vid}.tfrecord", examples)
        manifest[vid] = {"frames": 8, "file": f"{vid}.tfrecord"}
    write_manifest(prepared, {"size": 65, "videos": manifest})
    seg_dir, flow_dir = tmp_path / "seg", tmp_path / "flow"
    seg_dir.mkdir()
    flow_dir.mkdir()
    build_segmenter("mobilenet_v2", 5, 65).save_weights(str(seg_dir / "final.weights.h5"))
    seg_config = dict(backbone="mobilenet_v2", num_classes=5, crop_size=65)
    (seg_dir / "config.json").write_text(json.dumps(seg_config))
    build_flownet(input_size=64).save_weights(str(flow_dir / "final.weights.h5"))
    (flow_dir / "config.json").write_text(json.dumps(dict(input_size=64)))
    return str(prepared), str(seg_dir), str(flow_dir)


def test_stage_functions_end_to_end(tmp_path, monkeypatch):
    from flownet2s.dff import load_dff
    from rl_scheduler import train, train_dvsnet
    prepared, seg, flow = _stage_dirs(tmp_path)
    # The two stages load the same frozen N and F: the DVSNet stage gets the RL stage's DeepFeatureFlow
    # (built, and its calls traced, once) instead of a rebuilt one; the loading itself runs once for real.
    loaded = {}

    def load_once(segmenter_dir, flownet_dir, **options):
        key = (segmenter_dir, flownet_dir, tuple(sorted(options.items())))
        if key not in loaded:
            loaded[key] = load_dff(segmenter_dir, flownet_dir, **options)
        return loaded[key]
    monkeypatch.setattr(train, "load_dff", load_once)
    monkeypatch.setattr(train_dvsnet, "load_dff", load_once)
    result = train.train_eval(str(tmp_path / "rl"), prepared, seg, flow, ["001"], ["002"], episodes=2,
                              episode_length=6, trials=4, episodes_per_update=2, validate_every=1,
                              cache_batch_size=4,
                              validation_episodes=1, window=10, verbose=0)
    assert os.path.exists(tmp_path / "rl" / "DONE") and result["updates"] == 1
    assert json.load(open(tmp_path / "rl" / "config.json"))["training"]["train_videos"] == ["001"]
    out = train_dvsnet.train_eval(str(tmp_path / "dvs"), prepared, seg, flow, ["001"], ["002"], max_gap=3,
                                  epochs=2, pairs_per_video=8, val_pairs_per_video=4, cache_batch_size=4,
                                  verbose=0)
    assert os.path.exists(tmp_path / "dvs" / "DONE")
    assert out["train_pairs"] == 8 and out["val_pairs"] == 4 and 0.0 <= out["target_mean"] <= 100.0
    assert load_dvsnet(str(tmp_path / "dvs")).input_shape[1:] == (1, 1, 384)
    assert list(loaded) == [(seg, flow, (("flow_resolution", "full"),))]     # one N and F for both stages


def test_interrupted_run_keeps_its_curve_and_resume_appends(tmp_path, monkeypatch):
    from rl_scheduler import policy_training
    caches = [ToyVideoCache(60, seed=s) for s in range(2)]
    root = str(tmp_path / "rl")
    options = dict(TOY, checkpoint_every=2, validate_every=100)
    real_update, calls = policy_training.Reinforce.update, []

    def failing_update(self, episodes):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt   # killed during the 4th update
        return real_update(self, episodes)

    monkeypatch.setattr(policy_training.Reinforce, "update", failing_update)
    with pytest.raises(KeyboardInterrupt):
        train_policy(root, caches, [], episodes=10, **options)
    history = json.load(open(os.path.join(root, "history.json")))
    assert [row["update"] for row in history] == [1, 2, 3]          # written every update
    assert {"mean_return", "key_ratio", "entropy", "kar_weight", "lkd_weight"} <= tensorboard_tags(root)
    monkeypatch.setattr(policy_training.Reinforce, "update", real_update)
    train_policy(root, caches, [], episodes=10, **options)        # resumes from update 2's checkpoint
    resumed = json.load(open(os.path.join(root, "history.json")))
    assert [row["update"] for row in resumed] == [1, 2, 3, 4, 5] and resumed[:2] == history[:2]
