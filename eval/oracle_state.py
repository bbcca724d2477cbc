"""RL with another state: is the learned scheduler limited by its training or by what its state knows?

    python -m eval.oracle_state --workdir=runs/demo [--state=gain] [--target_akis=5,10,25,50,100]

Reads a finished `eval.reproduce` workdir and trains the RL policy again, with the same hyperparameters,
pair tables and videos as its RL stage (`checkpoints/rl_eta*/config.json`), but with every (k, i) pair's
Conv6 tap replaced by the pair's true gain of a key now, Eq. 1's reward (§3.2) from the labels:

    gain(k, i) = mIoU(N(i)) - mIoU(W(N_feat(k), F(k, i)))     (broadcast over the tap's channels)

(`feature_norm=standardize`, so the policy learns the gain's scale). The policy is then swept on the test
videos like RL (tau calibrated to each target AKI, every point measured, a miss is "-"), with the same
oracle state, beside the fixed interval and the workdir's own RL (Conv6 state, results.json). Writes
`W/checkpoints/rl_gain_state/` (a resumable stage), `W/oracle_state.json` and `W/oracle_state.md`.

With `--state=gain` it is a reference, never a scheduler: it reads the labels at test time. If it beats the
fixed interval where the Conv6 policy does not, REINFORCE turns state information into mIoU on these videos,
and the missing piece is a state (F's Conv6) from which the gain can be predicted; `eval.causal_oracle`'s rule
on the same signal is what a present-frame threshold makes of it.

The label-free states ask whether a signal that a deployed scheduler could compute does as well (`STATES`):
`frame_difference` is mean |I_i - I_k| / 255, the pixel change since the key (no network; on the tiny demo's
validation video it predicts the gain with held-out ridge R^2 0.61 with log(gap), against 0.06 for Conv6:
`runs/demo_s6`, fitted on 008-009, scored on 010);
`relative_frame_difference` divides it by the video's running mean change between consecutive frames up to
frame i (causal), so that a video whose every frame moves more (a moving camera) is not keyed more for that
alone. Their stages and files carry the state's name (`stage_name`, `output_name`).
`flow_change` keeps Conv6 and adds F's flow magnitude since the key (less its first value) as a third expert
input (`motion_input=flow_change`): the deployable policy that reads F's motion, for an F that knows it
(`--config=tiny`).
"""
import abc
import os
import zlib

import numpy as np
from absl import flags

from deeplab_face import atomic, cli
from deeplab_face.errors import ConfigError
from eval.workdir import finished_rl_stage, load_finished_run, parse_target_akis, require_finished

TAPS = ("conv6", "conv6_1")
# Stage-record keys that are not train_policy's arguments
_NOT_HPARAMS = ("prepared_dir", "segmenter_dir", "flownet_dir", "train_videos", "val_videos", "flow_resolution")


class StateCache(abc.ABC):
    """A VideoCache whose pair entries carry one number per pair (`value`) in place of the Conv6 taps,
    broadcast over the tap's shape; everything else is the wrapped cache's. `video` names the video (it
    seeds the gain's noise); every state takes `gain_noise` so that all are built alike, and only
    `GainStateCache` uses it."""

    # train_policy options the state needs: a number broadcast over the tap is standardised per channel
    options = {"feature_norm": "standardize"}

    def __init__(self, cache, video="", gain_noise=0.0):
        self.cache, self.video = cache, str(video)

    def __getattr__(self, name):
        return getattr(self.cache, name)

    @property
    def num_frames(self):
        return self.cache.num_frames

    def pair(self, k, i):
        entry = self.cache.pair(k, i)
        value = self.value(int(k), int(i), entry)
        return entry._replace(**{t: np.full_like(getattr(entry, t), value) for t in TAPS
                                 if getattr(entry, t) is not None})

    @abc.abstractmethod
    def value(self, k, i, entry):
        """The state's number for the pair (k, i) whose plain entry is `entry`."""


class GainStateCache(StateCache):
    """The pair's true gain of a key now, Eq. 1's reward (§3.2), from the labels: key(i).miou - pair.miou,
    plus, with `gain_noise` > 0, a normal error of that standard deviation drawn once per (video, k, i): a
    state that predicts the gain only so well (`state_r2` measures how well)."""

    def __init__(self, cache, video="", gain_noise=0.0):
        super().__init__(cache, video)
        self.gain_noise, self._noise = float(gain_noise), {}
        self._seed = zlib.crc32(self.video.encode())

    def value(self, k, i, entry):
        gain = float(self.cache.key(i).miou) - float(entry.miou)
        if not self.gain_noise:
            return gain
        if (k, i) not in self._noise:
            self._noise[(k, i)] = self.gain_noise * float(np.random.default_rng([self._seed, k, i]).standard_normal())
        return gain + self._noise[(k, i)]


def _frame(cache, i):
    return np.asarray(cache.images[int(i)], np.float32)


class FrameDifferenceStateCache(StateCache):
    """Label-free: the mean absolute pixel change from the key frame k to frame i, in [0, 1]."""

    def __init__(self, cache, video="", gain_noise=0.0):
        super().__init__(cache, video)
        self._memo = {}

    def value(self, k, i, entry):
        if (k, i) not in self._memo:
            self._memo[(k, i)] = float(np.abs(_frame(self.cache, i) - _frame(self.cache, k)).mean()) / 255.0
        return self._memo[(k, i)]


class RelativeFrameDifferenceStateCache(FrameDifferenceStateCache):
    """Label-free: the frame difference since the key over the video's mean consecutive-frame difference up
    to frame i (what a deployed scheduler knows at i)."""

    def __init__(self, cache, video="", gain_noise=0.0):
        super().__init__(cache, video)
        steps = [0.0] + [float(np.abs(_frame(cache, j) - _frame(cache, j - 1)).mean()) / 255.0
                         for j in range(1, cache.num_frames)]
        self._running_mean = np.cumsum(steps) / np.maximum(np.arange(cache.num_frames), 1)

    def value(self, k, i, entry):
        return super().value(k, i, entry) / max(float(self._running_mean[i]), 1e-6)


class FlowChangeStateCache(StateCache):
    """Label-free and deployable: F's mean flow magnitude since the key less its value at the first frame
    after the key, m(k, i) - m(k, k + 1) (`motion_input=flow_change`, rl_scheduler/config.py). The policy
    keeps the workdir's Conv6 tap as it was trained and reads this as a third expert input, exactly as
    `segment_video` and `eval.export` run such a policy; `value` serves `state_r2` only."""

    options = {"motion_input": "flow_change"}

    def pair(self, k, i):
        return self.cache.pair(k, i)

    def value(self, k, i, entry):
        from rl_scheduler.environment import flow_change

        return flow_change(self.cache, k, i, entry)


STATES = {"gain": GainStateCache, "frame_difference": FrameDifferenceStateCache,
          "relative_frame_difference": RelativeFrameDifferenceStateCache, "flow_change": FlowChangeStateCache}
STATE_LABELS = {"gain": "true-gain state", "frame_difference": "frame-difference state",
                "relative_frame_difference": "relative frame-difference state",
                "flow_change": "Conv6 + flow-change input"}
STAGE = "rl_gain_state"   # the default state's stage


def _state_id(state, gain_noise=0.0):
    return f"{state}_noise{float(gain_noise):g}" if gain_noise else state


def stage_name(state, gain_noise=0.0):
    """W/checkpoints/<stage_name> of the policy trained with `state` (and the gain's noise)."""
    return f"rl_{_state_id(state, gain_noise)}_state"


def output_name(state, gain_noise=0.0):
    """W/<output_name>.json / .md of `state` (the exact gain's keeps the name the first version wrote)."""
    state_id = _state_id(state, gain_noise)
    return "oracle_state" if state_id == "gain" else f"oracle_state_{state_id}"


def state_r2(wrapped, pairs=600, max_gap=40, seed=0):
    """Squared correlation of the state's number with the true gain over `pairs` random (k, i) of the
    wrapped caches, gaps up to `max_gap`: how much of the gain the state predicts (1 for the exact gain)."""
    from rl_scheduler.probe import pair_loss, sample_pairs

    drawn = sample_pairs(wrapped, pairs, max_gap, np.random.default_rng([seed, 11]))
    values = [wrapped[c].value(k, i, wrapped[c].cache.pair(k, i)) for c, k, i in drawn]
    gains = [pair_loss(wrapped[c].cache, k, i) for c, k, i in drawn]
    return float(np.corrcoef(values, gains)[0, 1] ** 2) if np.std(values) > 0 and np.std(gains) > 0 else None


def oracle_state(workdir, target_akis=(5, 10, 25, 50, 100), max_calibration_runs=8, aki_tolerance=0.1, log=print,
                 state="gain", gain_noise=0.0):
    """Trains (or resumes) the policy with `state` (a name of `STATES`; the gain with `gain_noise`) and sweeps
    it; writes W/<output_name>.json / .md and returns {stage_name: [point], "fixed": [point], "rl": [point],
    "training": {..., "state_r2": {"validation", "test"}}}."""
    from eval.curves import point_at_target, trace_scheduler
    from eval.sweeps import stage_option
    from rl_scheduler import load_policy, pair_tables
    from rl_scheduler.cache import load_video_caches
    from rl_scheduler.policy_training import train_policy
    from rl_scheduler.schedulers import make_scheduler, policy_history_options

    if state not in STATES:
        raise ConfigError(f"--state: {state!r} is not one of {', '.join(STATES)}")
    if gain_noise and state != "gain":
        raise ConfigError(f"--gain_noise: {gain_noise:g} applies to --state=gain only, not {state}")
    rl_dir, rl_config = finished_rl_stage(require_finished(workdir))   # before any model is loaded
    stage, name = stage_name(state, gain_noise), output_name(state, gain_noise)
    wrap = lambda cache, video: STATES[state](cache, video, gain_noise)  # noqa: E731
    checkpoints, dff, test, test_ids = load_finished_run(workdir)
    training = rl_config["training"]
    results = atomic.read_json(os.path.join(workdir, "results.json"), default={})
    flow_resolution = stage_option(os.path.join(checkpoints, "flownet"), "flow_resolution", "full")
    num_classes = int(dff.segmenter.output_shape[-1])
    prepared = os.path.join(workdir, "prepared")

    hparams = {k: v for k, v in training.items() if k not in _NOT_HPARAMS}
    hparams.update(STATES[state].options, verbose=1 if log is print else 0)   # verbose: the training's progress bar
    tap, horizon = hparams["deviation_tap"], int(hparams["credit_horizon"])
    train_ids, val_ids = [str(v) for v in training["train_videos"]], [str(v) for v in training["val_videos"]]
    caches = dict(zip(train_ids + val_ids, load_video_caches(
        dff, prepared, train_ids + val_ids, num_classes, keep_masks=False, keep_taps=(tap,),
        key_mask_capacity=4 * int(hparams["episode_length"]))))
    pair_tables.attach_tables(caches, os.path.join(workdir, "pair_tables"), horizon, (tap,), flow_resolution, log=log)
    stage_dir = os.path.join(checkpoints, stage)
    log(f"oracle_state: RL as {os.path.basename(rl_dir)} (KAR limit {training['kar_limit']:g}), "
        f"state = {STATE_LABELS[state]}")
    trained = train_policy(stage_dir, [wrap(caches[v], v) for v in train_ids],
                           [wrap(caches[v], v) for v in val_ids], **hparams)   # resumes a killed run
    policy = load_policy(stage_dir)
    history = policy_history_options(policy)

    targets = [float(t) for t in target_akis]
    test_states = [wrap(c, v) for c, v in zip(test, test_ids)]
    r2 = {"validation": state_r2([wrap(caches[v], v) for v in val_ids], max_gap=horizon),
          "test": state_r2(test_states, max_gap=horizon)}
    log(f"oracle_state: R^2 of the state to the true gain: validation {r2['validation']}, test {r2['test']}")
    say = lambda line: log(f"  {line}")  # noqa: E731
    state_entries, _, runs = trace_scheduler(
        "rl", lambda t: make_scheduler("rl", policy=policy, threshold=t, **history), test_states,
        targets, num_classes, tolerance=aki_tolerance, max_runs=max_calibration_runs,
        extra={"kar_limit": float(training["kar_limit"])}, log=say)
    fixed_entries, _, _ = trace_scheduler("fixed", lambda k: make_scheduler("fixed", threshold=int(k)), test, targets,
                                          num_classes, tolerance=aki_tolerance,
                                          knob_changes={"high": float(max(c.num_frames for c in test))})
    rl_curve = (results.get("curves") or {}).get("rl", [])
    out = {stage: [p for p, _ in state_entries], "fixed": [p for p, _ in fixed_entries],
           "rl": [p for p in (point_at_target(rl_curve, t, aki_tolerance) for t in targets) if p],
           "training": {"rl_stage": os.path.basename(rl_dir), "runs": runs,
                        "best_val_quality": trained["best_val_quality"],
                        "val_fixed_quality": trained["val_fixed_quality"], "state_r2": r2}}
    table = oracle_state_markdown(out, targets, aki_tolerance, state, gain_noise)
    atomic.write_json(os.path.join(workdir, name + ".json"), out)
    atomic.write_text(os.path.join(workdir, name + ".md"), table + "\n")
    log(table)
    return out


def oracle_state_markdown(out, targets, tolerance=0.1, state="gain", gain_noise=0.0):
    """One row per target: mIoU (measured AKI) of fixed, RL (Conv6) and RL (`state`), and each RL minus
    fixed; "-" where a curve has no calibrated point there (never interpolated)."""
    from eval.curves import point_at_target

    names = ("fixed", "rl", stage_name(state, gain_noise))
    label = STATE_LABELS[state] + (f", noise {gain_noise:g}" if gain_noise else "")
    lines = [f"| target AKI | fixed | rl (Conv6 state) | rl ({label}) | rl - fixed | {label} - fixed |",
             "|---|---|---|---|---|---|"]
    for t in targets:
        got = {n: point_at_target(out.get(n, []), t, tolerance) for n in names}
        cell = lambda p: "-" if p is None else f"{p['miou']:.2f} ({p['aki']:.1f})"  # noqa: E731
        diff = lambda p: ("-" if p is None or got["fixed"] is None  # noqa: E731
                          else f"{p['miou'] - got['fixed']['miou']:+.2f}")
        lines.append(f"| {t:g} | " + " | ".join([cell(got[n]) for n in names] + [diff(got["rl"]),
                                                                                diff(got[names[2]])]) + " |")
    return "\n".join(lines)


def define_flags():
    flags.DEFINE_string("workdir", None, "A finished eval.reproduce workdir.")
    flags.DEFINE_enum("state", "gain", list(STATES), "What replaces Conv6 in the policy's state: the true gain "
                      "(a reference: reads the labels), a label-free pixel change since the key, or flow_change: Conv6 kept, "
                      "F's flow magnitude since the key added as an expert input (deployable).")
    flags.DEFINE_float("gain_noise", 0.0, "--state=gain: a normal error of this std (mIoU fraction) on each pair's "
                       "gain, fixed per pair: how well must a state predict the gain?", lower_bound=0.0)
    flags.DEFINE_list("target_akis", ["5", "10", "25", "50", "100"], "Target AKIs.")
    flags.DEFINE_integer("max_calibration_runs", 8, "Runs per target at most.", lower_bound=1)
    flags.DEFINE_float("aki_tolerance", 0.1, "A point counts within +- this fraction of its target.",
                       lower_bound=0.01, upper_bound=0.5)


def main(argv):
    cli.check_command_line(argv, required=("workdir",))
    FLAGS = flags.FLAGS
    targets = parse_target_akis(FLAGS.target_akis)
    oracle_state(FLAGS.workdir, targets, FLAGS.max_calibration_runs, FLAGS.aki_tolerance, state=FLAGS.state,
                 gain_noise=FLAGS.gain_noise)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
