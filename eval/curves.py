"""Operating points of the schedulers on cached test videos (§4.3; issue 13 item 4).

- The decision loop over `rl_scheduler.cache.VideoCache` entries (`run_decisions`), exactly as
  `eval.runtime` decides: frame 0 is a forced key; at frame i > 0 the observation is the (last key
  k, i) pair's conv6, conv6_1 and flow magnitude; a key uses N's own result on i, a non-key the
  result propagated from k. So the masks equal the runtime's, while each (k, i) pair is computed
  once across all runs. `simulate_keys` replays the observation-free schedulers (fixed, random)
  without any pair.
- A measured point (`measure_point`): one confusion matrix over all frames of all test videos
  (mIoU in percent), AKI = all frames / all keys, model-time FPS (`model_time_fps`).
- Tracing (`trace_scheduler`): each scheduler's knob is calibrated to target AKIs
  (`eval.calibrate`); every curve point is a measured run with its measured AKI and its
  `target_aki`. A target the knob cannot bring within +-tolerance (out of the knob's range, or the
  response steps over the band) keeps the calibration's nearest measurement, flagged
  `"calibrated": false`, so that every scheduler keeps its measured operating points in Fig. 4;
  the matched-AKI comparison (`point_at_target`, `matched_aki_table`) reads calibrated points only
  and never interpolates between points. A run that serves several targets appears once.
"""
import math

import numpy as np

from eval import metrics
from eval.calibrate import Calibrator, in_band, knob_for
from eval.runtime import OBSERVATION_FREE, needs_observation

DEFAULT_TARGET_AKIS = (2, 5, 10, 25, 50, 100, 150, 200)


# -- the decision loop ------------------------------------------------------------------------------
def _pair(cache, k, i, ahead=None):
    """cache.pair(k, i); on a miss, prefetch (k, i..i+n-1) in one batch: until the next key every
    frame pairs with k, and pairs left unused are reused by other runs. n = `ahead` (at most the
    cache's batch; None: the batch)."""
    has_pair = getattr(cache, "has_pair", None)
    if has_pair is not None and not has_pair(k, i):
        batch = int(getattr(cache, "batch_size", 1))
        n = batch if ahead is None else max(1, min(batch, int(ahead)))
        cache.prefetch_pairs([(k, j) for j in range(i, min(i + n, cache.num_frames))])
    return cache.pair(k, i)


def _lookahead(frames_seen, keys_seen):
    """Pairs worth computing ahead on a miss: about one key interval of this run so far. A key at
    every 2nd frame uses 2 pairs of a batch of 8, and each unused pair costs a FlowNet forward
    (~10 ms a pair at S = 129 on the 2-core CPU, the bulk of a pair's cost)."""
    return int(math.ceil(frames_seen / max(keys_seen, 1)))


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
    reads_labels = bool(getattr(scheduler, "reads_labels", False))
    scheduler.reset()
    k, key_count = 0, 0
    for i in range(frames):
        observation = {"frame_index": i}
        if i > 0 and observe:
            pair = _pair(cache, k, i, _lookahead(i, key_count))
            observation.update(conv6=pair.conv6, conv6_1=pair.conv6_1, flow_magnitude=pair.flow_magnitude)
            if reads_labels:   # eval.causal_oracle: the present frame's true qualities
                observation.update(key_miou=cache.key(i).miou, pair_miou=pair.miou, pair_agreement=pair.agreement)
        is_key, score = scheduler.decide(observation)
        scheduler.record(is_key)
        is_key = bool(is_key) or i == 0
        if is_key:
            entry, k = cache.key(i), i
            key_count += 1
        else:
            entry = _pair(cache, k, i, _lookahead(i, key_count))
        keys[i], scores[i], frame_miou[i] = is_key, score, entry.miou
        if confusion is not None and entry.confusion is not None:
            confusion += entry.confusion
        if masks is not None:
            masks.append(entry.mask)
    if masks is not None and any(m is None for m in masks):
        masks = None
    return dict(keys=keys, scores=scores, frame_miou=frame_miou, confusion=confusion, masks=masks)


def simulate_keys(scheduler, frames_per_video):
    """Key flags per video of an observation-free scheduler, as `run_decisions` would take them over
    those videos in turn with this one scheduler object (no pair, no frame needed)."""
    if needs_observation(scheduler):
        raise ValueError(f"scheduler {scheduler.name!r} reads observations; only {OBSERVATION_FREE} can be simulated")
    out = []
    for frames in frames_per_video:
        scheduler.reset()
        flags = np.zeros(int(frames), bool)
        for i in range(int(frames)):
            is_key, _ = scheduler.decide({"frame_index": i})
            scheduler.record(is_key)
            flags[i] = bool(is_key) or i == 0
        out.append(flags)
    return out


def model_time_fps(keys_per_video, name, stage_ms):
    """Model-time FPS of one point from its key flags (list per video) and `measure_stage_ms`:
    1000 frames / (keys t_key + non_keys t_warp_task + flows t_flow + decisions t_policy), where
    decisions = frames - 1 per video and flows = decisions, or non_keys for fixed / random."""
    total_ms, frames = 0.0, 0
    for keys in keys_per_video:
        n, n_keys = len(keys), int(np.sum(keys))
        decisions, non_keys = n - 1, n - n_keys
        flows = decisions if name not in OBSERVATION_FREE else non_keys
        total_ms += (n_keys * stage_ms["key"] + non_keys * stage_ms["warp_task"] + flows * stage_ms["flow"]
                     + decisions * stage_ms["policy"].get(name, 0.0))
        frames += n
    return 1000.0 * frames / total_ms if total_ms > 0 else float("inf")


def measure_point(caches, scheduler, name, num_classes, stage_ms=None, keep_masks=False):
    """One measured run of `scheduler` over every cache: {"aki", "miou" (percent), "fps", "flicker"
    (when masks are kept), "keys": [key indices per video], "frame_miou": per-frame mIoU of video 0}."""
    runs = [run_decisions(cache, scheduler, num_classes, keep_masks) for cache in caches]
    confusion = sum(r["confusion"] for r in runs)
    keys = [r["keys"] for r in runs]
    deployable = not getattr(scheduler, "reads_labels", False)   # a rule reading labels has no FPS
    point = dict(aki=metrics.aki(keys), miou=100.0 * metrics.mean_iou(confusion),
                 fps=model_time_fps(keys, name, stage_ms) if stage_ms and deployable else None)
    if keep_masks and all(r["masks"] is not None for r in runs):
        counts = [metrics.flicker_counts(np.stack(r["masks"]), c.labels) for r, c in zip(runs, caches)]
        stable = sum(s for _, s in counts)
        point["flicker"] = sum(c for c, _ in counts) / stable if stable else 0.0
    point["keys"] = [np.flatnonzero(k).tolist() for k in keys]
    point["frame_miou"] = [round(float(v), 5) for v in runs[0]["frame_miou"]]
    return point


# -- targets and tracing ----------------------------------------------------------------------------
def select_targets(target_akis, frames_per_video, min_keys_per_video=8):
    """(kept, dropped) target AKIs: kept where every video can hold min_keys_per_video keys, i.e.
    target <= shortest video / min_keys_per_video (with fewer keys, placement hardly matters)."""
    limit = min(frames_per_video) / float(min_keys_per_video)
    targets = sorted({float(t) for t in target_akis})
    return [t for t in targets if t <= limit], [t for t in targets if t > limit]


def _entry(run, knob, calibration, extra):
    """(curve point, record) of a measured run for one target."""
    point = {k: v for k, v in run.items() if k not in ("keys", "frame_miou")}
    point.update(threshold=float(knob), target_aki=float(calibration.target),
                 calibrated=bool(calibration.calibrated), **extra)
    return point, dict(point, keys=run["keys"], frame_miou=run["frame_miou"])


def trace_scheduler(name, make, caches, targets, num_classes, stage_ms=None, keep_masks=False, tolerance=0.1,
                    max_runs=8, probes=(), extra=None, knob_changes=None, log=None):
    """Calibrates scheduler `name` (make(knob) -> a fresh KeyScheduler) at each target AKI.

    Returns (entries, calibrations, runs): entries = [(point, record)] per target (measured runs,
    `calibrated` flags); calibrations = [Calibration]; runs = measured runs over the test videos.
    fixed / random are calibrated on simulated decisions (`simulate_keys`, no pair computed) with the
    target as the first guess for K, then the chosen K is run once.
    """
    extra = dict(extra or {})
    changes = dict(knob_changes or {})
    if probes:
        changes.setdefault("start", float(np.median(probes)))
    knob = knob_for(name, **changes)
    label = name + (f" (KAR limit {extra['kar_limit']:g})" if "kar_limit" in extra else "")
    say = (lambda line: log(f"  {label}{line}")) if log else None
    measured = {}

    def measure(value):
        if value not in measured:
            measured[value] = measure_point(caches, make(value), name, num_classes, stage_ms, keep_masks)
        return measured[value]

    if name in OBSERVATION_FREE:
        frames = [c.num_frames for c in caches]
        calibrator = Calibrator(lambda value: metrics.aki(simulate_keys(make(value), frames)), knob, tolerance,
                                max_runs=max(max_runs, 64), probes=probes)   # simulations cost no pair
        calibrations = calibrator.calibrate_all(targets, guess=lambda t: t)
        for c in calibrations:
            run = measure(c.knob)
            if run["aki"] != c.aki:    # the simulation replays run_decisions exactly
                raise RuntimeError(f"{name} K={c.knob}: simulated AKI {c.aki} but measured {run['aki']}")
            if say:
                say(f" K {c.knob:g}: AKI {run['aki']:.2f} (target {c.target:g})")
    else:
        calibrator = Calibrator(measure, knob, tolerance, max_runs, probes, log=say)
        calibrations = calibrator.calibrate_all(targets)
    entries = [_entry(measured[c.knob], c.knob, c, extra) for c in calibrations]
    return entries, calibrations, len(measured)


def curve_of(entries):
    """(points, records) from [(point, record)] per target: each measured run once (a calibrated
    use of it wins over a miss), in target order."""
    chosen = {}
    for point, record in entries:
        run = (point["threshold"], point.get("kar_limit"))
        if run not in chosen or point["calibrated"] and not chosen[run][0]["calibrated"]:
            chosen[run] = (point, record)
    ordered = sorted(chosen.values(), key=lambda e: (e[0]["target_aki"], e[0]["aki"]))
    return [p for p, _ in ordered], [r for _, r in ordered]


def best_of_policies(entries_per_policy):
    """[(point, record)] per target: among the RL policies (one per KAR limit), the calibrated point
    with the highest mIoU, else the measurement nearest the target (log AKI), flagged uncalibrated."""
    per_target = {}
    for entries in entries_per_policy.values():
        for point, record in entries:
            per_target.setdefault(point["target_aki"], []).append((point, record))
    out = []
    for target, options in sorted(per_target.items()):
        calibrated = [o for o in options if o[0]["calibrated"]]
        if calibrated:
            out.append(max(calibrated, key=lambda o: o[0]["miou"]))
        else:
            out.append(min(options, key=lambda o: abs(math.log(o[0]["aki"] / target))))
    return out


# -- matched AKI: measured points only --------------------------------------------------------------
def point_at_target(curve, target, tolerance=0.1):
    """The calibrated point of `curve` at `target`: AKI within +-tolerance of it (its own target
    first, then the nearest AKI, then the higher mIoU); None when there is none. Never interpolated.
    Points without a `calibrated` flag (hand-written curves) count as measured operating points."""
    target = float(target)
    options = [p for p in curve if p.get("calibrated", True) and p.get("aki") is not None
               and math.isfinite(p["aki"]) and in_band(p["aki"], target, tolerance)]
    if not options:
        return None
    return min(options, key=lambda p: (p.get("target_aki", target) != target, abs(math.log(p["aki"] / target)),
                                       -p["miou"]))


def matched_aki_table(curves, akis, tolerance=0.1):
    """{aki: {scheduler: mIoU of its calibrated point there, or None}} (point_at_target)."""
    table = {}
    for a in akis:
        row = {}
        for name, points in curves.items():
            p = point_at_target(points, a, tolerance)
            row[name] = None if p is None else p["miou"]
        table[float(a)] = row
    return table


def unreached(curves, targets, tolerance=0.1):
    """{scheduler: [targets without a calibrated point]} (only schedulers that miss some)."""
    out = {}
    for name, points in curves.items():
        missing = [float(t) for t in targets if point_at_target(points, t, tolerance) is None]
        if missing:
            out[name] = missing
    return out
