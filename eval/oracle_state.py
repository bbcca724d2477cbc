"""RL with an oracle state: is the learned scheduler limited by its training or by what its state knows?

    python -m eval.oracle_state --workdir=runs/demo [--target_akis=5,10,25,50,100]

Reads a finished `eval.reproduce` workdir and trains the RL policy again, with the same hyperparameters,
pair tables and videos as its RL stage (`checkpoints/rl_eta*/config.json`), but with every (k, i) pair's
Conv6 tap replaced by the pair's true gain of a key now, Eq. 1's reward (§3.2) from the labels:

    gain(k, i) = mIoU(N(i)) - mIoU(W(N_feat(k), F(k, i)))     (broadcast over the tap's channels)

(`feature_norm=standardize`, so the policy learns the gain's scale). The policy is then swept on the test
videos like RL (tau calibrated to each target AKI, every point measured, a miss is "-"), with the same
oracle state, beside the fixed interval and the workdir's own RL (Conv6 state, results.json). Writes
`W/checkpoints/rl_gain_state/` (a resumable stage), `W/oracle_state.json` and `W/oracle_state.md`.

A reference, never a scheduler: it reads the labels at test time. If it beats the fixed interval where the
Conv6 policy does not, REINFORCE turns state information into mIoU on these videos, and the missing piece
is a state (F's Conv6) from which the gain can be predicted; `eval.causal_oracle`'s rule on the same signal
is what a present-frame threshold makes of it.
"""
import glob
import os

import numpy as np
from absl import flags

from deeplab_face import atomic, cli
from deeplab_face.errors import ConfigError
from eval.workdir import load_finished_run, parse_target_akis, require_finished

STAGE = "rl_gain_state"
TAPS = ("conv6", "conv6_1")
# Stage-record keys that are not train_policy's arguments
_NOT_HPARAMS = ("prepared_dir", "segmenter_dir", "flownet_dir", "train_videos", "val_videos", "flow_resolution")


class GainStateCache:
    """A VideoCache whose pair entries carry the true gain in place of the Conv6 taps (module doc);
    everything else is the wrapped cache's."""

    def __init__(self, cache):
        self.cache = cache

    def __getattr__(self, name):
        return getattr(self.cache, name)

    @property
    def num_frames(self):
        return self.cache.num_frames

    def pair(self, k, i):
        entry = self.cache.pair(k, i)
        gain = float(self.cache.key(i).miou) - float(entry.miou)
        return entry._replace(**{t: np.full_like(getattr(entry, t), gain) for t in TAPS
                                 if getattr(entry, t) is not None})


def _rl_stage(checkpoints):
    """(stage dir, its config) of the workdir's RL stage (the lowest KAR limit when there are several)."""
    found = sorted(d for d in glob.glob(os.path.join(checkpoints, "rl_eta*"))
                   if os.path.exists(os.path.join(d, "DONE")))
    if not found:
        raise ConfigError(f"--workdir: no finished RL stage (rl_eta*/DONE) in {checkpoints}")
    return found[0], atomic.read_json(os.path.join(found[0], "config.json"))


def oracle_state(workdir, target_akis=(5, 10, 25, 50, 100), max_calibration_runs=8, aki_tolerance=0.1, log=print):
    """Trains (or resumes) the gain-state policy and sweeps it; writes W/oracle_state.json / .md and returns
    {"rl_gain_state": [point], "fixed": [point], "rl": [point], "training": {...}}."""
    from eval.curves import point_at_target, trace_scheduler
    from eval.sweeps import stage_option
    from rl_scheduler import load_policy, pair_tables
    from rl_scheduler.cache import load_video_caches
    from rl_scheduler.policy_training import train_policy
    from rl_scheduler.schedulers import make_scheduler, policy_history_options

    rl_dir, rl_config = _rl_stage(require_finished(workdir))   # before any model is loaded
    checkpoints, dff, test, _ = load_finished_run(workdir)
    training = rl_config["training"]
    results = atomic.read_json(os.path.join(workdir, "results.json"), default={})
    flow_resolution = stage_option(os.path.join(checkpoints, "flownet"), "flow_resolution", "full")
    num_classes = int(dff.segmenter.output_shape[-1])
    prepared = os.path.join(workdir, "prepared")

    hparams = {k: v for k, v in training.items() if k not in _NOT_HPARAMS}
    hparams.update(feature_norm="standardize", verbose=1 if log is print else 0)   # the training's progress bar
    tap, horizon = hparams["deviation_tap"], int(hparams["credit_horizon"])
    train_ids, val_ids = [str(v) for v in training["train_videos"]], [str(v) for v in training["val_videos"]]
    caches = dict(zip(train_ids + val_ids, load_video_caches(
        dff, prepared, train_ids + val_ids, num_classes, keep_masks=False, keep_taps=(tap,),
        key_mask_capacity=4 * int(hparams["episode_length"]))))
    pair_tables.attach_tables(caches, os.path.join(workdir, "pair_tables"), horizon, (tap,), flow_resolution, log=log)
    stage_dir = os.path.join(checkpoints, STAGE)
    log(f"oracle_state: RL as {os.path.basename(rl_dir)} (KAR limit {training['kar_limit']:g}), state = true gain")
    trained = train_policy(stage_dir, [GainStateCache(caches[v]) for v in train_ids],
                           [GainStateCache(caches[v]) for v in val_ids], **hparams)   # resumes a killed run
    policy = load_policy(stage_dir)
    history = policy_history_options(policy)

    targets = [float(t) for t in target_akis]
    say = lambda line: log(f"  {line}")  # noqa: E731
    gain_entries, _, runs = trace_scheduler(
        "rl", lambda t: make_scheduler("rl", policy=policy, threshold=t, **history), [GainStateCache(c) for c in test],
        targets, num_classes, tolerance=aki_tolerance, max_runs=max_calibration_runs,
        extra={"kar_limit": float(training["kar_limit"])}, log=say)
    fixed_entries, _, _ = trace_scheduler("fixed", lambda k: make_scheduler("fixed", threshold=int(k)), test, targets,
                                          num_classes, tolerance=aki_tolerance,
                                          knob_changes={"high": float(max(c.num_frames for c in test))})
    rl_curve = (results.get("curves") or {}).get("rl", [])
    out = {"rl_gain_state": [p for p, _ in gain_entries], "fixed": [p for p, _ in fixed_entries],
           "rl": [p for p in (point_at_target(rl_curve, t, aki_tolerance) for t in targets) if p],
           "training": {"rl_stage": os.path.basename(rl_dir), "runs": runs,
                        "best_val_quality": trained["best_val_quality"],
                        "val_fixed_quality": trained["val_fixed_quality"]}}
    table = oracle_state_markdown(out, targets, aki_tolerance)
    atomic.write_json(os.path.join(workdir, "oracle_state.json"), out)
    atomic.write_text(os.path.join(workdir, "oracle_state.md"), table + "\n")
    log(table)
    return out


def oracle_state_markdown(out, targets, tolerance=0.1):
    """One row per target: mIoU (measured AKI) of fixed, RL (Conv6) and RL (gain state), and each RL minus
    fixed; "-" where a curve has no calibrated point there (never interpolated)."""
    from eval.curves import point_at_target

    names = ("fixed", "rl", "rl_gain_state")
    lines = ["| target AKI | fixed | rl (Conv6 state) | rl (true-gain state) | rl - fixed | gain state - fixed |",
             "|---|---|---|---|---|---|"]
    for t in targets:
        got = {n: point_at_target(out.get(n, []), t, tolerance) for n in names}
        cell = lambda p: "-" if p is None else f"{p['miou']:.2f} ({p['aki']:.1f})"  # noqa: E731
        diff = lambda p: ("-" if p is None or got["fixed"] is None  # noqa: E731
                          else f"{p['miou'] - got['fixed']['miou']:+.2f}")
        lines.append(f"| {t:g} | " + " | ".join([cell(got[n]) for n in names] + [diff(got["rl"]),
                                                                                diff(got["rl_gain_state"])]) + " |")
    return "\n".join(lines)


def define_flags():
    flags.DEFINE_string("workdir", None, "A finished eval.reproduce workdir.")
    flags.DEFINE_list("target_akis", ["5", "10", "25", "50", "100"], "Target AKIs.")
    flags.DEFINE_integer("max_calibration_runs", 8, "Runs per target at most.", lower_bound=1)
    flags.DEFINE_float("aki_tolerance", 0.1, "A point counts within +- this fraction of its target.",
                       lower_bound=0.01, upper_bound=0.5)


def main(argv):
    cli.check_command_line(argv, required=("workdir",))
    FLAGS = flags.FLAGS
    targets = parse_target_akis(FLAGS.target_akis)
    oracle_state(FLAGS.workdir, targets, FLAGS.max_calibration_runs, FLAGS.aki_tolerance)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
