"""Causal references: key rules that know one signal of the present frame exactly (issue 13, diagnostics).

`eval.oracle` places keys knowing every pair's true quality, the future included. These rules sit
between that bound and the schedulers: like every scheduler they decide frame by frame without seeing
the future (k = the last key, i = the present frame), but each reads one signal of the present exactly,
and keys when it exceeds a calibrated threshold:

- `causal_oracle` ("gain"): the true gain of a key at i, Eq. 1's reward (§3.2) from the labels,
      gain(k, i) = mIoU(N(i)) - mIoU(W(N_feat(k), F(k, i)))        (per-frame mIoU, a fraction).
  RL's state (Conv6, KAR, LKD) can at best estimate this: where this rule gains little over the fixed
  interval, no present-frame policy can gain much (it can still anticipate, which a threshold on the
  present cannot, so this is not a strict bound).
- `causal_propagated` ("propagated"): only the propagated mask's own error, 1 - mIoU(propagated), from
  the labels: what knowing exactly where propagation fails (not where N succeeds) buys.
- `causal_agreement` ("agreement"): 1 - the pixel agreement of the propagated mask with N's own mask on
  i, DVSNet's regression target (§4.2), which needs no labels: what DVSNet with a perfect decision
  network would do, and the most any label-free estimate of "propagation has drifted from N" can tell.

Scores are mapped into (0, 1) so the sweeps' logit calibration (`eval.calibrate.KNOBS`) covers every
value: (1 + gain) / 2 (0.5 = any positive gain), 1 - mIoU, 1 - agreement. They read the labels or N on
every frame, so they are references, never competitors, and have no FPS.
"""
from eval.calibrate import in_band
from rl_scheduler.schedulers import KeyScheduler

# curve name -> (signal, score from the present frame's true numbers); the one list of the references
# (eval.calibrate's knob table and eval.sweeps' order name them too, to stay free of this module's Keras import)
REFERENCES = {
    "causal_oracle": ("gain", lambda o: 0.5 * (1.0 + float(o["key_miou"]) - float(o["pair_miou"]))),
    "causal_propagated": ("propagated", lambda o: 1.0 - float(o["pair_miou"])),
    "causal_agreement": ("agreement", lambda o: 1.0 - float(o["pair_agreement"])),
}
SIGNALS = {signal: name for name, (signal, _) in REFERENCES.items()}
BUDGET_GROUP = "per-video budget"   # split_by_video's group: each video at its own calibrated knob


class CausalOracle(KeyScheduler):
    """Keys when the score of `signal` (module docstring) exceeds the threshold. The observation must
    carry key_miou (N's mIoU on the frame), pair_miou and pair_agreement (of the mask propagated from the
    last key), as `eval.curves.run_decisions` gives a scheduler with `reads_labels`."""

    reads_labels = True

    def __init__(self, threshold=0.5, signal="gain"):
        if signal not in SIGNALS:
            raise ValueError(f"signal {signal!r}: one of {', '.join(SIGNALS)}")
        super().__init__(float(threshold))
        self.signal = signal
        self.name = SIGNALS[signal]
        self._score = REFERENCES[self.name][1]

    def score(self, observation):
        return self._score(observation)

    def is_key(self, score):
        return score > self.threshold


def split_by_video(caches, video_ids, targets, num_classes, signals=tuple(SIGNALS), tolerance=0.1, max_runs=8,
                   log=None, schedulers=None):
    """The fixed interval and each reference of `signals`, calibrated to `targets` per test video, on
    all of them pooled (one threshold across videos, as the sweeps run), and with a per-video budget:
    {group: {curve: [point]}}, group = a video id, "pooled" or BUDGET_GROUP, points as eval.curves'
    (measured, `calibrated` flags). Pooled, a rule can spend keys on the video where they buy least; per
    video, it shows what each signal knows within a video; the budget group runs every video at its own
    calibrated threshold and pools the result, the key budget per video that the fixed interval and RL's
    KAR limit (§3.2) keep. schedulers: more {name: knob -> KeyScheduler} calibrated the same way (the
    workdir's RL policy, whose per-video budget is what budget mode, `segment_video --target_aki`, holds)."""
    from eval.curves import trace_scheduler
    from rl_scheduler.schedulers import make_scheduler

    makers = {"fixed": lambda k: make_scheduler("fixed", threshold=int(k))}
    makers.update({SIGNALS[s]: (lambda t, s=s: CausalOracle(threshold=t, signal=s)) for s in signals})
    makers.update(schedulers or {})
    groups = [(str(v), [c]) for v, c in zip(video_ids, caches)] + [("pooled", list(caches))]
    out = {}
    for group, members in groups:
        out[group] = {}
        for name, make in makers.items():
            changes = {"high": float(max(c.num_frames for c in members))} if name == "fixed" else None
            entries, _, runs = trace_scheduler(name, make, members, targets, num_classes, tolerance=tolerance,
                                               max_runs=max_runs, knob_changes=changes)
            out[group][name] = [point for point, _ in entries]
            if log:
                log(f"{group} {name}: {runs} runs; " + ", ".join(
                    f"AKI {p['aki']:.1f} -> {p['miou']:.2f}" for p in out[group][name]))
    per_video = [out[str(v)] for v in video_ids]
    out[BUDGET_GROUP] = {name: [p for p in (_budget_point(caches, make, [curves[name] for curves in per_video], t,
                                                          num_classes, tolerance) for t in targets) if p]
                         for name, make in makers.items()}
    return out


def _budget_point(caches, make, curves, target, num_classes, tolerance):
    """One measured run over all `caches`, each video at the knob of its own calibrated point at `target`
    (curves: one per video); None where a video has none. mIoU from the summed confusions, AKI = all
    frames / all keys (within the band, since every video's AKI is)."""
    from eval import metrics
    from eval.curves import point_at_target, run_decisions

    chosen = [point_at_target(points, target, tolerance) for points in curves]
    if any(p is None for p in chosen):
        return None
    runs = [run_decisions(cache, make(p["threshold"]), num_classes) for cache, p in zip(caches, chosen)]
    aki = metrics.aki([r["keys"] for r in runs])
    return dict(aki=aki, miou=100.0 * metrics.mean_iou(sum(r["confusion"] for r in runs)), fps=None,
                thresholds=[p["threshold"] for p in chosen], target_aki=float(target),
                calibrated=bool(in_band(aki, target, tolerance)))


def split_markdown(split, tolerance=0.1):
    """One row per group and target: mIoU (measured AKI) of fixed and each reference, and each reference
    minus fixed; "-" where the calibration missed the band (never interpolated)."""
    from eval.curves import point_at_target

    names = [n for n in list(REFERENCES) + sorted({n for curves in split.values() for n in curves} - set(REFERENCES))
             if n != "fixed" and any(n in curves for curves in split.values())]
    header = ["group", "target AKI", "fixed"] + names + [f"{n} - fixed" for n in names]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for group, curves in split.items():
        targets = sorted({p["target_aki"] for points in curves.values() for p in points})
        for t in targets:
            got = {n: point_at_target(curves.get(n, []), t, tolerance) for n in ["fixed"] + names}
            cell = lambda p: "-" if p is None else f"{p['miou']:.2f} ({p['aki']:.1f})"  # noqa: E731
            diff = lambda p: "-" if p is None or got["fixed"] is None else f"{p['miou'] - got['fixed']['miou']:+.2f}"  # noqa: E731
            lines.append("| " + " | ".join([group, f"{t:g}", cell(got["fixed"])] + [cell(got[n]) for n in names]
                                           + [diff(got[n]) for n in names]) + " |")
    return "\n".join(lines)
