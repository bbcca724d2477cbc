"""REINFORCE for the key policy (paper §3.2 Eq. 3, §4.2; reconstruction in paper.md §6-§7).

Minimises, over B = episodes x trials trajectories per update,

    L = -(1/B) sum_traj sum_i log pi(a_i | s_i) (G_i - b_i)  +  lambda * Omega(H)

with G_i the return-to-go (gamma) or the full return, b_i the mean over the OTHER trials
active at the same step (leave-one-out, default; or over all of them, or 0), H the mean entropy over visited states and
Omega = -H (bonus, A3C) or 1/H (reciprocal). Actions are sampled with P(key)
clipped to [1 - eps, eps]; the gradient uses the policy's own log pi.

Under a tf.distribute strategy with several replicas (issue 11) the update's episodes are split
over the replicas in contiguous blocks; each replica's loss keeps the GLOBAL normalisers (1/B and
the 1/N of the entropy term), so the replicas' gradients sum to the one-device gradient: the
strategy sum-reduces them and the optimizer applies the sum once. Rollouts stay in the host
process: on several workers every worker collects the same episodes (one seed) and differentiates
its own block.
"""
import math

import keras
import numpy as np
import tensorflow as tf

from rl_scheduler import config
from rl_scheduler.environment import sampled_actions, threshold_actions
from rl_scheduler.policy import compiled_forward, expert_weights
from rl_scheduler.replicas import per_replica

_LOG_EPS = 1e-8


def returns_to_go(rewards, active, gamma=config.GAMMA, return_mode=config.DEFAULT_OPTIONS["return_mode"]):
    """G (steps, M): sum_{t >= i} gamma^(t-i) r_t per trial ("reward_to_go"), the whole return J at
    every step ("full"), or r_i alone ("immediate": with span credit a key's reward already holds
    its effect on the frames after it, so the sum over later rewards only adds their noise)."""
    config.check_choice("return_mode", return_mode)
    rewards = np.where(active, rewards, 0.0)
    if return_mode == "immediate":
        return rewards.astype(np.float64)
    if return_mode == "full":
        discounts = gamma ** np.arange(len(rewards))[:, None]
        return np.broadcast_to((rewards * discounts).sum(axis=0), rewards.shape).copy()
    out = np.zeros_like(rewards, dtype=np.float64)
    running = np.zeros(rewards.shape[1])
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def advantages(returns, active, baseline=config.DEFAULT_OPTIONS["baseline"], fallback=None):
    """G - b per state (§6). b: the mean of G over the trials active at the same step
    ("trial_mean"), over the OTHER active trials ("leave_one_out"), or 0 ("none").

    fallback: (steps,) baseline for a leave-one-out trial that is alone at its step (typically
    the mean over the update's other episodes at that step; NaN where there is none): without
    it a lone trial gets advantage 0.
    """
    config.check_choice("baseline", baseline)
    if baseline == "none":
        return np.where(active, returns, 0.0)
    count = active.sum(axis=1, keepdims=True)
    total = (returns * active).sum(axis=1, keepdims=True)
    if baseline == "trial_mean":
        mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        return np.where(active, returns - mean, 0.0)
    others = np.where(count > 1, (total - returns) / np.maximum(count - 1, 1), np.nan)
    if fallback is not None:
        others = np.where(np.isnan(others), np.asarray(fallback, np.float64)[:, None], others)
    return np.where(active & ~np.isnan(others), returns - np.nan_to_num(others), 0.0)


def step_means(returns, active):
    """(sum, count) of G over active trials per step, for the cross-episode fallback."""
    return (returns * active).sum(axis=1), active.sum(axis=1)


LKD_BINS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def lkd_histogram(episodes):
    """Counts of the last-key distances of the visited states in [LKD_BINS[n], LKD_BINS[n+1])."""
    distances = np.concatenate([(e.frames[:, None] - e.key_frames)[e.active] for e in episodes]
                               or [np.zeros(0)])
    counts, _ = np.histogram(distances, bins=list(LKD_BINS) + [np.inf])
    return counts.tolist(), distances


def entropy(key_prob):
    """Binary entropy of pi(. | s) in nats, elementwise."""
    p = np.clip(np.asarray(key_prob, np.float64), _LOG_EPS, 1 - _LOG_EPS)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


def fixed_interval_quality(env, starts, interval):
    """Mean per-frame mIoU of keys every `interval` frames on the episodes `starts` (a reference
    for the validation numbers: DFF's fixed schedule at the budget's rate)."""
    total, frames = 0.0, 0
    for video, start in starts:
        cache = env.caches[video]
        for i in range(start + 1, start + env.length_for(video)):
            k = start + (i - start) // interval * interval
            total += cache.key(i).miou if k == i else cache.pair(k, i).miou
            frames += 1
    return total / max(frames, 1)


class Tf1RMSprop(keras.optimizers.RMSprop):
    """RMSProp as `tf.compat.v1.train.RMSPropOptimizer` (§4.2: RMSProp, lr 1e-3): decay 0.9 and
    the mean-square accumulator starting at 1, not 0.

    Keras's accumulator starts at 0, so its first update moves every weight by about
    lr / sqrt(1 - rho) = 3.2 lr in the direction of sign(g) whatever the gradient's size; on
    the policy's 1024-wide layers that saturates the softmax at once (entropy 0.5 -> 1e-7
    after one update, measured). Starting at 1, early updates are about lr * g.
    """

    def build(self, var_list):
        super().build(var_list)
        for velocity in self._velocities:
            velocity.assign(keras.ops.ones_like(velocity))


class Reinforce:
    """Collects batched-trial episodes from `env` and updates `policy` with RMSProp."""

    def __init__(self, policy, env, learning_rate=config.LEARNING_RATE, entropy_coef=config.ENTROPY_COEF,
                 gamma=config.GAMMA, entropy_form=config.DEFAULT_OPTIONS["entropy_form"],
                 return_mode=config.DEFAULT_OPTIONS["return_mode"],
                 baseline=config.DEFAULT_OPTIONS["baseline"], eps_clip=config.EPSILON,
                 tau=config.TAU, optimizer=None, max_chunk=2048, state_sample=None, seed=0,
                 key_price=config.DEFAULT_OPTIONS["key_price"], target_rate=None,
                 price_step=config.KEY_PRICE_STEP, strategy=None):
        config.check_choice("entropy_form", entropy_form)
        config.check_choice("return_mode", return_mode)
        config.check_choice("baseline", baseline)
        self.policy = policy
        self.env = env
        self.entropy_coef = float(entropy_coef)
        self.gamma = float(gamma)
        self.entropy_form = entropy_form
        self.return_mode = return_mode
        self.baseline = baseline
        self.eps_clip = float(eps_clip)
        self.tau = float(tau)
        self.max_chunk = int(max_chunk)
        # Most visited states per gradient (None: all). A uniform sample, its terms scaled by
        # visited / sampled, keeps the policy gradient unbiased; the policy's 1024-wide layers make
        # the backward pass the cost of an update when episodes are long.
        self.state_sample = None if not state_sample else int(state_sample)
        self._sample_rng = np.random.default_rng([seed, 7])
        config.check_choice("key_price", key_price)
        # Dual ascent on the env's key price: lambda += step * (key ratio / target - 1) * mean gross
        # key reward, so lambda is in reward units and settles where keys are taken at the target.
        self.key_price = key_price
        self.target_rate = target_rate
        self.price_step = float(price_step)
        self._price_started = False
        self.optimizer = optimizer or Tf1RMSprop(learning_rate)
        self._forward = compiled_forward(policy)   # the schedulers' compiled forward, shared
        self._chunk_gradients = tf.function(self._chunk_gradients_graph, reduce_retracing=True)
        # strategy: the one the policy and optimizer were built under (None: TensorFlow's default).
        # Build this object inside its scope: the Keras optimizer binds the strategy it is created in.
        self.strategy = strategy
        self._replicas = strategy.num_replicas_in_sync if strategy is not None else 1
        self._replica_step = tf.function(self._replica_step_graph, reduce_retracing=True)

    # -- acting ------------------------------------------------------------------
    def policy_fn(self, deviation, expert):
        """P(key) (M,) numpy for a batch of states (compiled forward)."""
        return self._forward(deviation, expert)[:, 1]

    def collect(self, rng, episodes):
        """`episodes` sampled episodes (ε-greedy actions), each M trials as one batch."""
        select = sampled_actions(self.eps_clip)
        starts = [self.env.sample_start(rng) for _ in range(episodes)]
        return self.env.rollout_many(self.policy_fn, select, starts, rng)   # one policy call per step

    def validate(self, env, starts, taus=None, target_rate=None):
        """Deterministic rollouts (key iff P(key) > tau) on (video, start) pairs, one trial per tau
        in `taus` (one batched rollout per episode), run to the last frame as deployed (no stop rule).

        With `target_rate` (keys per decision, e.g. the KAR limit) the policy is measured at its
        calibrated operating point: the tau with the most keys whose key ratio stays within
        1.1 x target_rate (within_budget False when no tau keeps it: the fewest keys are reported).
        Returns dict mean_return, key_ratio, quality (mean per-frame mIoU, fraction), completed, tau,
        within_budget and per_tau (key_ratio and quality of every tau).
        """
        taus = np.asarray([self.tau] if taus is None else taus, np.float64)
        select = threshold_actions(taus)
        episodes = env.rollout_many(self.policy_fn, select, starts, trials=len(taus), enforce_limit=False)
        decisions = sum(len(e.frames) for e in episodes)
        ratio = sum(e.actions.sum(axis=0) for e in episodes) / max(decisions, 1)
        quality = sum(np.nansum(e.quality, axis=0) for e in episodes) / max(decisions, 1)
        returns = np.mean([e.rewards.sum(axis=0) for e in episodes], axis=0)
        pick, within_budget = 0, True
        if target_rate is not None:
            within = np.nonzero(ratio <= 1.1 * float(target_rate))[0]
            within_budget = bool(len(within))
            pick = int(within[np.argmax(ratio[within])]) if within_budget else int(np.argmin(ratio))
        return dict(mean_return=float(returns[pick]), key_ratio=float(ratio[pick]),
                    quality=float(quality[pick]), completed=1.0, tau=float(taus[pick]),
                    within_budget=within_budget,
                    per_tau=dict(tau=taus.tolist(), key_ratio=ratio.tolist(), quality=quality.tolist()))

    # -- learning ----------------------------------------------------------------
    def _chunk_gradients_graph(self, deviation, expert, actions, weights, entropy_weights):
        with tf.GradientTape() as tape:
            probs = self.policy([deviation, expert], training=True)
            probs = tf.clip_by_value(probs, _LOG_EPS, 1.0)
            log_pi = tf.math.log(tf.where(actions[:, None] > 0.5, probs[:, 1:], probs[:, :1]))[:, 0]
            state_entropy = -tf.reduce_sum(probs * tf.math.log(probs), axis=1)
            # weights carry -(G - b) / B; entropy_weights carry lambda * dOmega/dH / N (0 on padding)
            loss = tf.reduce_sum(weights * log_pi) + tf.reduce_sum(entropy_weights * state_entropy)
        return loss, tape.gradient(loss, self.policy.trainable_variables)

    def update(self, episodes):
        """One REINFORCE step on `episodes`; returns the update's scalars."""
        if self.key_price == "dual" and self.target_rate and not self._price_started:
            # start the price at the mean gross key reward BEFORE the first gradient: at price 0 every
            # key pays, and one update pushed P(key) from eta to 0.5 (measured on the tiny data)
            gross = np.concatenate([e.gross_rewards[e.actions & e.active] for e in episodes
                                    if e.gross_rewards is not None] or [np.zeros(0)])
            if len(gross):
                self.env.key_price, self._price_started = max(float(gross.mean()), 0.0), True
                for e in episodes:
                    e.rewards = e.gross_rewards - self.env.key_price * (e.actions & e.active)
        returns = [returns_to_go(e.rewards, e.active, self.gamma, self.return_mode) for e in episodes]
        steps = max(len(g) for g in returns)
        sums, counts = np.zeros((len(episodes), steps)), np.zeros((len(episodes), steps))
        for n, (g, e) in enumerate(zip(returns, episodes)):
            sums[n, :len(g)], counts[n, :len(g)] = step_means(g, e.active)
        per_episode = []
        for n, (g, e) in enumerate(zip(returns, episodes)):
            # the other episodes' trials at the same step: a lone trial's leave-one-out baseline
            rest = counts.sum(0) - counts[n]
            fallback = np.where(rest > 0, (sums.sum(0) - sums[n]) / np.maximum(rest, 1), np.nan)[:len(g)]
            per_episode.append(advantages(g, e.active, self.baseline, fallback))
        trajectories = sum(e.active.shape[1] for e in episodes)
        states = [(n, s, j) for n, e in enumerate(episodes)
                  for s, j in zip(*np.nonzero(e.active & ~e.forced if e.forced is not None else e.active))]
        visited = len(states)
        if self.state_sample and visited > self.state_sample:
            pick = np.sort(self._sample_rng.choice(visited, self.state_sample, replace=False))
            states = [states[p] for p in pick]
            trajectories = trajectories * len(states) / visited   # weights -(G - b) / B x visited / sampled
        visited_prob = np.concatenate([e.key_prob[e.active] for e in episodes]) if states else np.zeros(0)
        mean_entropy = float(entropy(visited_prob).mean()) if states else 0.0
        if self.entropy_form == "bonus":        # Omega = -H
            d_omega = -1.0
        else:                                   # Omega = 1 / H
            d_omega = -1.0 / max(mean_entropy, 1e-6) ** 2
        total_loss, entropy_weight = 0.0, self.entropy_coef * d_omega / max(len(states), 1)
        if states:
            gradients = self._replica_gradients if self._replicas > 1 else self._device_gradients
            total_loss, grads_sum = gradients(episodes, per_episode, states, trajectories, entropy_weight)
            self.optimizer.apply_gradients(zip(grads_sum, self.policy.trainable_variables))
        kar_weight, lkd_weight = expert_weights(self.policy)
        acted = sum(int(e.active.sum()) for e in episodes)
        keys = sum(int((e.actions & e.active).sum()) for e in episodes)
        histogram, distances = lkd_histogram(episodes)
        if self.key_price == "dual" and self.target_rate and acted:
            gross = [e.gross_rewards[e.actions & e.active] for e in episodes if e.gross_rewards is not None]
            gross = np.concatenate(gross) if gross else np.zeros(0)
            scale = float(np.abs(gross).mean()) if len(gross) else 0.0
            ratio = keys / acted
            self.env.key_price = max(0.0, self.env.key_price
                                     + self.price_step * float(np.clip(ratio / self.target_rate - 1.0, -1, 1)) * scale)
        return dict(loss=total_loss, mean_return=float(np.mean([e.returns.mean() for e in episodes])),
                    key_ratio=keys / acted if acted else 0.0, entropy=mean_entropy,
                    kar_weight=kar_weight, lkd_weight=lkd_weight,
                    completed=float(np.mean([e.completed.mean() for e in episodes])),
                    mean_lkd=float(distances.mean()) if len(distances) else 0.0,
                    max_lkd=int(distances.max()) if len(distances) else 0, lkd_histogram=histogram,
                    key_price=float(self.env.key_price))

    def _device_gradients(self, episodes, per_episode, states, trajectories, entropy_weight):
        """(loss, gradient) of `states` on one device, in chunks of at most max_chunk states."""
        total_loss = 0.0
        grads_sum = [tf.zeros_like(v) for v in self.policy.trainable_variables]
        for begin in range(0, len(states), self.max_chunk):
            chunk = states[begin:begin + self.max_chunk]
            size = _bucket(len(chunk), self.max_chunk)
            deviation, expert, actions, weights = self._gather(
                episodes, per_episode, chunk, size, trajectories)
            entropy_weights = np.zeros(size, np.float32)
            entropy_weights[:len(chunk)] = entropy_weight
            loss, grads = self._chunk_gradients(deviation, expert, actions, weights, entropy_weights)
            total_loss += float(loss)
            grads_sum = [a + b for a, b in zip(grads_sum, grads)]
        return total_loss, grads_sum

    def _replica_gradients(self, episodes, per_episode, states, trajectories, entropy_weight):
        """(loss, gradient) of `states` with the episodes split over the replicas (module doc).

        Rounds of one chunk per replica, all padded to one bucketed size (zero weights: padding
        adds exact zeros), so every replica runs the same compiled shape; an out-of-work replica
        gets an all-padding chunk. The call must run outside `strategy.scope()` (as the training
        loop does): the Keras optimizer then applies the reduced gradient in cross-replica context.
        """
        blocks = np.array_split(np.arange(len(episodes)), self._replicas)
        replica_of = {int(n): r for r, block in enumerate(blocks) for n in block}
        shares = [[s for s in states if replica_of[s[0]] == r] for r in range(self._replicas)]
        rounds = max(math.ceil(len(share) / self.max_chunk) for share in shares)
        total_loss, grads_sum = 0.0, None
        for r in range(rounds):
            chunks = [share[r * self.max_chunk:(r + 1) * self.max_chunk] for share in shares]
            size = _bucket(max(len(c) for c in chunks), self.max_chunk)
            inputs = [self._gather(episodes, per_episode, chunk, size, trajectories) if chunk else None
                      for chunk in chunks]
            shape = next(x[0].shape for x in inputs if x is not None)
            replica_inputs = []
            for chunk, x in zip(chunks, inputs):
                if x is None:
                    x = (np.zeros(shape, np.float32), np.zeros((size, episodes[0].expert.shape[-1]), np.float32),
                         np.zeros(size, np.float32), np.zeros(size, np.float32))
                entropy_weights = np.zeros(size, np.float32)
                entropy_weights[:len(chunk)] = entropy_weight
                replica_inputs.append(x + (entropy_weights,))
            loss, grads = self._replica_step(per_replica(self.strategy, replica_inputs))
            total_loss += float(loss)
            grads_sum = grads if grads_sum is None else [a + b for a, b in zip(grads_sum, grads)]
        return total_loss, grads_sum

    def _replica_step_graph(self, values):
        """Each replica's chunk gradient, SUM-reduced over the replicas (and workers) by the strategy."""
        loss, grads = self.strategy.run(self._chunk_gradients_graph, args=values)
        total = tf.distribute.ReduceOp.SUM
        return (self.strategy.reduce(total, loss, axis=None),
                [self.strategy.reduce(total, g, axis=None) for g in grads])

    def _gather(self, episodes, per_episode, chunk, size, trajectories):
        groups = {}
        for row, (n, s, j) in enumerate(chunk):
            groups.setdefault(n, []).append((row, s, j))
        deviation = None
        expert = np.zeros((size, episodes[0].expert.shape[-1]), np.float32)
        actions = np.zeros(size, np.float32)
        weights = np.zeros(size, np.float32)
        for n, items in groups.items():
            rows, steps, trials = (np.array(x) for x in zip(*items))
            feats = self.env.deviation_features(episodes[n], steps, trials)
            if deviation is None:
                deviation = np.zeros((size,) + feats.shape[1:], np.float32)
            deviation[rows] = feats
            expert[rows] = episodes[n].expert[steps, trials]
            actions[rows] = episodes[n].actions[steps, trials]
            weights[rows] = -per_episode[n][steps, trials] / trajectories
        return deviation, expert, actions, weights


def _bucket(n, cap):
    """Smallest power of two >= n (at most cap), so chunks reuse a few compiled shapes."""
    size = 1
    while size < n:
        size *= 2
    return min(size, cap) if n <= cap else n
