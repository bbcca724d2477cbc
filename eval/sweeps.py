"""Scheduler sweeps on the test videos: AKI-mIoU and FPS-mIoU curves at calibrated AKIs (§4.3; §10-§11).

Each scheduler's knob is calibrated to target AKIs (default 2, 5, 10, 25, 50, 100, 150, 200, kept
where every test video holds at least `min_keys_per_video` keys: target <= shortest video / 8) by
`eval.calibrate`, and every curve point is a measured run with its measured AKI (`eval.curves`):
`rl` = tau on P(key), one calibration per policy (KAR limit), and per target the best calibrated
policy goes into `curves["rl"]` (each policy's own curve: `rl_policies` in sweeps.json);
`dvsnet` = the confidence target (percent, key when the predicted score is below it);
`flow_magnitude` = the mean-|flow| threshold (feature-grid pixels); `fixed` = the interval K and
`random` = the mean interval K (key with probability 1/K), both calibrated on simulated decisions
(no pair computed) and then run once. `curves["oracle"]` is the best key placement knowing every
pair's true quality on a candidate grid (`eval.oracle`), a reference; `curves["causal_oracle"]` (and
`causal_propagated`, `causal_agreement`) key frame by frame on one exactly known signal of the present
frame (`eval.causal_oracle`), references between the oracle and the schedulers (`causal_signals`;
none of them has an FPS).

Decisions run over `rl_scheduler.cache.VideoCache` entries (`eval.curves.run_decisions`), as
`eval.runtime` decides, so each (k, i) pair is computed once across all runs and the oracle.

mIoU: one confusion matrix per point over all frames of all test videos, in percent.
AKI: all frames / all keys (eval.metrics.aki).
FPS (model time): measured by `eval.runtime.DynamicSegmenter` on the same videos (`measure_stage_ms`:
the median milliseconds of each stage over `timing_frames` frames of the first test video, after a
warm-up), then for a point over all its frames
    FPS = 1000 * frames / (keys * t_key + non_keys * t_warp_task + flows * t_flow + decisions * t_policy)
where decisions = frames - videos (frame 0 of each video is forced), flows = decisions for the
schedulers that read the flow net and non_keys for fixed / random (eval.runtime.OBSERVATION_FREE),
and t_policy is the scheduler's own decision time. The oracle has no FPS (null).
"""
import json
import math
import os
import platform

import numpy as np

from deeplab_face import atomic
from eval import oracle as oracle_lib
from eval.calibrate import knob_for
from eval.curves import (DEFAULT_TARGET_AKIS, best_of_policies, curve_of, matched_aki_table,  # noqa: F401
                         measure_point, model_time_fps, point_at_target, run_decisions, select_targets,
                         simulate_keys, trace_scheduler, unreached)
from eval.runtime import DynamicSegmenter

SCHEDULER_ORDER = ("rl", "dvsnet", "flow_magnitude", "fixed", "random", "causal_oracle", "causal_propagated",
                   "causal_agreement")
MASK_BUDGET_BYTES = 512 * 2 ** 20   # keep every mask (flicker, Fig. 8) while they fit in this
PAIRS_PER_FRAME_ESTIMATE = 12       # distinct (k, i) pairs per frame over the schedulers' runs


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


# -- the sweep --------------------------------------------------------------------------------------
def _history_options(network):
    """The decision-history options a policy was trained with (window, kar_prefill, lkd_scale)."""
    training = dict(getattr(network, "stage_config", {}) or {}).get("training", {}) or {}
    return {k: training[k] for k in ("window", "kar_prefill", "lkd_scale") if k in training}


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


def stage_option(stage_dir, key, default):
    """A training option of a finished stage (its config.json, or that file's "training" block)."""
    try:
        with open(os.path.join(stage_dir, "config.json")) as f:
            stage_config = json.load(f)
    except (OSError, ValueError):
        return default
    return stage_config.get(key, (stage_config.get("training") or {}).get(key, default))


def _makers(policies, dvsnet, seed, causal_signals=()):
    """[(curve name, scheduler name, extra, make(knob) -> fresh KeyScheduler)] in SCHEDULER_ORDER;
    causal_signals: eval.causal_oracle's references to add (signals: gain, propagated, agreement)."""
    from eval.causal_oracle import SIGNALS, CausalOracle
    from rl_scheduler.schedulers import make_scheduler

    out = [(f"rl_eta{eta:g}", "rl", {"kar_limit": float(eta)},
            lambda t, p=policy: make_scheduler("rl", policy=p, threshold=t, **_history_options(p)))
           for eta, policy in sorted(policies.items())]
    if dvsnet is not None:
        out.append(("dvsnet", "dvsnet", {}, lambda t: make_scheduler("dvsnet", network=dvsnet, threshold=t)))
    out.append(("flow_magnitude", "flow_magnitude", {}, lambda t: make_scheduler("flow_magnitude", threshold=t)))
    out.append(("fixed", "fixed", {}, lambda k: make_scheduler("fixed", threshold=int(k))))
    out.append(("random", "random", {}, lambda k: make_scheduler("random", threshold=k, seed=seed)))
    for signal in causal_signals:
        out.append((SIGNALS[signal], SIGNALS[signal], {}, lambda t, s=signal: CausalOracle(threshold=t, signal=s)))
    return out


def trace_all(caches, makers, targets, num_classes, stage_ms, keep_masks, probes, tolerance=0.1, max_runs=8,
              log=print):
    """Calibrates every scheduler at every target; returns (curves, records, extras) where extras has
    "calibration" {curve: [Calibration.to_json()]}, "runs" {curve: measured runs} and "rl_policies"
    {kar_limit: points} (each policy's own curve; `curves["rl"]` holds the best policy per target)."""
    import keras

    frames = [c.num_frames for c in caches]
    curves, records, calibration, runs, per_policy = {}, {}, {}, {}, {}
    bar = keras.utils.Progbar(len(makers) * len(targets), verbose=1 if log is print else 0, unit_name="target")
    for n, (curve, name, extra, make) in enumerate(makers):
        changes = {"high": float(max(frames))} if name in ("fixed", "random") else {}
        entries, calibrations, count = trace_scheduler(
            name, make, caches, targets, num_classes, stage_ms, keep_masks, tolerance, max_runs,
            probes.get(name, ()), extra, changes, log=None if log is print else log)
        calibration[curve] = [c.to_json() for c in calibrations]
        runs[curve] = count
        if name == "rl":
            per_policy[extra["kar_limit"]] = entries
        else:
            curves[name], records[name] = curve_of(entries)
        bar.update((n + 1) * len(targets))
        missed = [f"{c.target:g} ({c.reason}: nearest AKI {c.aki:.2f})" for c in calibrations if not c.calibrated]
        log(f"sweeps: {curve}: {count} runs; " + (f"missed targets {', '.join(missed)}" if missed
                                                    else "every target within the band"))
    if per_policy:
        curves["rl"], records["rl"] = curve_of(best_of_policies(per_policy))
    ordered = {n: curves[n] for n in SCHEDULER_ORDER if n in curves}
    extras = dict(calibration=calibration, runs=runs,
                  rl_policies={f"{eta:g}": curve_of(e)[0] for eta, e in sorted(per_policy.items())})
    return ordered, {n: records[n] for n in ordered}, extras


# (long only by its signature and docstring, the sweeps preset's keys; the body is under 50 lines)
def run_sweeps(out_dir, prepared_dir, segmenter_dir, flownet_dir, rl_dirs, dvsnet_dir, test_videos,
               target_akis=DEFAULT_TARGET_AKIS, aki_tolerance=0.1, max_calibration_runs=8, min_keys_per_video=8,
               rl_thresholds=(0.5,), dvsnet_thresholds=(90.0,), flow_magnitude_thresholds=(1.0,), intervals=(),
               oracle=True, oracle_max_gap=None, oracle_candidate_stride=None, oracle_pairs_per_frame=4,
               max_frames=None, matched_aki_min=25.0, seed=0, timing_frames=40, cache_batch_size=8,
               flow_resolution=None, target_aki=121.0, causal_signals=("gain",), log=print):
    """The sweeps stage of `eval.reproduce`: every scheduler over the test videos at calibrated AKIs.

    rl_dirs: {kar_limit: rl stage dir}; dvsnet_dir: the DVSNet stage dir (None: no dvsnet curve).
    target_akis: the AKIs each knob is calibrated to; those above shortest video / min_keys_per_video
      are dropped (and listed). aki_tolerance: a point is calibrated within +-this fraction of its
      target; max_calibration_runs: runs over the test videos per scheduler and target at most.
    rl_thresholds, dvsnet_thresholds (percent), flow_magnitude_thresholds, intervals (fixed and random
      K): the calibration's first probes (their median is the start; the others are tried before
      blind extension steps).
    oracle: add `curves["oracle"]` (eval.oracle); oracle_max_gap / oracle_candidate_stride: one grid
      for every target, None: per target G = 2 * target, c = ceil(G / oracle_pairs_per_frame).
    causal_signals: eval.causal_oracle's references, calibrated like the schedulers ("gain" ->
      curves["causal_oracle"], "propagated" -> "causal_propagated", "agreement" -> "causal_agreement").
    target_aki: the AKI Fig. 6, 7, 8 compare the schedulers at (capped to what RL reaches).
    matched_aki_min: accepted for the preset; the claim applies it (eval.report.matched_aki_claim), the
      sweeps' matched-AKI table covers every target.
    Writes out_dir/points.json (per-point keys and per-frame mIoU for the figures, the oracle's key
    frames), out_dir/fig8_samples.npz and out_dir/sweeps.json; returns {"curves" (results.json
    schema), "stage_ms", "matched_aki", "target_akis", "dropped_target_akis", "unreached",
    "calibration", "runs", "rl_policies", "figure_aki", "figure_video", "test_videos", "frames", ...}.
    """
    from deeplab_face.data.pipelines import load_video
    from deeplab_face.errors import ConfigError
    from rl_scheduler import load_dvsnet, load_policy
    from flownet2s.dff import load_dff
    from rl_scheduler.cache import VideoCache

    if not test_videos:
        raise ConfigError("--test_videos: the sweeps need at least one test video")
    os.makedirs(out_dir, exist_ok=True)
    flow_resolution = flow_resolution or stage_option(flownet_dir, "flow_resolution", "full")
    dff = load_dff(segmenter_dir, flownet_dir, flow_resolution=flow_resolution)
    num_classes = int(dff.segmenter.output_shape[-1])
    videos = [load_video(prepared_dir, str(v), 0, max_frames) for v in test_videos]
    frames = [len(images) for images, _ in videos]
    targets, dropped = _fitting_targets(target_akis, frames, min_keys_per_video, log)
    size = videos[0][0].shape[1]
    total = sum(frames)
    oracle_pairs = _oracle_pair_count(targets, frames, oracle_max_gap, oracle_candidate_stride,
                                      oracle_pairs_per_frame) if oracle else 0
    keep_masks = (total * PAIRS_PER_FRAME_ESTIMATE + oracle_pairs) * size * size <= MASK_BUDGET_BYTES
    caches = [VideoCache(dff, images, labels, num_classes=num_classes, batch_size=cache_batch_size,
                         keep_masks=keep_masks) for images, labels in videos]
    policies = {float(eta): load_policy(d) for eta, d in sorted((rl_dirs or {}).items())}
    makers = _makers(policies, load_dvsnet(dvsnet_dir) if dvsnet_dir else None, seed, causal_signals)
    log(f"sweeps: {len(makers)} schedulers x target AKIs {', '.join(f'{t:g}' for t in targets)} over "
        f"{len(caches)} videos, {total} frames (S={size})" + (f"; oracle: {oracle_pairs} pairs" if oracle else ""))
    for cache in caches:    # N on every frame, in batches (every frame is a key of some run)
        cache.prefetch_keys(range(cache.num_frames))

    probes = {"rl": rl_thresholds, "dvsnet": dvsnet_thresholds, "flow_magnitude": flow_magnitude_thresholds,
              "fixed": intervals, "random": intervals}
    stage_ms = measure_stage_ms(dff, _representatives(makers, probes), videos[0][0][:timing_frames])
    log("stage ms (median): " + ", ".join(f"{k} {v:.2f}" for k, v in stage_ms.items() if k in ("flow", "key", "warp_task"))
        + ", policy " + ", ".join(f"{k} {v:.2f}" for k, v in stage_ms["policy"].items()))

    curves, records, extras = trace_all(caches, makers, targets, num_classes, stage_ms, keep_masks, probes,
                                        aki_tolerance, max_calibration_runs, log=log)
    placements = {}
    if oracle:
        curves["oracle"], placements = _oracle(caches, targets, oracle_max_gap, oracle_candidate_stride,
                                               oracle_pairs_per_frame, aki_tolerance, log)
    figure_aki, chosen = figure_points(records, target_aki)
    samples = fig8_samples(dff, *videos[0], records, chosen, num_classes, cache=caches[0])
    with atomic.replacing(os.path.join(out_dir, "fig8_samples.npz"), suffix=".npz") as tmp:
        np.savez_compressed(tmp, **samples)
    result = dict(curves=curves, stage_ms=stage_ms, target_akis=targets, dropped_target_akis=dropped,
                  aki_tolerance=aki_tolerance, matched_aki=matched_aki_table(curves, targets, aki_tolerance),
                  unreached=unreached(curves, targets, aki_tolerance), **extras,
                  pair_computations=int(sum(c.pair_computations for c in caches)),
                  figure_aki=figure_aki, figure_video=str(test_videos[0]), test_videos=[str(v) for v in test_videos],
                  frames=total, keep_masks=keep_masks,
                  fps_formula="1000*frames/(keys*key + non_keys*warp_task + flows*flow + decisions*policy)")
    _write_json_files(out_dir, result, dict(records=records, chosen=chosen, figure_aki=figure_aki,
                                            figure_video=str(test_videos[0]), frames_per_video=frames,
                                            oracle_keys={f"{t:g}": k for t, k in placements.items()}))
    return result


def _fitting_targets(target_akis, frames, min_keys_per_video, log):
    """(targets, dropped): the target AKIs every test video holds `min_keys_per_video` keys at, and the rest."""
    from deeplab_face.errors import ConfigError

    targets, dropped = select_targets(target_akis, frames, min_keys_per_video)
    if not targets:
        raise ConfigError(f"--target_akis: none of {list(target_akis)} fits the shortest test video "
                          f"({min(frames)} frames) with {min_keys_per_video} keys (--min_keys_per_video)")
    if dropped:
        log(f"sweeps: target AKIs {', '.join(f'{t:g}' for t in dropped)} dropped: above the shortest test video "
            f"({min(frames)} frames) / {min_keys_per_video} keys")
    return targets, dropped


def _oracle_pair_count(targets, frames, max_gap, candidate_stride, pairs_per_frame):
    """The pairs the oracle computes over every target, for the mask budget and the log."""
    count = 0
    for t in targets:
        c, g = oracle_lib.grid_for(t, max(frames), max_gap, candidate_stride, pairs_per_frame)
        count += sum(len(oracle_lib.needed_pairs(n, min(c, g, n), min(g, n))) for n in frames)
    return count


def _oracle(caches, targets, max_gap, candidate_stride, pairs_per_frame, tolerance, log):
    """(the oracle's curve, its key placements) (eval.oracle), logging the pairs it added."""
    before = sum(c.pair_computations for c in caches)
    curve, placements = oracle_lib.oracle_curve(caches, targets, max_gap, candidate_stride, pairs_per_frame,
                                                tolerance=tolerance, verbose=log is print, log=log)
    log(f"sweeps: oracle computed {sum(c.pair_computations for c in caches) - before} new pairs")
    return curve, placements


def _representatives(makers, probes):
    """{scheduler name: one scheduler at its start knob}, for its decision time."""
    representatives = {}
    for _, name, _, make in makers:
        if name not in representatives and name in probes:   # (not the causal oracle: no runtime input)
            start = float(np.median(probes[name])) if len(probes[name]) else knob_for(name).start
            representatives[name] = make(start)
    return representatives


def _write_json_files(out_dir, result, points):
    """out_dir/points.json and out_dir/sweeps.json."""
    # atomic (deeplab_face.atomic), with json's own NaN for frames without labels, as the readers expect
    with atomic.replacing(os.path.join(out_dir, "points.json")) as tmp, open(tmp, "w") as f:
        json.dump(points, f)
    with atomic.replacing(os.path.join(out_dir, "sweeps.json")) as tmp, open(tmp, "w") as f:
        json.dump(result, f, indent=1)
