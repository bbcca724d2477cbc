"""The paper's figures as PNG files (matplotlib, Agg) and Table 1 as markdown (§4).

- Fig. 3: RL training, per KAR limit: mean return over training; the FC3 weights of KAR and LKD.
- Fig. 4: mIoU against AKI and against FPS, every scheduler; the oracle dashed and the causal references
  dotted (references that read the labels, never competitors).
- Fig. 6: density of consecutive key intervals (CKI) at one AKI.
- Fig. 7: key frames and per-frame mIoU along one test video (RL, fixed interval, DVSNet).
- Fig. 8: masks on non-key frames (frame, ground truth, predictions).

`make_figures(figures_dir, workdir)` reads a reproduce workdir (WORKSPACE.md):
`checkpoints/rl_eta*/history.json` (rl_scheduler.train: one dict per update with mean_return,
key_ratio, entropy, kar_weight, lkd_weight, episodes), `results.json` (`curves`, `table1`) and the
sweeps' `sweeps/points.json` and `sweeps/fig8_samples.npz` (eval.sweeps.run_sweeps). Each figure
function also works on plain data for other callers.
"""
import glob
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from deeplab_face import atomic  # noqa: E402
from deeplab_face.segmentation_metrics import fmt  # noqa: E402
from eval import metrics  # noqa: E402

COLOURS = {"rl": "tab:red", "dvsnet": "tab:blue", "flow_magnitude": "tab:green", "fixed": "tab:orange",
           "random": "tab:gray"}
LABELS = {"rl": "RL (ours)", "dvsnet": "DVSNet", "flow_magnitude": "flow magnitude", "fixed": "DFF fixed",
          "random": "DFF random"}
# a reference, never a competitor (DESIGN.md); a bound only on its candidate grid (eval.oracle)
ORACLE_LABEL = "oracle (best placement on a grid)"
# eval.causal_oracle: keys on the present frame's true gain; a reference too (no FPS)
REFERENCE_STYLES = {"oracle": dict(color="k", ls="--", marker=".", ms=5, lw=1.2, label=ORACLE_LABEL),
                    "causal_oracle": dict(color="0.45", ls=":", marker="x", ms=4, lw=1.2,
                                          label="causal oracle: true gain of a key now"),
                    "causal_propagated": dict(color="tab:purple", ls=":", marker="+", ms=5, lw=1.0,
                                              label="causal: true propagated mIoU"),
                    "causal_agreement": dict(color="tab:cyan", ls=":", marker="+", ms=5, lw=1.0,
                                             label="causal: exact DVSNet target (agreement with N)")}
DPI = 110


def _save(fig, path):
    atomic.check_output_dir(os.path.dirname(os.path.abspath(path)))
    fig.tight_layout()
    with atomic.replacing(path, suffix=os.path.splitext(path)[1]) as tmp:
        fig.savefig(tmp, dpi=DPI)
    plt.close(fig)
    return path


def fig3_training(histories, path):
    """histories: {kar_limit: [history.json rows]}; rows: mean return; key ratio (solid) and
    completion rate (dashed); entropy; the FC3 weights of KAR and LKD on P(key)."""
    fig, axes = plt.subplots(4, 1, figsize=(7, 10), sharex=True)
    for n, (eta, rows) in enumerate(sorted(histories.items())):
        x = [r.get("episodes", r.get("update", i + 1)) for i, r in enumerate(rows)]
        colour = plt.cm.viridis(n / max(len(histories) - 1, 1))
        axes[0].plot(x, [r["mean_return"] for r in rows], color=colour, label=f"KAR limit {eta:g}")
        axes[1].plot(x, [r["key_ratio"] for r in rows], color=colour, label=f"key ratio, limit {eta:g}")
        axes[1].plot(x, [r.get("completed", np.nan) for r in rows], color=colour, ls="--",
                     label=f"completion rate, limit {eta:g}")
        axes[1].axhline(eta, color=colour, lw=0.5, ls=":")
        axes[2].plot(x, [r["entropy"] for r in rows], color=colour, label=f"KAR limit {eta:g}")
        axes[3].plot(x, [r["kar_weight"] for r in rows], color=colour, label=f"KAR weight, limit {eta:g}")
        axes[3].plot(x, [r["lkd_weight"] for r in rows], color=colour, ls="--",
                     label=f"LKD weight, limit {eta:g}")
    axes[0].set_ylabel("mean return")
    axes[0].set_title("RL training")
    axes[1].set_ylabel("fraction")
    axes[2].set_ylabel("entropy (nats)")
    axes[3].set_ylabel("FC3 weight on P(key)")
    axes[3].set_xlabel("episodes")
    axes[3].axhline(0.0, color="k", lw=0.5)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def _draw_curve(ax, points, x, style, hollow_misses=True):
    """One scheduler's points joined in AKI order; uncalibrated points (a missed target's nearest
    measurement) drawn hollow."""
    points = sorted(points, key=lambda p: p["aki"])
    ax.plot([p[x] for p in points], [p["miou"] for p in points], **style)
    misses = [p for p in points if p.get("calibrated") is False]
    if misses and hollow_misses:
        ax.plot([p[x] for p in misses], [p["miou"] for p in misses], ls="none", marker=style.get("marker", "o"),
                ms=7, mfc="white", mec=style.get("color"), zorder=3)


def fig4_curves(curves, path, rl_policies=None):
    """curves: results.json `curves`; left: mIoU vs AKI (log), right: mIoU vs FPS. The oracle is drawn
    dashed on the AKI panel and the causal references dotted (they read labels: no FPS); hollow
    markers are points whose knob missed its target AKI. rl_policies: {kar_limit: points} (sweeps.json), each RL policy's own curve,
    drawn thin behind `curves["rl"]` (the best policy per target)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    names = [n for n in COLOURS if curves.get(n)] + [n for n in curves
                                                     if n not in COLOURS and n not in REFERENCE_STYLES]
    for n, (eta, points) in enumerate(sorted((rl_policies or {}).items(), key=lambda e: float(e[0]))):
        style = dict(color=COLOURS["rl"], marker="sd^v"[n % 4], ms=3, lw=0.8, ls=":", alpha=0.6,
                     label=f"{LABELS['rl']}, KAR limit {float(eta):g}")
        _draw_curve(left, points, "aki", style, hollow_misses=False)
    for name in names:
        points = curves[name]
        style = dict(color=COLOURS.get(name), marker="o", ms=4, label=LABELS.get(name, name))
        _draw_curve(left, points, "aki", style)
        if all(p.get("fps") for p in points):
            _draw_curve(right, points, "fps", style)
    for name, style in REFERENCE_STYLES.items():
        if curves.get(name):
            _draw_curve(left, curves[name], "aki", style)
    left.set_xscale("log")
    left.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    left.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))   # 2, 5, 10 rather than 2x10^0
    left.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    left.set_xlabel("average key interval (AKI)")
    right.set_xlabel("frames per second (model time)")
    for ax in (left, right):
        ax.set_ylabel("mIoU (%)")
        ax.grid(alpha=0.3, which="both")
    left.legend(fontsize=7)
    return _save(fig, path)


def fig6_cki(intervals, aki, path):
    """intervals: {scheduler: consecutive key intervals (eval.metrics)} at one AKI; their density."""
    fig, ax = plt.subplots(figsize=(7, 4))
    longest = max([int(np.max(v)) for v in intervals.values() if len(v)] + [2])
    bins = np.unique(np.geomspace(1, longest + 1, 25).astype(int))
    for name, values in intervals.items():
        if len(values):
            ax.hist(values, bins=bins, density=True, histtype="step", lw=1.8, color=COLOURS.get(name),
                    label=f"{LABELS.get(name, name)} (AKI {np.mean(values):.0f})")
    ax.set_xscale("log")
    ax.set_xlabel("interval between consecutive keys (frames)")
    ax.set_ylabel("density")
    ax.set_title(f"CKI density near AKI {aki:.0f}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def fig7_timeline(runs, path, video=""):
    """runs: {scheduler: (key indices, per-frame mIoU (fraction))} along one video."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    for row, (name, (keys, frame_miou)) in enumerate(runs.items()):
        colour = COLOURS.get(name)
        top.plot(100.0 * np.asarray(frame_miou), color=colour, lw=1,
                 label=f"{LABELS.get(name, name)} (AKI {len(frame_miou) / max(len(keys), 1):.1f})")
        bottom.vlines(keys, row + 0.1, row + 0.9, color=colour, lw=1.2)
    top.set_ylabel("per-frame mIoU (%)")
    top.set_title(f"test video {video}".strip())
    top.grid(alpha=0.3)
    top.legend(fontsize=8)
    bottom.set_yticks([r + 0.5 for r in range(len(runs))], [LABELS.get(n, n) for n in runs], fontsize=8)
    bottom.set_xlabel("frame")
    bottom.set_title("key frames", fontsize=9)
    return _save(fig, path)


def fig8_masks(samples, path):
    """samples: fig8_samples.npz content: images, labels, frame_index, mask_<name>, is_key_<name>."""
    from deeplab_face.data.masks import overlay

    names = [k[len("mask_"):] for k in samples if k.startswith("mask_")]
    rows, cols = len(samples["images"]), 2 + len(names)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.4 * rows), squeeze=False)
    for r in range(rows):
        image = samples["images"][r]
        panels = [("frame", image), ("ground truth", overlay(image, samples["labels"][r]))]
        for name in names:
            key = bool(samples[f"is_key_{name}"][r])
            panels.append((LABELS.get(name, name) + (" (key)" if key else ""), overlay(image, samples[f"mask_{name}"][r])))
        for c, (title, picture) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(picture)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title if c else f"frame {int(samples['frame_index'][r])}", fontsize=8)
    return _save(fig, path)


def table1_markdown(rows):
    """Table 1 rows (results.json `table1`: model, scales, miou %, fps) as a markdown table."""
    lines = ["| model | eval scales | mIoU (%) | FPS |", "|---|---|---|---|"]
    for row in rows:
        scales = ", ".join(f"{s:g}" for s in row.get("scales") or []) or "N/A"
        miou, fps = fmt(row.get("miou")), fmt(row.get("fps"), ".1f")
        lines.append(f"| {row['model']} | {scales} | {miou} | {fps} |")
    return "\n".join(lines) + "\n"


def _read_json(path):
    """The file's JSON, None when it is missing; a corrupt file is a DataError naming it."""
    return atomic.read_json(path, None, advice="delete it and run the stage that writes it again")


def read_histories(workdir):
    """{kar_limit: rows} of every checkpoints/rl_eta<limit>/history.json in `workdir`."""
    histories = {}
    for path in glob.glob(os.path.join(workdir, "checkpoints", "rl_eta*", "history.json")):
        match = re.search(r"rl_eta([0-9.eE+-]+)$", os.path.dirname(path))
        rows = _read_json(path)
        if match and rows:
            histories[float(match.group(1))] = rows
    return histories


def make_figures(figures_dir, workdir, log=print):
    """Every figure whose inputs exist in `workdir`; returns {"figures": [file names], "missing": [...]}."""
    os.makedirs(figures_dir, exist_ok=True)
    written, missing = [], []

    def out(name):
        written.append(name)
        return os.path.join(figures_dir, name)

    histories = read_histories(workdir)
    if histories:
        fig3_training(histories, out("fig3_rl_training.png"))
    else:
        missing.append("fig3: no checkpoints/rl_eta*/history.json")
    results = _read_json(os.path.join(workdir, "results.json")) or {}
    sweep = _read_json(os.path.join(workdir, "sweeps", "sweeps.json")) or {}
    curves = results.get("curves") or sweep.get("curves")
    if curves:
        rl_policies = (results.get("sweeps") or {}).get("rl_policies") or sweep.get("rl_policies")
        fig4_curves(curves, out("fig4_aki_fps_miou.png"), rl_policies)
    else:
        missing.append("fig4: no curves in results.json")
    points = _read_json(os.path.join(workdir, "sweeps", "points.json"))
    if points:
        records, chosen = points["records"], points["chosen"]
        intervals = {n: metrics.consecutive_key_intervals(
            [metrics.key_flags(k, t) for k, t in zip(records[n][i]["keys"], points["frames_per_video"])])
            for n, i in chosen.items()}
        fig6_cki(intervals, points["figure_aki"], out("fig6_cki_density.png"))
        runs = {n: (records[n][chosen[n]]["keys"][0], records[n][chosen[n]]["frame_miou"])
                for n in ("rl", "fixed", "dvsnet") if n in chosen}
        fig7_timeline(runs, out("fig7_keys_along_video.png"), points.get("figure_video", ""))
    else:
        missing.append("fig6, fig7: no sweeps/points.json")
    samples_path = os.path.join(workdir, "sweeps", "fig8_samples.npz")
    if os.path.exists(samples_path):
        with np.load(samples_path) as samples:
            fig8_masks(dict(samples), out("fig8_nonkey_masks.png"))
    else:
        missing.append("fig8: no sweeps/fig8_samples.npz")
    if results.get("table1"):
        atomic.write_text(os.path.join(figures_dir, "table1.md"), table1_markdown(results["table1"]))
    for line in missing:
        log(f"figures: skipped {line}")
    log(f"figures: wrote {', '.join(written) or 'nothing'} to {figures_dir}")
    return {"figures": written, "missing": missing}

