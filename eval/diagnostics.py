"""The report's diagnostics: does the policy learn, and what could it know (issue 13, item 1).

Reads what the stages returned (results.json `training`) and their history.json files:
- RL training curves in numbers: return, key ratio, completion rate, entropy, key price, and the
  histogram of the last-key distances the training states visited (first vs last updates);
- the policy probe: P(key) against LKD and KAR on held-out states, and its spread across Conv6
  inputs at a fixed LKD (rl_scheduler.probe.policy_probe);
- the reward probe: R^2 of a linear probe from the deviation features to the per-pair reward;
- F's motion pretraining (EPE) and the DVSNet decision network's fit (MAE, correlation).
"""
import json
import os

import numpy as np

from rl_scheduler.reinforce import LKD_BINS


def _read_history(workdir, stage):
    path = os.path.join(workdir, "checkpoints", stage, "history.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return []


def _mean(rows, key):
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def _fmt(value, digits=3):
    return "n/a" if value is None else f"{value:.{digits}f}"


def training_summary(history, span=5):
    """First and last `span` updates: mean of each scalar, and the summed LKD histograms."""
    first, last = history[:span], history[-span:]
    keys = ("mean_return", "key_ratio", "completed", "entropy", "key_price", "mean_lkd", "max_lkd")
    out = {f"{k}_first": _mean(first, k) for k in keys}
    out.update({f"{k}_last": _mean(last, k) for k in keys})
    for name, rows in (("first", first), ("last", last)):
        counts = [r["lkd_histogram"] for r in rows if r.get("lkd_histogram")]
        out[f"lkd_histogram_{name}"] = np.sum(counts, axis=0).tolist() if counts else None
    validated = [r for r in history if r.get("val_quality") is not None]
    if validated:
        # as rl_scheduler.train keeps it: a validation above the budget ranks below any within it
        best = max(validated, key=lambda r: r["val_quality"] - (1.0 - r.get("val_within_budget", 1.0)))
        out.update(best_update=best["update"], best_val_quality=best["val_quality"],
                   best_val_tau=best.get("val_tau"), best_val_key_ratio=best.get("val_key_ratio"),
                   val_fixed_quality=best.get("val_fixed_quality"))
    out["updates"] = len(history)
    return out


def rl_diagnostics(workdir, training):
    """{stage: {"summary", "probe"}} for every rl_eta<eta> stage in `training` (results.json)."""
    out = {}
    for stage in sorted(s for s in training if s.startswith("rl_eta")):
        out[stage] = dict(summary=training_summary(_read_history(workdir, stage)),
                          probe=(training[stage] or {}).get("probe"),
                          operating_threshold=(training[stage] or {}).get("operating_threshold"))
    return out


def _histogram_row(counts):
    total = sum(counts) or 1
    return " | ".join(f"{100.0 * c / total:.0f} %" for c in counts)


def rl_markdown(diagnostics):
    """The report section for `rl_diagnostics`."""
    if not diagnostics:
        return "No RL stage ran."
    parts = []
    bins = [f"{lo}-{hi - 1}" if hi - lo > 1 else f"{lo}" for lo, hi in zip(LKD_BINS, LKD_BINS[1:])] + [f">={LKD_BINS[-1]}"]
    for stage, d in diagnostics.items():
        s, probe = d["summary"], d.get("probe") or {}
        parts.append(f"### {stage} (operating threshold tau = {_fmt(d.get('operating_threshold'))})")
        parts.append("| training (first 5 vs last 5 updates) | first | last |\n|---|---|---|\n" + "\n".join(
            f"| {label} | {_fmt(s.get(key + '_first'))} | {_fmt(s.get(key + '_last'))} |"
            for label, key in (("mean return", "mean_return"), ("key ratio", "key_ratio"),
                               ("completion rate", "completed"), ("entropy (nats)", "entropy"),
                               ("key price (lambda)", "key_price"), ("mean LKD of visited states", "mean_lkd"),
                               ("max LKD visited", "max_lkd"))))
        if s.get("lkd_histogram_first") and s.get("lkd_histogram_last"):
            parts.append("LKD of the states training visited:\n\n| updates | " + " | ".join(bins) + " |\n|---|"
                         + "---|" * len(bins) + f"\n| first 5 | {_histogram_row(s['lkd_histogram_first'])} |"
                         + f"\n| last 5 | {_histogram_row(s['lkd_histogram_last'])} |")
        if s.get("best_val_quality") is not None:
            parts.append(f"Best validation (update {s['best_update']} of {s['updates']}): mean per-frame mIoU "
                         f"{100 * s['best_val_quality']:.2f} at tau {_fmt(s.get('best_val_tau'))} (key ratio "
                         f"{_fmt(s.get('best_val_key_ratio'))}); fixed interval at the budget's rate on the same "
                         f"episodes: {100 * s['val_fixed_quality']:.2f}.")
        policy = probe.get("policy")
        if policy:
            parts.append("Policy probe on held-out states (KAR = 0; spread = std of P(key) across "
                         f"{policy['samples']} Conv6 inputs at that LKD):\n\n| LKD | "
                         + " | ".join(str(v) for v in policy["lkd"]) + " |\n|---|" + "---|" * len(policy["lkd"])
                         + "\n| mean P(key) | " + " | ".join(f"{v:.3f}" for v in policy["p_key_mean"]) + " |"
                         + "\n| spread | " + " | ".join(f"{v:.3f}" for v in policy["p_key_std"]) + " |")
            parts.append(f"At LKD {policy['kar_probe_lkd']}, P(key) for KAR = "
                         + ", ".join(f"{f:g} x eta: {p:.3f}" for f, p in zip(policy["kar_fraction"],
                                                                               policy["p_key_by_kar"]))
                         + f". Mean spread across Conv6 inputs: {policy['spread']:.4f}.")
            if policy.get("p_key_by_motion"):
                parts.append(f"Motion input (flow change since the key, in training std; LKD {policy['kar_probe_lkd']}, "
                             "KAR = eta / 2): P(key) " + ", ".join(
                                 f"{c:+g}: {p:.3f}" for c, p in zip(policy["motion_change"], policy["p_key_by_motion"]))
                             + ".")
        reward = probe.get("reward")
        if reward:
            parts.append(f"Reward probe (ridge regression to Eq. 1's per-pair gain q(k, i), held-out R^2 over "
                         f"{reward['test_pairs']} pairs): Conv6 features {_fmt(reward['r2_features'])}, the gap "
                         f"log(i - k) alone {_fmt(reward['r2_gap'])}, both {_fmt(reward['r2_features_and_gap'])}"
                         + (f"; the pair's mean flow magnitude with the gap "
                            f"{_fmt(reward['r2_flow_magnitude_and_gap'])}"
                            if reward.get("r2_flow_magnitude_and_gap") is not None else "")
                         + " (ridge penalties chosen on the training pairs).")
    return "\n\n".join(parts)


def stage_markdown(training):
    """F's pretraining EPE and the DVSNet fit, where those stages ran."""
    parts = []
    pre = training.get("flownet_pretrain") or {}
    if pre.get("val_epe_after") is not None:
        face = (f"; on synthetic face pairs {_fmt(pre.get('face_epe_before'), 2)} -> {_fmt(pre.get('face_epe_after'), 2)} "
                f"px (zero flow: {_fmt(pre.get('face_epe_zero'), 2)})" if pre.get("face_epe_after") is not None else "")
        parts.append(f"F's motion pretraining: end-point error on held-out generated pairs "
                     f"{_fmt(pre.get('val_epe_before'), 2)} -> {_fmt(pre['val_epe_after'], 2)} px (zero flow: "
                     f"{_fmt(pre.get('val_epe_zero'), 2)}){face}.")
    dvs = training.get("dvsnet") or {}
    mae = dvs.get("best_val_mae", dvs.get("val_mae"))
    if mae is not None:
        extra = ", ".join(f"{label} {_fmt(dvs.get(key))}" for label, key in
                          (("constant-predictor MAE", "val_mae_constant"), ("Pearson r", "val_pearson"),
                           ("Spearman rho", "val_spearman")) if dvs.get(key) is not None)
        parts.append(f"DVSNet decision network: validation MAE {_fmt(mae)} points" + (f" ({extra})" if extra else "") + ".")
    return "\n\n".join(parts)
