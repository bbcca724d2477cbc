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
        assert np.mean(entry.mask == mask) > 0.999          # batch 4 vs batch 1 float noise
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
    env = KeyEnvironment([cache], episode_length=8, trials=4, kar_limit=1.0, window=10)
    assert env.deviation_shape() == (1, 1, 384)
    ep = env.rollout(lambda d, e: np.full(len(e), 0.5, np.float32), sampled_actions(), 0, 1,
                     np.random.default_rng(0))
    for t, j in zip(*np.nonzero(ep.actions)):
        i, k = ep.frames[t], ep.key_frames[t, j]
        assert ep.rewards[t, j] == pytest.approx(cache.key(i).miou - cache.pair(k, i).miou)
    distinct = {(int(ep.key_frames[t, j]), int(ep.frames[t])) for t, j in zip(*np.nonzero(ep.active))}
    assert cache.pair_computations == len(distinct | {(0, 1)})   # (0, 1): deviation_shape()'s probe


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
