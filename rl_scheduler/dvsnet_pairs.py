"""DVSNet's training pairs and fit metrics (rl_scheduler.train_dvsnet's data side): which (key,
current) pairs are drawn, their conv6_1 and confidence target from the shared per-video caches, and
the regression metrics the stage reports.
"""
import collections

import numpy as np

from deeplab_face.errors import ConfigError

VAL_MAX_GAP = 9  # imagesval_10_list: key 0-9 frames before the current frame
GAP_SAMPLINGS = ("pairs", "log_uniform")
GAP_BUCKETS = ((0, 5), (6, 20), (21, 60), (61, None))   # val MAE per key distance (reported)


def sample_pairs(num_frames, max_gap, count, rng, gap_sampling="pairs", exclude=()):
    """(k, i) pairs with 0 <= i - k <= max_gap: all of them, or `count` drawn without replacement.

    gap_sampling "pairs" (DVSNet): every pair equally likely, gap 0 included, so gaps are about
    uniform (T - g pairs have gap g). "log_uniform": gaps 1..max_gap with P(g) proportional to
    log((g + 1) / g) (log g uniform), the frame uniform among those with that gap; gap 0 (the key
    itself, target 100 %) is left out: the scheduler never decides on it. `exclude`: pairs not drawn
    (validation pairs disjoint from the training pairs of a video in both lists).
    """
    if gap_sampling not in GAP_SAMPLINGS:
        raise ConfigError(f"--gap_sampling: {gap_sampling!r} is not one of {', '.join(GAP_SAMPLINGS)}")
    min_gap = 1 if gap_sampling == "log_uniform" else 0
    excluded = set(exclude)
    pairs = [(i - g, i) for i in range(num_frames) for g in range(min_gap, max_gap + 1)
             if i - g >= 0 and (i - g, i) not in excluded]
    if count is None or count >= len(pairs):
        return pairs
    if gap_sampling == "pairs":
        chosen = rng.choice(len(pairs), count, replace=False)
    else:
        gaps = np.asarray([i - k for k, i in pairs], np.float64)
        per_gap = np.bincount(gaps.astype(np.int64))
        weights = np.log1p(1.0 / gaps) / per_gap[gaps.astype(np.int64)]
        chosen = rng.choice(len(pairs), count, replace=False, p=weights / weights.sum())
    return [pairs[j] for j in sorted(chosen)]


def prefetch_in_key_blocks(cache, pairs):
    """`cache.prefetch_pairs(pairs)` in blocks of descending key frames, each touching fewer frames
    than the cache keeps feature maps of, so that N runs once per frame.

    One call with every pair first runs N on every frame, keeping the last `feature_capacity`
    feature maps only, and then runs N again on the evicted key frames (measured at S=129: 395 N
    passes for a 200-frame video, the stage's largest cost). With blocks taken from the latest key
    frame down, a block's key frames are later than no frame met before, so they are new: their
    features are computed in the block and used before they can be evicted.
    """
    capacity = getattr(cache, "feature_capacity", None)
    if capacity is None:
        cache.prefetch_pairs(pairs)
        return
    limit = max(int(capacity) - int(getattr(cache, "batch_size", 1)), 2)
    by_key = collections.defaultdict(list)
    for k, i in pairs:
        by_key[k].append(i)
    block, frames = [], set()
    for k in sorted(by_key, reverse=True):
        new = {k, *by_key[k]}
        if block and len(frames | new) > limit:
            cache.prefetch_pairs(block)
            block, frames = [], set()
        block += [(k, i) for i in by_key[k]]
        frames |= new
    if block:
        cache.prefetch_pairs(block)


def pair_dataset(caches, max_gap, pairs_per_video, rng, deviation_tap="conv6_1", gap_sampling="pairs",
                 exclude=None):
    """(X (n, h, w, c) float32, y (n,) float32 percent, gaps (n,) int32, pairs per cache).

    exclude: {id(cache): pairs} left out of that cache's draw. Computed once, batched."""
    xs, ys, gaps, drawn = [], [], [], []
    for cache in caches:
        pairs = sample_pairs(cache.num_frames, max_gap, pairs_per_video, rng, gap_sampling,
                             (exclude or {}).get(id(cache), ()))
        prefetch_in_key_blocks(cache, pairs)
        for k, i in pairs:
            entry = cache.pair(k, i)
            xs.append(getattr(entry, deviation_tap)[0])
            ys.append(100.0 * entry.agreement)   # DVSNet's target is in percent
            gaps.append(i - k)
        drawn.append(pairs)
    if not xs:
        return np.zeros((0, 1, 1, 1), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int32), drawn
    return np.stack(xs).astype(np.float32), np.asarray(ys, np.float32), np.asarray(gaps, np.int32), drawn


def pearson(a, b):
    """Pearson correlation; None when either side is constant (or fewer than 2 values)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _ranks(values):
    """Ranks with ties averaged (as scipy.stats.rankdata)."""
    values = np.asarray(values, np.float64)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(a, b):
    """Spearman rank correlation (Pearson of the tie-averaged ranks); None when undefined."""
    if len(a) < 2:
        return None
    return pearson(_ranks(a), _ranks(b))


def regression_metrics(predicted, target, constant, gaps=None):
    """MAE, the constant predictor's MAE, Pearson and Spearman of `predicted` against `target`."""
    predicted, target = np.asarray(predicted, np.float64), np.asarray(target, np.float64)
    metrics = dict(val_mae=float(np.mean(np.abs(predicted - target))),
                   val_mae_constant=float(np.mean(np.abs(constant - target))),
                   val_pearson=pearson(predicted, target), val_spearman=spearman(predicted, target))
    if gaps is not None:
        gaps = np.asarray(gaps)
        by_gap = {}
        for low, high in GAP_BUCKETS:
            inside = (gaps >= low) & (gaps <= (np.inf if high is None else high))
            name = f"{low}-{high}" if high is not None else f"{low}+"
            by_gap[name] = (dict(pairs=int(inside.sum()), mae=float(np.mean(np.abs(predicted - target)[inside])),
                                 mean_target=float(np.mean(target[inside])),
                                 mean_predicted=float(np.mean(predicted[inside])))
                            if inside.any() else None)   # empty sets are null (DESIGN.md)
        metrics["val_by_gap"] = by_gap
    return metrics
