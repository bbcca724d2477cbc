"""Scheduler sweeps on the test videos: AKI-mIoU and FPS-mIoU curves (§4.3; paper.md §10-§11).

Each scheduler's knob is varied: `rl` = one policy per KAR limit x thresholds tau on P(key);
`dvsnet` = the confidence target (percent, key when the predicted score is below it);
`flow_magnitude` = the mean-|flow| threshold (feature-grid pixels); `fixed` and `random` = the
interval K (random: key with probability 1/K per frame).

Decisions run over `rl_scheduler.cache.VideoCache` entries, exactly as `eval.runtime` decides: frame
0 is a forced key; at frame i > 0 the observation is the (last key k, i) pair's conv6, conv6_1 and
flow magnitude; a key uses N's own result on i, a non-key the result propagated from k. So the
masks equal the runtime's, while each (k, i) pair is computed once across all sweep points.

mIoU: one confusion matrix per sweep point over all frames of all test videos, in percent.
AKI: all frames / all keys (eval.metrics.aki).
FPS (model time): measured by `eval.runtime.DynamicSegmenter` on the same videos (`measure_stage_ms`:
the median milliseconds of each stage over `timing_frames` frames of the first test video, after a
warm-up), then for a sweep point over all its frames
    FPS = 1000 * frames / (keys * t_key + non_keys * t_warp_task + flows * t_flow + decisions * t_policy)
where decisions = frames - videos (frame 0 of each video is forced), flows = decisions for the
schedulers that read the flow net and non_keys for fixed / random (eval.runtime.OBSERVATION_FREE),
and t_policy is the scheduler's own decision time.
"""
import json
import math
import os
import platform

import numpy as np

from eval import metrics
from eval.runtime import DynamicSegmenter, needs_observation

SCHEDULER_ORDER = ("rl", "dvsnet", "flow_magnitude", "fixed", "random")
MASK_BUDGET_BYTES = 512 * 2 ** 20   # keep every mask (flicker, Fig. 8) while they fit in this
PAIRS_PER_FRAME_ESTIMATE = 12       # distinct (k, i) pairs per frame over a whole sweep


# -- the decision loop ------------------------------------------------------------------------------
def _pair(cache, k, i):
    """cache.pair(k, i); on a miss, prefetch (k, i..i+B-1) in one batch: until the next key every
    frame pairs with k, and pairs left unused are reused by other sweep points."""
    has_pair = getattr(cache, "has_pair", None)
    if has_pair is not None and not has_pair(k, i):
        batch = int(getattr(cache, "batch_size", 1))
        cache.prefetch_pairs([(k, j) for j in range(i, min(i + batch, cache.num_frames))])
    return cache.pair(k, i)


def run_decisions(cache, scheduler, num_classes=None, keep_masks=False):
    """Runs `scheduler` along one cached video; returns a dict:

    keys: bool (T,); scores: float (T,); frame_miou: float (T,) in [0, 1]; confusion: (C, C) int64
    or None (no labels); masks: list of uint8 (S, S) per frame when `keep_masks` (and the cache kept
    them), else None.
    """
    frames = cache.num_frames
    keys = np.zeros(frames, bool)
    scores = np.full(frames, np.nan)
    frame_miou = np.full(frames, np.nan)
    confusion = np.zeros((num_classes, num_classes), np.int64) if num_classes else None
    masks = [] if keep_masks else None
    observe = needs_observation(scheduler)
    scheduler.reset()
    k = 0
    for i in range(frames):
        observation = {"frame_index": i}
        if i > 0 and observe:
            pair = _pair(cache, k, i)
            observation.update(conv6=pair.conv6, conv6_1=pair.conv6_1, flow_magnitude=pair.flow_magnitude)
        is_key, score = scheduler.decide(observation)
        scheduler.record(is_key)
        is_key = bool(is_key) or i == 0
        if is_key:
            entry, k = cache.key(i), i
        else:
            entry = _pair(cache, k, i)
        keys[i], scores[i], frame_miou[i] = is_key, score, entry.miou
        if confusion is not None and entry.confusion is not None:
            confusion += entry.confusion
        if masks is not None:
            masks.append(entry.mask)
    if masks is not None and any(m is None for m in masks):
        masks = None
    return dict(keys=keys, scores=scores, frame_miou=frame_miou, confusion=confusion, masks=masks)


# -- FPS from the runtime's stage timings -----------------------------------------------------------
def measure_stage_ms(dff, schedulers, frames, warmup=3):
    """Median milliseconds per stage of `eval.runtime.DynamicSegmenter` on `frames` (uint8 (T,S,S,3)).

    schedulers: {name: KeyScheduler} (one representative per name). A fixed interval-2 run first
    compiles every path and guarantees key and non-key samples. Returns
    {"flow", "key", "warp_task": ms, "policy": {name: ms}, "frames": n}.
    """
    from rl_scheduler.schedulers import make_scheduler

    samples = {"flow": [], "key": [], "warp_task": []}
    policy = {}
    runs = [("_warmup", make_scheduler("fixed", threshold=2))] + list(schedulers.items())
    DynamicSegmenter(dff, runs[0][1]).warm_up(frames[0])
    for name, scheduler in runs:
        results = list(DynamicSegmenter(dff, scheduler).stream(frames))
        if name == "_warmup":   # the first frames of the first stream run slower (allocations)
            results = results[warmup:]
        for r in results:
            for stage in samples:
                if r.ms[stage] > 0:
                    samples[stage].append(r.ms[stage])
        if name != "_warmup":
            policy[name] = float(np.median([r.ms["policy"] for r in results[1:]] or [0.0]))
    out = {stage: float(np.median(v)) if v else 0.0 for stage, v in samples.items()}
    out.update(policy=policy, frames=int(len(frames)), device=platform.processor() or platform.machine())
    return out


def model_time_fps(keys_per_video, name, stage_ms):
    """Model-time FPS of one sweep point from its key flags (list per video) and `measure_stage_ms`."""
    total_ms, frames = 0.0, 0
    for keys in keys_per_video:
        n, n_keys = len(keys), int(np.sum(keys))
        decisions, non_keys = n - 1, n - n_keys
        flows = decisions if name not in ("fixed", "random") else non_keys
        total_ms += (n_keys * stage_ms["key"] + non_keys * stage_ms["warp_task"] + flows * stage_ms["flow"]
                     + decisions * stage_ms["policy"].get(name, 0.0))
        frames += n
    return 1000.0 * frames / total_ms if total_ms > 0 else float("inf")


# -- matched AKI ------------------------------------------------------------------------------------
def upper_frontier(curve):
    """[(aki, miou)] of the points no other point beats on both AKI (higher) and mIoU, by AKI."""
    best, frontier = -math.inf, []
    for aki, miou in sorted(((p["aki"], p["miou"]) for p in curve), key=lambda t: (-t[0], -t[1])):
        if miou > best:
            frontier.append((aki, miou))
            best = miou
    return frontier[::-1]


def miou_at_aki(curve, aki):
    """mIoU of a scheduler's curve at `aki`: linear in log AKI between the neighbouring points of its
    upper frontier (`upper_frontier`); None outside the AKI range it covers (no extrapolation).

    curve: [{"aki", "miou", ...}] (a `curves` entry of results.json).
    """
    frontier = upper_frontier(curve)
    if not frontier or not frontier[0][0] <= aki <= frontier[-1][0]:
        return None
    for (a0, m0), (a1, m1) in zip(frontier, frontier[1:]):
        if a0 <= aki <= a1:
            if a1 == a0:
                return max(m0, m1)
            w = (math.log(aki) - math.log(a0)) / (math.log(a1) - math.log(a0))
            return m0 + w * (m1 - m0)
    return frontier[0][1]


def matched_aki_table(curves, akis):
    """{aki: {scheduler: mIoU or None}} at each AKI of `akis` (miou_at_aki)."""
    return {float(a): {name: miou_at_aki(points, a) for name, points in curves.items()} for a in akis}


# -- the sweep --------------------------------------------------------------------------------------
def _history_options(network):
    """The decision-history options a policy was trained with (window, kar_prefill, lkd_scale)."""
    training = dict(getattr(network, "stage_config", {}) or {}).get("training", {}) or {}
    return {k: training[k] for k in ("window", "kar_prefill", "lkd_scale") if k in training}


def scheduler_grid(rl_policies=None, dvsnet_network=None, rl_thresholds=(), dvsnet_thresholds=(),
                   flow_magnitude_thresholds=(), intervals=(), seed=0):
    """[(name, threshold, extra, make)]: every sweep point; `make()` builds its fresh KeyScheduler.

    rl_policies: {kar_limit: policy model} (rl_scheduler.load_policy); dvsnet_network: the decision
    network (rl_scheduler.load_dvsnet) or None. `extra` holds the point's other knobs (kar_limit).
    """
    from rl_scheduler.schedulers import make_scheduler

    grid = []
    for eta, policy in sorted((rl_policies or {}).items()):
        for t in rl_thresholds:
            grid.append(("rl", float(t), {"kar_limit": float(eta)}, lambda p=policy, t=t: make_scheduler(
                "rl", policy=p, threshold=t, **_history_options(p))))
    if dvsnet_network is not None:
        for t in dvsnet_thresholds:
            grid.append(("dvsnet", float(t), {}, lambda t=t: make_scheduler(
                "dvsnet", network=dvsnet_network, threshold=t)))
    for t in flow_magnitude_thresholds:
        grid.append(("flow_magnitude", float(t), {}, lambda t=t: make_scheduler("flow_magnitude", threshold=t)))
    for k in intervals:
        grid.append(("fixed", float(k), {}, lambda k=k: make_scheduler("fixed", threshold=int(k))))
        grid.append(("random", float(k), {}, lambda k=k: make_scheduler("random", threshold=k, seed=seed)))
    return sorted(grid, key=lambda g: SCHEDULER_ORDER.index(g[0]))


def sweep_caches(caches, grid, num_classes, stage_ms=None, keep_masks=False, log=print):
    """Runs every grid point over every cache; returns (curves, records).

    curves: {name: [{"aki", "miou" (percent), "fps", "threshold", ...extra, "flicker"}]} (results.json);
    records: {name: [{"threshold", ...extra, "aki", "miou", "keys": [[key indices] per video],
    "frame_miou": [per-frame mIoU (fraction) of video 0]}]} for the figures.
    """
    import keras

    curves, records = {}, {}
    bar = keras.utils.Progbar(len(grid), verbose=1 if log is print else 0)
    for n, (name, threshold, extra, make) in enumerate(grid):
        scheduler = make()
        runs = [run_decisions(cache, scheduler, num_classes, keep_masks) for cache in caches]
        confusion = sum(r["confusion"] for r in runs)
        keys = [r["keys"] for r in runs]
        point = dict(aki=metrics.aki(keys), miou=100.0 * metrics.mean_iou(confusion),
                     fps=model_time_fps(keys, name, stage_ms) if stage_ms else None,
                     threshold=threshold, **extra)
        if keep_masks and all(r["masks"] is not None for r in runs):
            counts = [metrics.flicker_counts(np.stack(r["masks"]), c.labels) for r, c in zip(runs, caches)]
            stable = sum(s for _, s in counts)
            point["flicker"] = sum(c for c, _ in counts) / stable if stable else 0.0
        curves.setdefault(name, []).append(point)
        records.setdefault(name, []).append(dict(
            point, keys=[np.flatnonzero(k).tolist() for k in keys],
            frame_miou=[round(float(v), 5) for v in runs[0]["frame_miou"]]))
        bar.update(n + 1)
        if log is not print:
            log(f"  {name} threshold {threshold:g} {extra or ''}: AKI {point['aki']:.1f}, "
                f"mIoU {point['miou']:.2f}" + (f", {point['fps']:.1f} FPS" if point["fps"] else ""))
    return curves, records


def figure_points(records, target_aki=121.0):
    """{name: index of its record nearest (log AKI) to one common AKI}: Fig. 6, 7, 8 compare the
    schedulers there. The AKI is `target_aki` (the paper's Fig. 6) capped to what RL reaches."""
    finite = {n: [r["aki"] for r in recs if math.isfinite(r["aki"])] for n, recs in records.items()}
    reach = max(finite.get("rl") or [a for v in finite.values() for a in v] or [1.0])
    aki = min(target_aki, reach)
    return aki, {n: int(np.argmin([abs(math.log(max(a, 1e-9) / aki)) if math.isfinite(a) else math.inf
                                    for a in (r["aki"] for r in recs)]))
                 for n, recs in records.items() if recs}


def fig8_samples(dff, images, labels, records, chosen, num_classes, count=3, min_gap=10, cache=None):
    """Non-key frames of video 0 for Fig. 8: the RL (else first) scheduler's non-key frames farthest
    from their key, with each chosen scheduler's mask there. Returns a dict of numpy arrays.

    cache: video 0's VideoCache when it keeps masks (else a small one computes the few pairs)."""
    from rl_scheduler.cache import VideoCache

    names = [n for n in ("rl", "fixed", "dvsnet") if n in chosen] or list(chosen)[:3]
    keys = {n: records[n][chosen[n]]["keys"][0] for n in names}
    lead = keys[names[0]]
    distance = np.full(len(images), -1)
    for a, b in zip(lead, list(lead[1:]) + [len(images)]):
        distance[a + 1:b] = np.arange(1, b - a)
    frames = []
    for i in np.argsort(-distance, kind="stable"):
        if distance[i] > 0 and all(abs(int(i) - f) >= min_gap for f in frames) and len(frames) < count:
            frames.append(int(i))
    frames = sorted(frames) or [len(images) - 1]
    if cache is None or not getattr(cache, "keep_masks", False):
        cache = VideoCache(dff, images, labels, num_classes=num_classes, batch_size=1)
    out = {"frame_index": np.asarray(frames, np.int64), "images": images[frames], "labels": labels[frames]}
    for n in names:
        masks, is_key = [], []
        for i in frames:
            k = max(f for f in keys[n] if f <= i)
            masks.append(cache.key(i).mask if k == i else cache.pair(k, i).mask)
            is_key.append(k == i)
        out[f"mask_{n}"] = np.stack(masks)
        out[f"is_key_{n}"] = np.asarray(is_key)
    return out


def _stage_option(stage_dir, key, default):
    try:
        with open(os.path.join(stage_dir, "config.json")) as f:
            stage_config = json.load(f)
    except (OSError, ValueError):
        return default
    return stage_config.get(key, (stage_config.get("training") or {}).get(key, default))


def run_sweeps(out_dir, prepared_dir, segmenter_dir, flownet_dir, rl_dirs, dvsnet_dir, test_videos,
               rl_thresholds=(0.3, 0.5, 0.7, 0.9), dvsnet_thresholds=(80.0, 85.0, 90.0, 95.0),
               flow_magnitude_thresholds=(0.5, 1.0, 2.0, 4.0), intervals=(5, 10, 20, 30, 60),
               max_frames=None, matched_aki_min=25.0, seed=0, timing_frames=40, cache_batch_size=8,
               flow_resolution=None, target_aki=121.0, log=print):
    """The sweeps stage of `eval.reproduce`: every scheduler over the test videos.

    rl_dirs: {kar_limit: rl stage dir}; dvsnet_dir: the DVSNet stage dir (None: no dvsnet curve).
    dvsnet_thresholds are confidence targets in percent (rl_scheduler DVSNetScheduler).
    Writes out_dir/points.json (per-point keys and per-frame mIoU for the figures),
    out_dir/fig8_samples.npz and out_dir/sweeps.json; returns {"curves" (results.json schema),
    "stage_ms", "matched_aki", "figure_aki", "figure_video", "test_videos", "frames"}.
    """
    from deeplab_face.data.pipelines import load_video
    from rl_scheduler import load_dvsnet, load_policy
    from rl_scheduler.cache import VideoCache, load_dff

    if not test_videos:
        from deeplab_face.errors import ConfigError
        raise ConfigError("--test_videos: the sweeps need at least one test video")
    os.makedirs(out_dir, exist_ok=True)
    flow_resolution = flow_resolution or _stage_option(flownet_dir, "flow_resolution", "full")
    dff = load_dff(segmenter_dir, flownet_dir, flow_resolution=flow_resolution)
    num_classes = int(dff.segmenter.output_shape[-1])
    videos = [load_video(prepared_dir, str(v), 0, max_frames) for v in test_videos]
    size = videos[0][0].shape[1]
    total = sum(len(images) for images, _ in videos)
    keep_masks = total * size * size * PAIRS_PER_FRAME_ESTIMATE <= MASK_BUDGET_BYTES
    caches = [VideoCache(dff, images, labels, num_classes=num_classes, batch_size=cache_batch_size,
                         keep_masks=keep_masks) for images, labels in videos]
    policies = {float(eta): load_policy(d) for eta, d in sorted((rl_dirs or {}).items())}
    dvsnet = load_dvsnet(dvsnet_dir) if dvsnet_dir else None
    grid = scheduler_grid(policies, dvsnet, rl_thresholds, dvsnet_thresholds, flow_magnitude_thresholds,
                          intervals, seed)
    log(f"sweeps: {len(grid)} points over {len(caches)} videos, {total} frames (S={size})")
    for cache in caches:    # N on every frame, in batches (every frame is a key of some point)
        cache.prefetch_keys(range(cache.num_frames))

    representatives = {}
    for name, _, _, make in grid:   # the middle knob of each scheduler, for its decision time
        representatives.setdefault(name, []).append(make)
    representatives = {n: makes[len(makes) // 2]() for n, makes in representatives.items()}
    stage_ms = measure_stage_ms(dff, representatives, videos[0][0][:timing_frames])
    log("stage ms (median): " + ", ".join(f"{k} {v:.2f}" for k, v in stage_ms.items() if k in ("flow", "key", "warp_task"))
        + ", policy " + ", ".join(f"{k} {v:.2f}" for k, v in stage_ms["policy"].items()))

    curves, records = sweep_caches(caches, grid, num_classes, stage_ms, keep_masks, log=log)
    figure_aki, chosen = figure_points(records, target_aki)
    samples = fig8_samples(dff, *videos[0], records, chosen, num_classes, cache=caches[0])
    np.savez_compressed(os.path.join(out_dir, "fig8_samples.npz"), **samples)
    grid_akis = [a for a in (25, 30, 40, 50, 60, 80, 100, 121, 150, 200) if a >= matched_aki_min]
    result = dict(curves=curves, stage_ms=stage_ms, matched_aki=matched_aki_table(curves, grid_akis),
                  figure_aki=figure_aki, figure_video=str(test_videos[0]), test_videos=[str(v) for v in test_videos],
                  frames=total, keep_masks=keep_masks,
                  fps_formula="1000*frames/(keys*key + non_keys*warp_task + flows*flow + decisions*policy)")
    with open(os.path.join(out_dir, "points.json"), "w") as f:
        json.dump(dict(records=records, chosen=chosen, figure_aki=figure_aki,
                       figure_video=str(test_videos[0]), frames_per_video=[len(i) for i, _ in videos]), f)
    with open(os.path.join(out_dir, "sweeps.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result
