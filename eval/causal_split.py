"""Per test video and pooled: the fixed interval against the causal references (eval.causal_oracle).

    python -m eval.causal_split --workdir=runs/demo [--target_akis=5,10,25,50,100]

Reads a finished `eval.reproduce` workdir (its prepared test videos, N and F), calibrates the fixed
interval and each reference (true gain, true propagated mIoU, DVSNet's label-free agreement) to every
target AKI on each test video alone, on all of them pooled (one threshold) and with a per-video budget
(each video at its own threshold, pooled), and writes `W/causal_split.json` and `W/causal_split.md` (the
table it prints). It answers why the pooled sweeps look as they do: a rule that is right within each
video can still lose pooled by spending keys on the video where they buy least; the budget group is the
split of keys over videos that the fixed interval and RL's KAR limit keep. Every number is a measured
run; a target a rule cannot reach within the band is "-". With `--rl` the workdir's RL policy is calibrated
the same three ways: does RL lose on each video, or only by how the pooled threshold splits its keys?
"""
import os

from absl import flags

from deeplab_face import atomic, cli
from deeplab_face.errors import ConfigError
from eval.workdir import finished_rl_stage, load_finished_run, parse_target_akis, require_finished

DEFAULT_TARGETS = ("5", "10", "25", "50", "100")
# A single video's response to a threshold steps more than the pool's: with 8 runs, runs/demo_s5 left
# 011's agreement and 900's true propagated mIoU at AKI 5 outside the band; 12 reached both.
DEFAULT_MAX_RUNS = 12


def causal_split(workdir, videos=None, target_akis=(5, 10, 25, 50, 100), signals=("gain", "propagated", "agreement"),
                 aki_tolerance=0.1, max_calibration_runs=DEFAULT_MAX_RUNS, log=print, rl=False):
    """Writes W/causal_split.json and .md; returns {group: {curve: [point]}} (eval.causal_oracle.split_by_video).
    rl: also the workdir's RL policy (its lowest KAR limit), per video, pooled and with a per-video budget."""
    from eval.causal_oracle import SIGNALS, split_by_video, split_markdown

    checkpoints = require_finished(workdir)
    for signal in signals:
        if signal not in SIGNALS:
            raise ConfigError(f"--signals: {signal!r} is not one of {', '.join(SIGNALS)}")
    schedulers = {"rl": _rl_maker(checkpoints)} if rl else None
    _, dff, caches, videos = load_finished_run(workdir, videos)
    log(f"causal_split: N on every frame of {', '.join(videos)}")
    num_classes = int(dff.segmenter.output_shape[-1])
    split = split_by_video(caches, videos, [float(t) for t in target_akis], num_classes, tuple(signals),
                           aki_tolerance, max_calibration_runs, log=log, schedulers=schedulers)
    table = split_markdown(split, aki_tolerance)
    atomic.write_json(os.path.join(workdir, "causal_split.json"), split)
    atomic.write_text(os.path.join(workdir, "causal_split.md"), table + "\n")
    log(table)
    return split


def _rl_maker(checkpoints):
    """tau -> the workdir's RL scheduler (its lowest KAR limit's stage), as the sweeps build it."""
    from rl_scheduler import load_policy
    from rl_scheduler.schedulers import make_scheduler, policy_history_options

    policy = load_policy(finished_rl_stage(checkpoints)[0])
    history = policy_history_options(policy)
    return lambda tau: make_scheduler("rl", policy=policy, threshold=tau, **history)


def define_flags():
    flags.DEFINE_string("workdir", None, "A finished eval.reproduce workdir.")
    flags.DEFINE_list("videos", [], "Test video ids (default: results.json's test videos).")
    flags.DEFINE_list("target_akis", list(DEFAULT_TARGETS), "Target AKIs.")
    flags.DEFINE_list("signals", ["gain", "propagated", "agreement"], "eval.causal_oracle signals.")
    flags.DEFINE_float("aki_tolerance", 0.1, "A point counts within +- this fraction of its target.",
                       lower_bound=0.01, upper_bound=0.5)
    flags.DEFINE_integer("max_calibration_runs", DEFAULT_MAX_RUNS, "Runs per rule and target at most.",
                         lower_bound=1)
    flags.DEFINE_bool("rl", False, "Also the workdir's RL policy: per video, pooled, and with a per-video budget "
                      "(what budget mode holds).")


def main(argv):
    cli.check_command_line(argv, required=("workdir",))
    FLAGS = flags.FLAGS
    targets = parse_target_akis(FLAGS.target_akis)
    causal_split(FLAGS.workdir, FLAGS.videos, targets, FLAGS.signals, FLAGS.aki_tolerance, FLAGS.max_calibration_runs,
                 rl=FLAGS.rl)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
