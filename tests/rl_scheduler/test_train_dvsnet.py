"""DVSNet's decision network: it fits a known confidence target, the saved network outputs percent,
the stage reports its fit (MAE, the constant predictor's MAE, Pearson, Spearman)."""
import json
import os

import numpy as np
import pytest

from rl_scheduler import config, load_dvsnet
from rl_scheduler.dvsnet_decision import build_decision_network, fold_standardisation
from rl_scheduler.schedulers import make_scheduler
from rl_scheduler.dvsnet_training import train_decision_network
from rl_scheduler.train_dvsnet import pearson, regression_metrics, sample_pairs, spearman
from tests.tensorboard_events import tensorboard_tags

METRICS = ("best_val_mae", "val_mae", "val_mae_constant", "val_pearson", "val_spearman")


def _face_like_pairs(n, seed=0):
    """conv6_1-like features (non-negative, channel scales 0.01-100) and an agreement target in percent
    that sits near 100 and falls with a 'motion' direction hidden in the features, as on face crops."""
    rng = np.random.default_rng(seed)
    motion = rng.gamma(1.0, 1.0, size=n)                          # the pair's key distance, in effect
    direction = rng.normal(size=(2, 2, 16))
    scales = np.logspace(-2, 2, 16)                               # unnormalised channels
    x = np.abs(rng.normal(size=(n, 2, 2, 16)) * 0.3 + motion[:, None, None, None] * direction) * scales
    y = 100.0 - 12.0 * (1.0 - np.exp(-0.7 * motion))              # mean ~95, a few points of spread
    return x.astype(np.float32), y.astype(np.float32)



def test_decision_network_fits_a_known_confidence_function(tmp_path):
    x, y = _face_like_pairs(450)
    root = str(tmp_path / "dvsnet")
    result = train_decision_network(root, (x[:360], y[:360]), (x[360:], y[360:]), epochs=12, verbose=0)
    assert set(METRICS) <= set(result)
    assert result["val_mae_constant"] == pytest.approx(np.mean(np.abs(np.mean(y[:360]) - y[360:])), rel=1e-4)
    assert result["val_mae"] < 0.5 * result["val_mae_constant"]
    assert result["val_pearson"] > 0.8 and result["val_spearman"] > 0.8
    # config.json, history.json and TensorBoard carry the same metrics
    stage = json.load(open(os.path.join(root, "config.json")))
    assert stage["metrics"]["val_mae"] == pytest.approx(result["val_mae"])
    assert stage["training"]["normalize_targets"] is config.DVSNET_NORMALIZE_TARGETS
    history = json.load(open(os.path.join(root, "history.json")))
    assert len(history) == 12 and min(h["val_mae"] for h in history) == pytest.approx(result["val_mae"], rel=1e-3)
    assert {"loss", "val_mae", "val_mae_constant", "val_pearson", "val_spearman"} <= tensorboard_tags(root)


@pytest.mark.parametrize("normalize_inputs", [False, True])
def test_saved_network_outputs_percent_through_load_and_scheduler(tmp_path, normalize_inputs):
    x, y = _face_like_pairs(300, seed=1)
    root = str(tmp_path / "dvsnet")
    result = train_decision_network(root, (x[:240], y[:240]), (x[240:], y[240:]), epochs=3, verbose=0,
                                    normalize_inputs=normalize_inputs)
    net = load_dvsnet(root)
    predicted = np.asarray(net(x[240:], training=False))[:, 0]
    assert 50.0 < np.mean(predicted) < 110.0                       # percent, not standardised units
    assert np.mean(np.abs(predicted - y[240:])) == pytest.approx(result["val_mae"], rel=1e-4, abs=1e-4)
    scheduler = make_scheduler("dvsnet", network=net, threshold=float(np.median(predicted)))
    obs = dict(conv6_1=x[240:241], conv6=None, flow_magnitude=0.0, frame_index=1)
    scheduler.decide(dict(obs, frame_index=0))
    scheduler.record(True)
    is_key, score = scheduler.decide(obs)
    assert score == pytest.approx(float(predicted[0]), abs=1e-3)
    assert is_key == (predicted[0] < np.median(predicted))


def test_dvsnet_released_settings_stay_reachable(tmp_path):
    x, y = _face_like_pairs(200, seed=2)
    root = str(tmp_path / "paper")
    result = train_decision_network(root, (x[:160], y[:160]), (x[160:], y[160:]), epochs=2, verbose=0,
                                    normalize_targets=False, normalize_inputs=False,
                                    dropout_rate=config.DVSNET_DROPOUT_RATE)
    stage = json.load(open(os.path.join(root, "config.json")))
    assert stage["training"]["target_standardisation"] == [0.0, 1.0]
    assert stage["training"]["dropout_rate"] == 0.5
    net = load_dvsnet(root)
    predicted = np.asarray(net(x[160:], training=False))[:, 0]
    assert np.mean(np.abs(predicted - y[160:])) == pytest.approx(result["val_mae"], rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("deviation_size", [None, (4, 8)])
def test_fold_standardisation_is_exact(deviation_size):
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(8, 3, 3, 6))).astype(np.float32) * np.float32(50.0)
    scale = rng.uniform(0.5, 80.0, size=6).astype(np.float32)
    trained = build_decision_network((3, 3, 6), deviation_size, dropout_rate=0.0, score_activation=False)
    folded = fold_standardisation(trained, build_decision_network((3, 3, 6), deviation_size), scale, 95.0, 3.0)
    z = np.asarray(trained(x / scale, training=False))[:, 0]
    expected = 95.0 + 3.0 * z
    expected = np.where(expected < 0, 0.1 * expected, expected)
    np.testing.assert_allclose(np.asarray(folded(x, training=False))[:, 0], expected, rtol=1e-4, atol=1e-3)


def test_metrics_constant_predictor_and_correlations():
    target = np.array([90.0, 95.0, 97.0, 99.0, 100.0])
    m = regression_metrics(target + 1.0, target, 96.0, gaps=np.array([1, 2, 10, 30, 100]))
    assert m["val_mae"] == pytest.approx(1.0) and m["val_mae_constant"] == pytest.approx(3.0)
    assert m["val_pearson"] == pytest.approx(1.0) and m["val_spearman"] == pytest.approx(1.0)
    assert m["val_by_gap"]["0-5"]["pairs"] == 2 and m["val_by_gap"]["61+"]["pairs"] == 1
    assert pearson([1.0, 1.0], [1.0, 2.0]) is None                  # a constant prediction: undefined
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(0.9486833, rel=1e-6)   # ties averaged


def test_log_uniform_gaps_cover_long_distances_and_favour_short_ones():
    rng = np.random.default_rng(0)
    pairs = sample_pairs(200, 120, 2000, rng, gap_sampling="log_uniform")
    gaps = np.array([i - k for k, i in pairs])
    assert len(set(pairs)) == 2000 and gaps.min() >= 1 and gaps.max() <= 120
    assert (gaps >= 60).sum() > 50 and (gaps <= 5).sum() > (gaps >= 60).sum()
    assert {(k, i) for k, i in pairs} & set(sample_pairs(200, 120, 500, rng, exclude=pairs)) == set()
    dvsnet = sample_pairs(20, 3, None, rng, gap_sampling="pairs")
    assert min(i - k for k, i in dvsnet) == 0                          # DVSNet's list includes gap 0


def test_stage_reads_pair_tables_and_shares_a_video_between_train_and_val(tmp_path, monkeypatch):
    from rl_scheduler import train_dvsnet
    from tests.rl_scheduler.test_train import _stage_dirs

    prepared, seg, flow = _stage_dirs(tmp_path)     # 8-frame videos 001 and 002, S = 65
    # an RL stage's pair table for 001 (rl_scheduler.cache.VideoCache.save_table's format): agreement 0
    pairs = np.asarray([(k, i) for i in range(8) for k in range(max(0, i - 6), i)], np.int64)
    zeros = np.zeros(len(pairs))
    tables = tmp_path / "tables"
    tables.mkdir()
    np.savez(tables / "001.npz", key_index=np.arange(8), key_miou=np.zeros(8), pair_index=pairs,
             pair_miou=zeros, pair_flow_magnitude=zeros, pair_agreement=zeros, pair_pseudo_miou=zeros,
             pair_conv6_1=np.ones((len(pairs), 1, 1, 384), np.float32))
    before = os.path.getmtime(tables / "001.npz")
    made, real = [], train_dvsnet.load_video_caches

    def recording(*args, **kwargs):
        caches = real(*args, **kwargs)
        made.extend(caches)
        return caches

    monkeypatch.setattr(train_dvsnet, "load_video_caches", recording)
    logs = []
    result = train_dvsnet.train_eval(str(tmp_path / "dvs"), prepared, seg, flow, ["001", "002"], ["002"],
                                     max_gap=6, epochs=2, pairs_per_video=10, val_pairs_per_video=4,
                                     cache_batch_size=4, pair_table_dir=str(tables), log=logs.append,
                                     verbose=0)
    assert len(made) == 2                                    # 002 trains and validates from one cache
    assert made[0].pair_computations == 0 and made[1].pair_computations > 0   # 001 came from the table
    assert os.path.getmtime(tables / "001.npz") == before    # read, never written
    assert any("pair table 001" in line for line in logs)
    assert any("also train" in line for line in logs)        # the optimistic validation is said
    assert result["train_pairs"] == 20 and result["val_pairs"] == 4 and result["target_mean"] <= 50.0
    assert set(METRICS) <= set(result) and result["val_by_gap"]["0-5"] is not None


class _CountingDFF:
    """A stand-in DeepFeatureFlow (numpy, 4x4 frames) for counting N passes."""

    def key(self, frames):
        b = len(frames)
        probs = np.zeros((b, 4, 4, 5), np.float32)
        probs[..., 0] = frames[..., 0] / 255.0
        return dict(features=frames[..., :1] * 0.5, probs=probs)

    def propagate(self, key_frames, key_features, frames):
        b = len(frames)
        probs = np.zeros((b, 4, 4, 5), np.float32)
        probs[..., 0] = (key_features[..., 0] + frames[..., 0]) / 255.0
        return dict(probs=probs, conv6=None, conv6_1=np.ones((b, 1, 1, 3), np.float32),
                    flow=np.zeros((b, 2, 2, 2), np.float32))


def test_key_blocks_run_n_once_per_frame():
    from rl_scheduler.cache import VideoCache
    from rl_scheduler.train_dvsnet import prefetch_in_key_blocks

    images = np.random.default_rng(0).integers(0, 255, (60, 4, 4, 3)).astype(np.uint8)
    pairs = sample_pairs(60, 40, 50, np.random.default_rng(0), gap_sampling="log_uniform")
    frames = {f for pair in pairs for f in pair}
    counts = []
    for prefetch in (lambda c: c.prefetch_pairs(pairs), lambda c: prefetch_in_key_blocks(c, pairs)):
        cache = VideoCache(_CountingDFF(), images, None, batch_size=2, feature_capacity=8, keep_masks=False,
                           keep_taps=("conv6_1",))
        prefetch(cache)
        assert cache.pair_computations == len(pairs) and all(cache.has_pair(k, i) for k, i in pairs)
        counts.append(cache.key_computations)
    assert counts[1] == len(frames) < counts[0]      # one call re-runs N on evicted key frames


def test_interrupted_training_resumes_from_its_checkpoint(tmp_path):
    x, y = _face_like_pairs(200, seed=3)
    data = dict(train_data=(x[:160], y[:160]), val_data=(x[160:], y[160:]))
    root = str(tmp_path / "dvsnet")
    train_decision_network(root, epochs=3, checkpoint_every=2, verbose=0, **data)
    first = json.load(open(os.path.join(root, "history.json")))
    resumed = train_decision_network(root, epochs=5, checkpoint_every=2, verbose=0, **data)
    history = json.load(open(os.path.join(root, "history.json")))
    assert len(history) == 5 and history[:3] == first              # epochs 1-3 were not redone
    assert resumed["best_epoch"] == int(np.argmin([h["val_mae"] for h in history]) + 1)
    net = load_dvsnet(root)
    predicted = np.asarray(net(x[160:], training=False))[:, 0]
    assert np.mean(np.abs(predicted - y[160:])) == pytest.approx(min(h["val_mae"] for h in history), rel=1e-3)
