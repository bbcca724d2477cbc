"""REINFORCE training of the RL key scheduler's policy on per-video caches (paper §3.2, §4.2): the loop
that rl_scheduler.train's stage function runs (its module doc says what the loop does and writes).

`train_policy` trains, validates and keeps the best policy in a stage folder, resumable from its
checkpoints; any object with `rl_scheduler.cache.VideoCache`'s interface serves as a cache.
"""
import dataclasses
import json
import math
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from deeplab_face import atomic
from deeplab_face.distribute import strategy_name, strategy_of, write_dir
from deeplab_face.errors import ConfigError
from deeplab_face.stage import checkpoint_manager, finish_stage, restore_latest
from deeplab_face.training import scalar_summary
from rl_scheduler import config
from rl_scheduler.environment import KeyEnvironment
from rl_scheduler.policy import budget_key_bias, build_policy, fit_deviation_norm
from rl_scheduler.reinforce import Reinforce, fixed_interval_quality
from rl_scheduler.training_stage import read_json, write_json

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
    _check_policy_args(episodes, episodes_per_update, trials, kar_limit)
    keras.utils.set_random_seed(seed)
    os.makedirs(root_dir, exist_ok=True)
    env_options = dict(episode_length=episode_length, kar_limit=kar_limit, reward=reward, window=window,
                       kar_prefill=kar_prefill, lkd_scale=lkd_scale, stop_check=stop_check,
                       deviation_tap=deviation_tap, reward_units=reward_units, pseudo_acc=pseudo_acc,
                       kar_input=kar_input, lkd_input=lkd_input, reward_credit=reward_credit,
                       credit_horizon=credit_horizon, motion_input=motion_input)
    env, val_env = _environments(train_caches, val_caches, trials, seed, env_options)
    if motion_input != "none":
        hparams["motion_scale"] = env.motion_scale
    config.check_choice("key_bias_init", key_bias_init)
    config.check_choice("feature_norm", feature_norm)
    build_args = dict(deviation_shape=list(env.deviation_shape()), activation=activation,
                      deviation_size=list(deviation_size) if deviation_size else None,
                      feature_norm=feature_norm == "standardize", expert_size=env.expert_size)
    book = _Bookkeeping.fresh(tau)
    reinforce_options = dict(learning_rate=learning_rate, entropy_coef=entropy_coef, gamma=gamma,
                             entropy_form=entropy_form, return_mode=return_mode, baseline=baseline,
                             eps_clip=eps_clip, tau=tau, state_sample=state_sample, seed=seed,
                             key_price=key_price, target_rate=kar_limit, strategy=strategy)
    key_bias = budget_key_bias(kar_limit) if key_bias_init == "budget" else 0.0
    policy, agent, manager, restored = _restored_agent(
        strategy, env, build_args, key_bias, train_caches, seed, deviation_tap, credit_horizon, reinforce_options,
        book.checkpointed(), os.path.join(root_dir, "ckpt"))
    # the loop runs outside the scope: Reinforce applies its reduced gradient in cross-replica context
    if restored:
        book.resume(env, agent)
    validation = _Validation.of(val_env, seed, validation_episodes, kar_limit, validate_every)
    updates = math.ceil(episodes / episodes_per_update)
    history = _run_updates(agent, env, policy, manager, book, validation, root_dir, updates, seed, episodes,
                           episodes_per_update, checkpoint_every, verbose)
    stage_config = dict(build_args, deviation_tap=deviation_tap, kar_limit=kar_limit,
                        operating_threshold=float(book.best_tau.numpy()), training=hparams)
    finish_stage(root_dir, policy, stage_config, done_text="done\n")
    if root_dir != chief_dir:   # a non-chief worker's files were only needed while it ran
        shutil.rmtree(root_dir, ignore_errors=True)
    return _policy_result(updates, float(book.best_quality.numpy()), float(book.best_tau.numpy()),
                          validation.fixed_quality, history)


def _check_policy_args(episodes, episodes_per_update, trials, kar_limit):
    """ConfigError for a count below 1 or a KAR limit outside (0, 1]."""
    if episodes < 1 or episodes_per_update < 1 or trials < 1:
        raise ConfigError("--episodes, --episodes_per_update and --trials must be >= 1")
    if not 0.0 < kar_limit <= 1.0:
        raise ConfigError(f"--kar_limit: must be in (0, 1] (a limit above 1 is no limit), got {kar_limit}")


@dataclasses.dataclass
class _Bookkeeping:
    """The update loop's checkpointed state besides the policy and optimizer. Plain host variables
    (MultiWorkerMirrored cannot broadcast a string)."""
    step: tf.Variable
    best_quality: tf.Variable
    best_tau: tf.Variable
    price: tf.Variable         # the key price lambda (dual variable) resumes too
    sample_rng: tf.Variable    # the state sample's numpy RNG runs across updates: JSON of bit_generator.state

    @classmethod
    def fresh(cls, tau):
        return cls(tf.Variable(0, dtype=tf.int64), tf.Variable(-np.inf, dtype=tf.float64),
                   tf.Variable(float(tau), dtype=tf.float64), tf.Variable(0.0, dtype=tf.float64),
                   tf.Variable("", dtype=tf.string))

    def checkpointed(self):
        """The variables under their checkpoint names (`_restored_agent`'s bookkeeping)."""
        return dict(step=self.step, best_return=self.best_quality, best_tau=self.best_tau, key_price=self.price,
                    sample_rng=self.sample_rng)

    def resume(self, env, agent):
        """The restored key price and state-sample RNG put back into the environment and the agent."""
        env.key_price, agent._price_started = float(self.price.numpy()), int(self.step.numpy()) > 0
        if self.sample_rng.numpy():
            agent._sample_rng.bit_generator.state = json.loads(self.sample_rng.numpy().decode())

    def save(self, manager, agent):
        """A checkpoint at the current step, with the state sample RNG's state."""
        self.sample_rng.assign(json.dumps(agent._sample_rng.bit_generator.state))
        manager.save(checkpoint_number=int(self.step.numpy()))


@dataclasses.dataclass
class _Validation:
    """The fixed validation episodes (their environment and start frames), the fixed-interval schedule's
    quality on them (a reference only), how often to validate and the KAR limit validated against."""
    env: KeyEnvironment
    starts: list
    fixed_quality: float
    every: int
    kar_limit: float

    @classmethod
    def of(cls, val_env, seed, validation_episodes, kar_limit, every):
        val_rng = np.random.default_rng([seed, 1])
        starts = [val_env.sample_start(val_rng) for _ in range(validation_episodes)]
        return cls(val_env, starts, fixed_interval_quality(val_env, starts, round(1.0 / kar_limit)), every, kar_limit)


def _run_updates(agent, env, policy, manager, book, validation, root_dir, updates, seed, episodes,
                 episodes_per_update, checkpoint_every, verbose):
    """The updates left after the restored checkpoint -> the history; the best validated policy is loaded
    back at the end."""
    history_path = os.path.join(root_dir, "history.json")
    history = read_json(history_path, [])[:int(book.step.numpy())]
    best_path = os.path.join(root_dir, "best.weights.h5")
    writer = tf.summary.create_file_writer(os.path.join(root_dir, "tensorboard"))
    bar = keras.utils.Progbar(updates, verbose=verbose,
                              stateful_metrics=["return", "key_ratio", "entropy", "val_quality"])
    bar.update(int(book.step.numpy()))
    while int(book.step.numpy()) < updates:
        update = int(book.step.numpy())
        rng = np.random.default_rng([seed, 0, update])  # per-update stream: resuming repeats nothing
        n = min(episodes_per_update, episodes - update * episodes_per_update)
        stats = agent.update(agent.collect(rng, n))
        book.price.assign(env.key_price)
        stats["update"] = update + 1
        stats["episodes"] = min(episodes, (update + 1) * episodes_per_update)
        if (update + 1) % validation.every == 0 or update + 1 == updates:
            stats.update(_validate_and_keep_best(agent, validation, book, policy, best_path))
        history.append(stats)
        # every update: the curve survives an interruption (a resume truncates it to the checkpoint
        # and appends from there, so rows always match the restored policy)
        write_json(history_path, history)
        _write_summaries(writer, stats, update + 1)
        book.step.assign_add(1)
        if int(book.step.numpy()) % checkpoint_every == 0 or int(book.step.numpy()) == updates:
            book.save(manager, agent)
        bar.update(int(book.step.numpy()), [("return", stats["mean_return"]), ("key_ratio", stats["key_ratio"]),
                                            ("entropy", stats["entropy"])]
                   + ([("val_quality", stats["val_quality"])] if "val_quality" in stats else []))
    writer.flush()
    write_json(history_path, history)
    if os.path.exists(best_path):
        policy.load_weights(best_path)
    return history


def _environments(train_caches, val_caches, trials, seed, env_options):
    """The training environment (`trials` trials an episode) and the validation one (one trial, on the
    validation videos or, §4.2, the same set). Trials stay inside the pair table: at LKD = credit_horizon a
    key is forced (in validation too: 24 thresholds running free would compute thousands of pairs per
    episode beyond the table). A motion input's scale is measured on the training pairs and set on both
    (and in `env_options`: the deployed scheduler reads it back)."""
    horizon = env_options["credit_horizon"]
    env = KeyEnvironment(train_caches, trials=trials, max_gap=horizon, **env_options)
    if env_options["motion_input"] != "none":
        env_options["motion_scale"] = env.motion_scale = env.flow_change_scale(np.random.default_rng([seed, 8]))
    val_env = KeyEnvironment(val_caches or train_caches, trials=1, max_gap=horizon, **env_options)
    return env, val_env


def _restored_agent(strategy, env, build_args, key_bias, train_caches, seed, deviation_tap, horizon,
                    reinforce_options, bookkeeping, ckpt_dir):
    """(policy, Reinforce agent, checkpoint manager, restored?) built under the strategy's scope (the policy's
    variables mirrored, the optimizer bound to it) and restored from `ckpt_dir`'s latest checkpoint with the
    loop's `bookkeeping` variables (step, best_return, best_tau, key_price, sample_rng)."""
    with strategy.scope():
        policy = build_policy(**build_args, key_bias=key_bias)
        if build_args["feature_norm"]:   # fitted on training pairs inside the table (a resume restores the same)
            from rl_scheduler.probe import pair_features, sample_pairs
            pairs = sample_pairs(train_caches, 1024, horizon, np.random.default_rng([seed, 7]))
            fit_deviation_norm(policy, pair_features(train_caches, pairs, deviation_tap))
        agent = Reinforce(policy, env, **reinforce_options)
        agent.optimizer.build(policy.trainable_variables)  # slots exist before a restore
        ckpt = tf.train.Checkpoint(step=bookkeeping["step"], model=policy, optimizer=agent.optimizer,
                                   best_return=bookkeeping["best_return"], best_tau=bookkeeping["best_tau"],
                                   key_price=bookkeeping["key_price"], sample_rng=bookkeeping["sample_rng"])
        manager = checkpoint_manager(ckpt, ckpt_dir)
        return policy, agent, manager, restore_latest(ckpt, manager)


def _validate_and_keep_best(agent, validation, book, policy, best_path):
    """One validation of the policy at every tau of config.VALIDATION_TAUS -> its history columns; a policy
    that beats the best so far (`book.best_quality`, `book.best_tau`, updated) is saved to `best_path`."""
    val = agent.validate(validation.env, validation.starts, taus=config.VALIDATION_TAUS,
                         target_rate=validation.kar_limit)
    val_fixed = validation.fixed_quality
    stats = dict(val_return=val["mean_return"], val_key_ratio=val["key_ratio"], val_quality=val["quality"],
                 val_tau=val["tau"], val_fixed_quality=val_fixed, val_gain_over_fixed=val["quality"] - val_fixed)
    # Measured at the operating point (most keys within the budget): mean per-frame mIoU is
    # what the deployed scheduler delivers. Ties go to the later, more-trained policy. A
    # policy that keys above the budget at every tau is not comparable (more keys buy
    # quality) and is kept only while nothing within the budget was validated.
    over = not val["within_budget"]
    stats["val_within_budget"] = float(not over)
    if (val["quality"] - (1.0 if over else 0.0)) >= float(book.best_quality.numpy()):
        book.best_quality.assign(val["quality"] - (1.0 if over else 0.0))
        book.best_tau.assign(val["tau"])
        atomic.save_weights(policy, best_path)
    return stats


def _write_summaries(writer, stats, step):
    """An update's scalar history columns to TensorBoard, flushed (the curve survives an interruption)."""
    with writer.as_default(step=step):
        for name, value in stats.items():
            if name not in ("update", "episodes") and np.isscalar(value):
                scalar_summary(name, value, step)
    writer.flush()


def _policy_result(updates, best_quality, best_tau, val_fixed, history):
    """train_policy's returned numbers: the kept policy's, and the training curve's ends."""
    last = history[-1] if history else {}
    return dict(updates=updates, best_val_quality=best_quality,
                operating_threshold=best_tau, val_fixed_quality=val_fixed,
                completed=[h.get("completed") for h in history], key_ratio=[h.get("key_ratio") for h in history],
                final_mean_return=last.get("mean_return"), final_key_ratio=last.get("key_ratio"),
                first_mean_return=history[0]["mean_return"] if history else None)
