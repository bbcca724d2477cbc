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
parallel by its command, or here when missing).
"""
import json
import math
import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

from deeplab_face import atomic, cli  # noqa: E402
from deeplab_face.distribute import (define_strategy_flag, is_chief, strategy_name, strategy_of,  # noqa: E402
                                     write_dir)
from deeplab_face.errors import ConfigError  # noqa: E402
from deeplab_face.stage import checkpoint_manager, finish_stage, restore_latest  # noqa: E402
from deeplab_face.training import scalar_summary  # noqa: E402
from rl_scheduler import config, pair_tables  # noqa: E402
from flownet2s.dff import load_dff  # noqa: E402
from rl_scheduler.cache import load_video_caches  # noqa: E402
from rl_scheduler.environment import KeyEnvironment  # noqa: E402
from rl_scheduler.policy import budget_key_bias, build_policy, fit_deviation_norm  # noqa: E402
from rl_scheduler.reinforce import Reinforce, fixed_interval_quality  # noqa: E402
from rl_scheduler import training_stage  # noqa: E402
from rl_scheduler.training_stage import (checked_stage_flags, define_stage_flags, read_json,  # noqa: E402
                                         register_size_validator, write_json)

D = config.DEFAULT_OPTIONS


def train_policy(root_dir, train_caches, val_caches, kar_limit=config.DEFAULT_KAR_LIMIT, reward="eq1",
                 episodes=config.EPISODES, episode_length=config.EPISODE_LENGTH_300VW, trials=config.TRIALS,
                 episodes_per_update=config.EPISODES_PER_UPDATE, learning_rate=config.LEARNING_RATE,
                 entropy_coef=config.ENTROPY_COEF, gamma=config.GAMMA, seed=0, checkpoint_every=config.CHECKPOINT_EVERY,
                 validate_every=config.VALIDATE_EVERY, validation_episodes=config.VALIDATION_EPISODES,
                 activation="leaky_relu",
                 window=config.HISTORY_WINDOW, deviation_tap=D["deviation_tap"],
                 deviation_size=D["deviation_size"], kar_prefill=D["kar_prefill"], lkd_scale=D["lkd_scale"],
                 stop_check=D["stop_check"], reward_units=D["reward_units"], pseudo_acc=D["pseudo_acc"],
                 entropy_form=D["entropy_form"], return_mode=D["return_mode"], baseline=D["baseline"],
                 eps_clip=D["eps_clip"], tau=D["tau"], kar_input=D["kar_input"], lkd_input=D["lkd_input"],
                 key_bias_init=D["key_bias_init"], reward_credit=D["reward_credit"],
                 credit_horizon=config.CREDIT_HORIZON, key_price=D["key_price"], state_sample=None,
                 feature_norm=D["feature_norm"], motion_input=D["motion_input"], strategy="default", verbose=1):
    """REINFORCE on caches (VideoCache or any object with its interface); see the module doc.

    strategy: a name of deeplab_face.distribute.STRATEGIES or a tf.distribute.Strategy."""
    hparams = {k: v for k, v in locals().items() if k not in ("root_dir", "train_caches", "val_caches", "strategy")}
    strategy = strategy_of(strategy)
    hparams["strategy"] = strategy_name(strategy)
    chief_dir, root_dir = root_dir, write_dir(root_dir, strategy)   # a non-chief writes a scratch folder
    if episodes < 1 or episodes_per_update < 1 or trials < 1:
        raise ConfigError("--episodes, --episodes_per_update and --trials must be >= 1")
    if not 0.0 < kar_limit <= 1.0:
        raise ConfigError(f"--kar_limit: must be in (0, 1] (a limit above 1 is no limit), got {kar_limit}")
    keras.utils.set_random_seed(seed)
    os.makedirs(root_dir, exist_ok=True)
    env_options = dict(episode_length=episode_length, kar_limit=kar_limit, reward=reward, window=window,
                       kar_prefill=kar_prefill, lkd_scale=lkd_scale, stop_check=stop_check,
                       deviation_tap=deviation_tap, reward_units=reward_units, pseudo_acc=pseudo_acc,
                       kar_input=kar_input, lkd_input=lkd_input, reward_credit=reward_credit,
                       credit_horizon=credit_horizon, motion_input=motion_input)
    # trials stay inside the pair table: at LKD = credit_horizon a key is forced (in validation too:
    # 24 thresholds running free would compute thousands of pairs per episode beyond the table)
    env = KeyEnvironment(train_caches, trials=trials, max_gap=credit_horizon, **env_options)
    if motion_input != "none":   # measured on the training pairs; the deployed scheduler reads it back
        env_options["motion_scale"] = env.motion_scale = env.flow_change_scale(np.random.default_rng([seed, 8]))
        hparams["motion_scale"] = env.motion_scale
    val_env = KeyEnvironment(val_caches or train_caches, trials=1, max_gap=credit_horizon,
                             **env_options)  # §4.2: or the same set
    config.check_choice("key_bias_init", key_bias_init)
    config.check_choice("feature_norm", feature_norm)
    build_args = dict(deviation_shape=list(env.deviation_shape()), activation=activation,
                      deviation_size=list(deviation_size) if deviation_size else None,
                      feature_norm=feature_norm == "standardize", expert_size=env.expert_size)
    # the loop's bookkeeping stays plain host variables (MultiWorkerMirrored cannot broadcast a string)
    step = tf.Variable(0, dtype=tf.int64)
    best_quality = tf.Variable(-np.inf, dtype=tf.float64)
    best_tau = tf.Variable(float(tau), dtype=tf.float64)
    price = tf.Variable(0.0, dtype=tf.float64)   # the key price lambda (dual variable) resumes too
    # the state sample's numpy RNG runs across updates: its state resumes too (JSON of bit_generator.state)
    sample_rng = tf.Variable("", dtype=tf.string)
    with strategy.scope():   # the policy's variables (mirrored under a strategy) and the optimizer bound to it
        policy = build_policy(**build_args, key_bias=budget_key_bias(kar_limit) if key_bias_init == "budget" else 0.0)
        if build_args["feature_norm"]:   # fitted on training pairs inside the table (a resume restores the same)
            from rl_scheduler.probe import pair_features, sample_pairs
            pairs = sample_pairs(train_caches, 1024, credit_horizon, np.random.default_rng([seed, 7]))
            fit_deviation_norm(policy, pair_features(train_caches, pairs, deviation_tap))
        agent = Reinforce(policy, env, learning_rate=learning_rate, entropy_coef=entropy_coef, gamma=gamma,
                          entropy_form=entropy_form, return_mode=return_mode, baseline=baseline,
                          eps_clip=eps_clip, tau=tau, state_sample=state_sample, seed=seed,
                          key_price=key_price, target_rate=kar_limit, strategy=strategy)
        agent.optimizer.build(policy.trainable_variables)  # slots exist before a restore
        ckpt = tf.train.Checkpoint(step=step, model=policy, optimizer=agent.optimizer, best_return=best_quality,
                                   best_tau=best_tau, key_price=price, sample_rng=sample_rng)
        manager = checkpoint_manager(ckpt, os.path.join(root_dir, "ckpt"))
        restored = restore_latest(ckpt, manager)
    # the loop runs outside the scope: Reinforce applies its reduced gradient in cross-replica context
    if restored:
        env.key_price, agent._price_started = float(price.numpy()), int(step.numpy()) > 0
        if sample_rng.numpy():
            agent._sample_rng.bit_generator.state = json.loads(sample_rng.numpy().decode())
    history_path = os.path.join(root_dir, "history.json")
    history = read_json(history_path, [])[:int(step.numpy())]
    best_path = os.path.join(root_dir, "best.weights.h5")
    val_rng = np.random.default_rng([seed, 1])   # fixed validation episodes
    val_starts = [val_env.sample_start(val_rng) for _ in range(validation_episodes)]
    val_fixed = fixed_interval_quality(val_env, val_starts, round(1.0 / kar_limit))   # reference only
    updates = math.ceil(episodes / episodes_per_update)
    writer = tf.summary.create_file_writer(os.path.join(root_dir, "tensorboard"))
    bar = keras.utils.Progbar(updates, verbose=verbose,
                              stateful_metrics=["return", "key_ratio", "entropy", "val_quality"])
    bar.update(int(step.numpy()))
    while int(step.numpy()) < updates:
        update = int(step.numpy())
        rng = np.random.default_rng([seed, 0, update])  # per-update stream: resuming repeats nothing
        n = min(episodes_per_update, episodes - update * episodes_per_update)
        stats = agent.update(agent.collect(rng, n))
        price.assign(env.key_price)
        stats["update"] = update + 1
        stats["episodes"] = min(episodes, (update + 1) * episodes_per_update)
        if (update + 1) % validate_every == 0 or update + 1 == updates:
            val = agent.validate(val_env, val_starts, taus=config.VALIDATION_TAUS, target_rate=kar_limit)
            stats.update(val_return=val["mean_return"], val_key_ratio=val["key_ratio"],
                         val_quality=val["quality"], val_tau=val["tau"], val_fixed_quality=val_fixed,
                         val_gain_over_fixed=val["quality"] - val_fixed)
            # Measured at the operating point (most keys within the budget): mean per-frame mIoU is
            # what the deployed scheduler delivers. Ties go to the later, more-trained policy. A
            # policy that keys above the budget at every tau is not comparable (more keys buy
            # quality) and is kept only while nothing within the budget was validated.
            over = not val["within_budget"]
            stats["val_within_budget"] = float(not over)
            if (val["quality"] - (1.0 if over else 0.0)) >= float(best_quality.numpy()):
                best_quality.assign(val["quality"] - (1.0 if over else 0.0))
                best_tau.assign(val["tau"])
                atomic.save_weights(policy, best_path)
        history.append(stats)
        # every update: the curve survives an interruption (a resume truncates it to the checkpoint
        # and appends from there, so rows always match the restored policy)
        write_json(history_path, history)
        with writer.as_default(step=update + 1):
            for name, value in stats.items():
                if name not in ("update", "episodes") and np.isscalar(value):
                    scalar_summary(name, value, update + 1)
        writer.flush()
        step.assign_add(1)
        if int(step.numpy()) % checkpoint_every == 0 or int(step.numpy()) == updates:
            sample_rng.assign(json.dumps(agent._sample_rng.bit_generator.state))
            manager.save(checkpoint_number=int(step.numpy()))
        bar.update(int(step.numpy()), [("return", stats["mean_return"]), ("key_ratio", stats["key_ratio"]),
                                       ("entropy", stats["entropy"])]
                   + ([("val_quality", stats["val_quality"])] if "val_quality" in stats else []))
    writer.flush()
    write_json(history_path, history)
    if os.path.exists(best_path):
        policy.load_weights(best_path)
    stage_config = dict(build_args, deviation_tap=deviation_tap, kar_limit=kar_limit,
                        operating_threshold=float(best_tau.numpy()), training=hparams)
    finish_stage(root_dir, policy, stage_config, done_text="done\n")
    if root_dir != chief_dir:   # a non-chief worker's files were only needed while it ran
        shutil.rmtree(root_dir, ignore_errors=True)
    last = history[-1] if history else {}
    return dict(updates=updates, best_val_quality=float(best_quality.numpy()),
                operating_threshold=float(best_tau.numpy()), val_fixed_quality=val_fixed,
                completed=[h.get("completed") for h in history], key_ratio=[h.get("key_ratio") for h in history],
                final_mean_return=last.get("mean_return"), final_key_ratio=last.get("key_ratio"),
                first_mean_return=history[0]["mean_return"] if history else None)


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
    flags.DEFINE_integer("validate_every", config.VALIDATE_EVERY, "Updates between validations (best policy kept).", lower_bound=1)
    flags.DEFINE_integer("validation_episodes", config.VALIDATION_EPISODES, "Fixed deterministic validation episodes.", lower_bound=1)
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
