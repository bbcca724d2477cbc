"""The shared cache returns what a recompute with the real DeepFeatureFlow returns (tiny models)."""
import numpy as np
import pytest

from rl_scheduler import rewards
from rl_scheduler.cache import VideoCache
from rl_scheduler.environment import KeyEnvironment, sampled_actions


@pytest.fixture(scope="module")
def dff():
    import keras
    from deeplab_face import build_segmenter
    from flownet2s import build_flownet
    from flownet2s.dff import DeepFeatureFlow

    keras.utils.set_random_seed(0)
    segmenter = build_segmenter("mobilenet_v2", 5, 65)
    # an untrained N predicts one class everywhere; spread its logits so masks vary per pixel
    task_layers = [layer for layer in segmenter.task_net.layers if layer.weights]
    kernel = task_layers[-1].weights[0]
    kernel.assign(np.random.default_rng(0).normal(0, 3.0, kernel.shape).astype(np.float32))
    return DeepFeatureFlow(segmenter, build_flownet(input_size=64))


@pytest.fixture(scope="module")
def video():
    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (80, 80, 3)).astype(np.uint8)
    images = np.stack([np.roll(base, (t, 2 * t), axis=(0, 1))[:65, :65] for t in range(10)])
    labels = rng.integers(0, 5, (10, 65, 65)).astype(np.uint8)
    labels[:, :4] = 255
    return images, labels


def test_cache_equals_recompute(dff, video):
    images, labels = video
    cache = VideoCache(dff, images, labels, num_classes=5, batch_size=4, feature_capacity=4)
    pairs = [(0, 3), (2, 5), (5, 5), (1, 7), (6, 9)]
    cache.prefetch_pairs(pairs)
    assert cache.pair_computations == len(pairs)
    frames = images.astype(np.float32)
    for k, i in pairs:
        key_i = dff.key(frames[i:i + 1])
        key_mask = np.argmax(np.asarray(key_i["probs"])[0], -1)
        np.testing.assert_array_equal(cache.key(i).mask, key_mask)
        key_k = dff.key(frames[k:k + 1])
        prop = dff.propagate(frames[k:k + 1], key_k["features"], frames[i:i + 1])
        mask = key_mask if k == i else np.argmax(np.asarray(prop["probs"])[0], -1)
        entry = cache.pair(k, i)
        assert np.mean(entry.mask == mask) > 0.995          # batch 4 vs batch 1 float noise (argmax ties)
        np.testing.assert_allclose(entry.conv6, np.asarray(prop["conv6"]), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(entry.conv6_1, np.asarray(prop["conv6_1"]), rtol=1e-4, atol=1e-4)
        flow = np.asarray(prop["flow"])[0]
        assert entry.flow_magnitude == pytest.approx(np.mean(np.hypot(flow[..., 0], flow[..., 1])), rel=1e-3)
        confusion = rewards.confusion_matrix(entry.mask, labels[i], 5)
        np.testing.assert_array_equal(entry.confusion, confusion)
        assert entry.miou == pytest.approx(rewards.mean_iou(confusion))
        assert entry.agreement == pytest.approx(np.mean(entry.mask == cache.key(i).mask))
    assert len(np.unique(cache.key(3).mask)) > 1                 # the comparison is not trivial
    assert cache.pair(5, 5).agreement == 1.0 and cache.pair(5, 5).miou == cache.key(5).miou
    before = (cache.key_computations, cache.pair_computations)
    cache.prefetch_pairs(pairs)
    cache.pair(0, 3)
    assert (cache.key_computations, cache.pair_computations) == before   # each computed once


def test_environment_on_the_real_cache(dff, video):
    images, labels = video
    cache = VideoCache(dff, images, labels, num_classes=5, batch_size=4)
    env = KeyEnvironment([cache], episode_length=8, trials=4, kar_limit=1.0, window=10, lookahead=0, reward_credit="frame")
    assert env.deviation_shape() == (1, 1, 384)
    half = lambda d, e: np.full(len(e), 0.5, np.float32)  # noqa: E731
    ep = env.rollout(half, sampled_actions(), 0, 1, np.random.default_rng(0))
    for t, j in zip(*np.nonzero(ep.actions)):
        i, k = ep.frames[t], ep.key_frames[t, j]
        assert ep.rewards[t, j] == pytest.approx(cache.key(i).miou - cache.pair(k, i).miou)
    distinct = {(int(ep.key_frames[t, j]), int(ep.frames[t])) for t, j in zip(*np.nonzero(ep.active))}
    assert cache.pair_computations == len(distinct | {(0, 1)})   # (0, 1): deviation_shape()'s probe
    # filling short batches with look-ahead pairs: same episode, every needed pair, none twice
    ahead_cache = VideoCache(dff, images, labels, num_classes=5, batch_size=4)
    ahead = KeyEnvironment([ahead_cache], episode_length=8, trials=4, kar_limit=1.0, window=10, reward_credit="frame")
    ep2 = ahead.rollout(half, sampled_actions(), 0, 1, np.random.default_rng(0))
    np.testing.assert_array_equal(ep2.actions, ep.actions)
    np.testing.assert_allclose(ep2.rewards, ep.rewards, atol=2e-3)   # batch-composition float noise
    assert distinct <= set(ahead_cache._pairs)
    assert ahead_cache.pair_computations == len(ahead_cache._pairs) >= len(distinct)


def test_bounded_cache_recomputes_evicted_pairs(dff, video):
    images, labels = video
    cache = VideoCache(dff, images, labels, num_classes=5, batch_size=1, pair_capacity=4,
                       keep_taps=("conv6_1",))
    pairs = [(0, i) for i in range(1, 7)]
    cache.prefetch_pairs(pairs)
    assert cache.pair_computations == 6 and cache.pair(0, 6).conv6 is None
    first = cache.pair(0, 1)                                       # evicted: computed again
    assert cache.pair_computations == 7
    np.testing.assert_allclose(first.conv6_1, cache.pair(0, 1).conv6_1)
    assert cache.pair_computations == 7


def _write_prepared(prepared_dir, video_id, images, labels):
    from deeplab_face.data.tfrecords import encode_example, write_examples, write_manifest

    examples = [encode_example(im, lb, video_id, t + 1, np.zeros((68, 2), np.float32))
                for t, (im, lb) in enumerate(zip(images, labels))]
    write_examples(prepared_dir / f"{video_id}.tfrecord", examples)
    entry = {"frames": len(images), "file": f"{video_id}.tfrecord"}
    write_manifest(prepared_dir, {"size": images.shape[1], "videos": {video_id: entry}})


def test_lazy_frames_match_the_eager_path_with_bounded_memory(dff, video, tmp_path):
    from deeplab_face.data.pipelines import load_video
    from rl_scheduler.cache import load_video_caches
    from rl_scheduler.frames import LazyVideoFrames

    images, labels = video
    _write_prepared(tmp_path, "v1", images, labels)
    eager_images, eager_labels = load_video(tmp_path, "v1")
    np.testing.assert_array_equal(eager_images, images)             # PNG round trip is lossless
    lazy = LazyVideoFrames(tmp_path, "v1", block_frames=3, max_frames_in_memory=4)
    assert len(lazy.images) == 10 and lazy.resident_frames == 0     # nothing read yet
    assert lazy.images.shape == images.shape
    order = np.array([9, 0, 4, 8, 1, 5, 5, 2])
    np.testing.assert_array_equal(lazy.images[order], images[order])
    np.testing.assert_array_equal(lazy.labels[7], labels[7])
    np.testing.assert_array_equal(lazy.images[2:6], images[2:6])
    assert lazy.peak_resident_frames <= 4 and lazy.resident_frames <= 4 and lazy.reads > 4  # evicted, re-read
    # the same cache entries, computed from lazily read frames; the environment sees no difference
    eager = VideoCache(dff, images, labels, num_classes=5, batch_size=4)
    (lazy_cache,) = load_video_caches(dff, tmp_path, ["v1"], num_classes=5, batch_size=4,
                                      max_frames_in_memory=4, block_frames=2)
    pairs = [(0, 3), (2, 5), (1, 7), (6, 9)]
    for cache in (eager, lazy_cache):
        cache.prefetch_pairs(pairs)
    for k, i in pairs:
        a, b = eager.pair(k, i), lazy_cache.pair(k, i)
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_array_equal(a.confusion, b.confusion)
        np.testing.assert_allclose(a.conv6, b.conv6, rtol=1e-6, atol=1e-6)
        assert (a.miou, a.agreement) == (b.miou, b.agreement)
        np.testing.assert_array_equal(eager.key(i).mask, lazy_cache.key(i).mask)
    episodes = [KeyEnvironment([c], episode_length=8, trials=4, kar_limit=1.0, window=10, reward_credit="frame").rollout(
        lambda d, e: np.full(len(e), 0.3, np.float32), sampled_actions(), 0, 2, np.random.default_rng(3))
        for c in (eager, lazy_cache)]
    np.testing.assert_array_equal(episodes[0].rewards, episodes[1].rewards)
    frames = lazy_cache.images.source
    assert frames.max_frames_in_memory == 4 and frames.peak_resident_frames <= 4


def test_bounded_key_masks_give_the_same_agreement(dff, video):
    images, labels = video
    full = VideoCache(dff, images, labels, num_classes=5, batch_size=2)
    bounded = VideoCache(dff, images, labels, num_classes=5, batch_size=2, keep_masks=False,
                         key_mask_capacity=2)
    bounded.prefetch_keys(range(10))                     # every mask once; most are evicted
    assert len(bounded._key_masks) == 2
    pairs = [(0, 2), (1, 4), (3, 8), (2, 9)]
    for cache in (full, bounded):
        cache.prefetch_pairs(pairs)
    for k, i in pairs:
        assert bounded.pair(k, i).agreement == pytest.approx(full.pair(k, i).agreement, abs=2e-3)
        assert bounded.pair(k, i).mask is None
    assert len(bounded._key_masks) <= 2 and bounded.key_computations > 10   # evicted masks recomputed


def test_pair_table_prefetch_save_and_load(dff, video, tmp_path):
    images, labels = video
    cache = VideoCache(dff, images, labels, num_classes=5, batch_size=4, keep_masks=False, keep_taps=("conv6_1",))
    count = cache.prefetch_gaps(3)
    expected = {(k, i) for k in range(10) for i in range(k + 1, min(k + 3, 9) + 1)}
    assert count == len(expected) and all(cache.has_pair(k, i) for k, i in expected)
    assert not cache.has_pair(0, 4)
    path = str(tmp_path / "table.npz")
    cache.save_table(path)
    loaded = VideoCache(dff, images, labels, num_classes=5, batch_size=4, keep_masks=False, keep_taps=("conv6_1",))
    assert loaded.load_table(path) == len(expected)
    assert loaded.pair_computations == 0 and loaded.key_computations == 0
    for k, i in sorted(expected)[::3]:
        a, b = cache.pair(k, i), loaded.pair(k, i)
        assert a.miou == b.miou and a.flow_magnitude == b.flow_magnitude and a.agreement == b.agreement
        np.testing.assert_array_equal(a.conv6_1, b.conv6_1)
        np.testing.assert_array_equal(a.confusion, b.confusion)
        assert cache.key(i).miou == loaded.key(i).miou
    assert loaded.pair_computations == 0
    loaded.pair(0, 6)                                          # beyond the table: computed on demand
    assert loaded.pair_computations == 1


def test_pair_table_bad_file_is_one_clear_error(dff, video, tmp_path):
    from deeplab_face.errors import DataError
    images, labels = video
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a table")
    cache = VideoCache(dff, images, labels, num_classes=5)
    with pytest.raises(DataError, match="bad.npz"):
        cache.load_table(str(bad))


def test_bounded_key_masks_keep_the_ones_a_batch_needs(dff, video):
    """A batch needing one held (oldest) mask and one evicted mask: bringing the evicted one back
    must not evict the held one (it raised KeyError before)."""
    images, labels = video
    bounded = VideoCache(dff, images, labels, num_classes=5, batch_size=2, keep_masks=False,
                         key_mask_capacity=2)
    bounded.prefetch_keys(range(10))                     # masks of 8 and 9 held, 8 the oldest
    assert list(bounded._key_masks) == [8, 9]
    bounded.prefetch_pairs([(0, 8), (1, 3)])             # one batch: frames 8 (held) and 3 (evicted)
    assert set(bounded._key_masks) == {8, 3}
    assert bounded.has_pair(0, 8) and bounded.has_pair(1, 3)
