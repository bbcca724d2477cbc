"""Train the RL key scheduler with REINFORCE (paper §3.2, §4.2): `python -m rl_scheduler.train`.

Episodes of T frames from random start frames of the scheduler-training videos,
M trials each, all episodes of an update as one batch, the KAR-limit stop rule, Eq. 1 or
Eq. 2 rewards (frame or span credit), 8 episodes per RMSProp update. Every
`--validate_every` updates the policy is run deterministically (key iff P(key) > tau) on
fixed validation episodes for every tau of `config.VALIDATION_TAUS` at once, and measured
at its operating point: the tau with the most keys within the budget (key ratio <= 1.1 eta).
The policy with the best mean per-frame mIoU there is kept; `final.weights.h5` is that
policy and `config.json` records its `operating_threshold` (the deployed tau).

Writes `<root>/tensorboard` (mean return, key ratio, entropy, KAR / LKD weights,
validation return; flushed every update), `<root>/ckpt` (resumable), `history.json` (one row per
update, rewritten after each, for Fig. 3), `best.weights.h5`, and finally `config.json`,
`final.weights.h5`, `DONE`.

`--strategy` (deeplab_face.distribute): the policy, its optimizer and the checkpoint are built under
the strategy's scope and each update's episodes are split over its replicas (rl_scheduler.reinforce);
only the chief writes the stage folder. Pair tables: rl_scheduler.pair_tables (filled beforehand in
parallel by its command, or here when missing). The loop itself is the library
`rl_scheduler.policy_training.train_policy`; this command is its stage function and flags.
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from deeplab_face import cli  # noqa: E402
from deeplab_face.distribute import define_strategy_flag, is_chief, strategy_of  # noqa: E402
from deeplab_face.errors import ConfigError  # noqa: E402
from rl_scheduler import config, pair_tables  # noqa: E402
from flownet2s.dff import load_dff  # noqa: E402
from rl_scheduler.cache import load_video_caches  # noqa: E402
from rl_scheduler.policy_training import train_policy  # noqa: E402
from rl_scheduler import training_stage  # noqa: E402
from rl_scheduler.training_stage import (checked_stage_flags, define_stage_flags, read_json,  # noqa: E402
                                         register_size_validator, write_json)

D = config.DEFAULT_OPTIONS


def train_eval(root_dir, prepared_dir, segmenter_dir, flownet_dir, train_videos, val_videos,
               kar_limit=config.DEFAULT_KAR_LIMIT, reward="eq1", episodes=config.EPISODES,
               episode_length=config.EPISODE_LENGTH_300VW, trials=config.TRIALS,
               episodes_per_update=config.EPISODES_PER_UPDATE, learning_rate=config.LEARNING_RATE,
               entropy_coef=config.ENTROPY_COEF, gamma=config.GAMMA, seed=0, checkpoint_every=config.CHECKPOINT_EVERY,
               flow_resolution="full", cache_batch_size=8, pair_cache_capacity=2_048,
               max_frames_in_memory=config.MAX_FRAMES_IN_MEMORY, pair_table_dir=None, strategy="default",
               log=print, **options):
    """The stage function (docs/interfaces.md): frozen N and F, one cache per video, REINFORCE.

    pair_table_dir: where each video's pair table (every pair up to `credit_horizon` frames apart,
      computed in batched passes) is kept as `<video>.npz`; stages that share it (one RL stage
      per KAR limit) compute each table once. None: tables are computed in memory, not kept.
      Finished tables (`python -m rl_scheduler.pair_tables`) are only read; a missing one is filled
      here, claimed as that command does, so stages and commands running at once share the work.
    strategy: deeplab_face.distribute's `--strategy` (a name) or a tf.distribute.Strategy.
    """
    if not train_videos:
        raise ConfigError("--train_videos: at least one scheduler-training video is needed")
    dff = load_dff(segmenter_dir, flownet_dir, flow_resolution=flow_resolution)
    tap = options.get("deviation_tap", D["deviation_tap"])
    horizon = int(options.get("credit_horizon", config.CREDIT_HORIZON))
    cache_options = dict(batch_size=cache_batch_size, keep_masks=False, keep_taps=(tap,),
                         pair_capacity=pair_cache_capacity,   # per video
                         key_mask_capacity=4 * episode_length)  # an episode's window, with room
    cache_options["max_frames_in_memory"] = max_frames_in_memory   # lazy frames; None: all in memory
    train_ids = [str(v) for v in train_videos]
    val_ids = [str(v) for v in val_videos or ()]
    caches = dict(zip(train_ids + val_ids, load_video_caches(dff, prepared_dir, train_ids + val_ids,
                                                             **cache_options)))
    for cache in caches.values():
        cache.pair_capacity = None   # the table and what trials add to it stay (a few KB a pair)
    pair_tables.attach_tables(caches, pair_table_dir, horizon, (tap,), flow_resolution, log=log)
    train_caches, val_caches = [caches[v] for v in train_ids], [caches[v] for v in val_ids]
    strategy = strategy_of(strategy)
    result = train_policy(root_dir, train_caches, val_caches, kar_limit=kar_limit, reward=reward,
                          episodes=episodes, episode_length=episode_length, trials=trials,
                          episodes_per_update=episodes_per_update, learning_rate=learning_rate,
                          entropy_coef=entropy_coef, gamma=gamma, seed=seed,
                          checkpoint_every=checkpoint_every, strategy=strategy, **options)
    if not is_chief(strategy):   # the chief writes the probes and the stage's config
        return result
    result["probe"] = write_probes(root_dir, train_caches, val_caches or train_caches, tap, horizon, seed)
    stage = read_json(os.path.join(root_dir, "config.json"), {})
    stage["training"].update(prepared_dir=prepared_dir, segmenter_dir=segmenter_dir, flownet_dir=flownet_dir,
                             train_videos=list(map(str, train_videos)),
                             val_videos=list(map(str, val_videos or ())), flow_resolution=flow_resolution)
    write_json(os.path.join(root_dir, "config.json"), stage)
    return result


def write_probes(root_dir, train_caches, held_out_caches, tap, horizon, seed):
    """The policy and reward probes (rl_scheduler.probe) of the stage's final policy -> probe.json."""
    from rl_scheduler import load_policy
    from rl_scheduler.probe import policy_probe, reward_probe
    from rl_scheduler.schedulers import policy_history_options

    policy = load_policy(root_dir)
    probe = dict(policy=policy_probe(policy, held_out_caches, policy_history_options(policy), tap,
                                     policy.stage_config["kar_limit"], max_gap=horizon, seed=seed),
                 reward=reward_probe(train_caches, held_out_caches, tap, max_gap=horizon, seed=seed))
    write_json(os.path.join(root_dir, "probe.json"), probe)
    return probe


FLAGS = flags.FLAGS


# Kept whole: one flag per statement, in --help's order.
def define_flags():
    """Flags of the command (defined on demand, so that other modules can import this one)."""
    define_stage_flags("Output directory (checkpoints, TensorBoard, weights).",
                       "Scheduler-training video ids (300VW set B).",
                       "Validation video ids (empty: validate on the training videos, §4.2).")
    flags.adopt_module_key_flags(training_stage)  # listed by this command's --help
    flags.DEFINE_float("kar_limit", config.DEFAULT_KAR_LIMIT,
                       "KAR limit eta of the stop rule, in (0, 1] (paper: 0.04/0.06/0.14).", upper_bound=1.0)
    flags.register_validator("kar_limit", lambda v: v > 0, "--kar_limit must be in (0, 1]")
    flags.DEFINE_enum("reward", "eq1", ["eq1", "eq2"],
                      "Eq. 1 (ground-truth mIoU) or Eq. 2 (pseudo ground truth).")
    flags.DEFINE_integer("episodes", config.EPISODES, "Training episodes.", lower_bound=1)
    flags.DEFINE_integer("episode_length", config.EPISODE_LENGTH_300VW,
                         "Frames per episode T (Cityscapes: 30).", lower_bound=2)
    flags.DEFINE_integer("trials", config.TRIALS, "Trials M per episode.", lower_bound=1)
    flags.DEFINE_integer("episodes_per_update", config.EPISODES_PER_UPDATE, "Episodes per REINFORCE update.",
                         lower_bound=1)
    flags.DEFINE_float("learning_rate", config.LEARNING_RATE, "RMSProp learning rate.", lower_bound=0.0)
    flags.DEFINE_float("entropy_coef", config.ENTROPY_COEF, "Entropy-term coefficient lambda of Eq. 3.",
                       lower_bound=0.0)
    flags.DEFINE_float("gamma", config.GAMMA, "Discount factor.", lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_integer("seed", 0, "Random seed.", lower_bound=0)
    flags.DEFINE_integer("checkpoint_every", config.CHECKPOINT_EVERY, "Updates between checkpoints.", lower_bound=1)
    flags.DEFINE_integer("validate_every", config.VALIDATE_EVERY,
                         "Updates between validations (best policy kept).", lower_bound=1)
    flags.DEFINE_integer("validation_episodes", config.VALIDATION_EPISODES,
                         "Fixed deterministic validation episodes.", lower_bound=1)
    flags.DEFINE_integer("window", config.HISTORY_WINDOW, "Decision-history length H.", lower_bound=1)
    flags.DEFINE_enum("activation", "leaky_relu", ["leaky_relu", "relu"], "Policy activation.")
    flags.DEFINE_enum("deviation_tap", D["deviation_tap"], ["conv6", "conv6_1"],
                      "FlowNet2-s Conv6 tap fed to the policy.")
    flags.DEFINE_list("deviation_size", [], "Resize the tap to h,w first (empty: native size).")
    register_size_validator("deviation_size")
    flags.DEFINE_enum("kar_prefill", D["kar_prefill"], ["nonkey", "none"],
                      "History pre-fill (KAR = keys/H or keys/decisions).")
    flags.DEFINE_float("lkd_scale", D["lkd_scale"], "LKD input = (i - k) * lkd_scale.", lower_bound=0.0)
    flags.DEFINE_enum("stop_check", D["stop_check"], ["before", "after"],
                      "Stop rule checked before or after acting.")
    flags.DEFINE_enum("reward_units", D["reward_units"], ["fraction", "percent"],
                      "mIoU / accuracy units of the reward.")
    flags.DEFINE_enum("pseudo_acc", D["pseudo_acc"], ["pixel_acc", "miou"], "Acc of Eq. 2.")
    flags.DEFINE_enum("entropy_form", D["entropy_form"], ["bonus", "reciprocal"], "Omega = -H or 1/H.")
    flags.DEFINE_enum("return_mode", D["return_mode"], list(config.OPTION_CHOICES["return_mode"]),
                      "Return weighting log pi (immediate: the step's own reward).")
    flags.DEFINE_enum("baseline", D["baseline"], list(config.OPTION_CHOICES["baseline"]), "Reward baseline.")
    flags.DEFINE_enum("kar_input", D["kar_input"], list(config.OPTION_CHOICES["kar_input"]),
                      "KAR fed as KAR / eta (budget) or raw (paper).")
    flags.DEFINE_enum("lkd_input", D["lkd_input"], list(config.OPTION_CHOICES["lkd_input"]),
                      "LKD fed as log2(1 + LKD) or LKD * lkd_scale (paper).")
    flags.DEFINE_enum("key_bias_init", D["key_bias_init"], list(config.OPTION_CHOICES["key_bias_init"]),
                      "Initial key-logit bias: P(key) = eta (budget) or 0.5 (zero).")
    flags.DEFINE_enum("reward_credit", D["reward_credit"], list(config.OPTION_CHOICES["reward_credit"]),
                      "A key earns its own frame's gain (frame, paper) or the loss it removes after it (span).")
    flags.DEFINE_integer("credit_horizon", config.CREDIT_HORIZON,
                         "Largest key-frame gap of the precomputed pair table and of the span credit.",
                         lower_bound=1)
    flags.DEFINE_enum("key_price", D["key_price"], list(config.OPTION_CHOICES["key_price"]),
                      "A dual-ascent price per key toward the budget rate (dual) or none (paper).")
    flags.DEFINE_enum("feature_norm", D["feature_norm"], list(config.OPTION_CHOICES["feature_norm"]),
                      "Conv6 tap standardised per channel on training states (standardize) or raw (paper).")
    flags.DEFINE_enum("motion_input", D["motion_input"], list(config.OPTION_CHOICES["motion_input"]),
                      "Also feed the policy the flow magnitude since the key less its first value (flow_change).")
    flags.DEFINE_integer("state_sample", 0, "Visited states per gradient (uniform sample; 0: all).",
                         lower_bound=0)
    flags.DEFINE_string("pair_table_dir", None, "Where the per-video pair tables are kept and shared.")
    flags.DEFINE_float("eps_clip", D["eps_clip"], "Epsilon-greedy: sampling P(key) clipped to [1-eps, eps].",
                       lower_bound=0.5, upper_bound=1.0)
    flags.DEFINE_float("tau", D["tau"], "Key threshold on P(key) for validation rollouts.", lower_bound=0.0,
                       upper_bound=1.0)
    flags.DEFINE_integer("pair_cache_capacity", 2_048,
                         "Most (key, current) pair results kept per video (each holds the policy's "
                         "Conv6 tap: 124 KB at 513 px, so 2,048 entries are about 250 MB a video; least recently used go first).",
                         lower_bound=1)
    define_strategy_flag()
    flags.adopt_module_key_flags(sys.modules[define_strategy_flag.__module__])   # --strategy in --help


def main(argv):
    del argv
    size = checked_stage_flags()
    result = train_eval(
        FLAGS.root_dir, FLAGS.prepared_dir, FLAGS.segmenter_dir, FLAGS.flownet_dir, FLAGS.train_videos,
        FLAGS.val_videos, kar_limit=FLAGS.kar_limit, reward=FLAGS.reward, episodes=FLAGS.episodes,
        episode_length=FLAGS.episode_length, trials=FLAGS.trials,
        episodes_per_update=FLAGS.episodes_per_update, learning_rate=FLAGS.learning_rate,
        entropy_coef=FLAGS.entropy_coef, gamma=FLAGS.gamma, seed=FLAGS.seed,
        checkpoint_every=FLAGS.checkpoint_every, flow_resolution=FLAGS.flow_resolution,
        cache_batch_size=FLAGS.cache_batch_size, pair_cache_capacity=FLAGS.pair_cache_capacity,
        max_frames_in_memory=FLAGS.max_frames_in_memory or None,
        validate_every=FLAGS.validate_every,
        validation_episodes=FLAGS.validation_episodes, window=FLAGS.window, activation=FLAGS.activation,
        deviation_tap=FLAGS.deviation_tap, deviation_size=size, kar_prefill=FLAGS.kar_prefill,
        lkd_scale=FLAGS.lkd_scale, stop_check=FLAGS.stop_check, reward_units=FLAGS.reward_units,
        pseudo_acc=FLAGS.pseudo_acc, entropy_form=FLAGS.entropy_form, return_mode=FLAGS.return_mode,
        baseline=FLAGS.baseline, eps_clip=FLAGS.eps_clip, tau=FLAGS.tau, kar_input=FLAGS.kar_input,
        lkd_input=FLAGS.lkd_input, key_bias_init=FLAGS.key_bias_init, reward_credit=FLAGS.reward_credit,
        credit_horizon=FLAGS.credit_horizon, key_price=FLAGS.key_price, state_sample=FLAGS.state_sample or None,
        feature_norm=FLAGS.feature_norm, motion_input=FLAGS.motion_input,
        pair_table_dir=FLAGS.pair_table_dir, strategy=FLAGS.strategy)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
