"""REINFORCE for the key policy (paper §3.2 Eq. 3, §4.2; reconstruction in paper.md §6-§7).

Minimises, over B = episodes x trials trajectories per update,

    L = -(1/B) sum_traj sum_i log pi(a_i | s_i) (G_i - b_i)  +  lambda * Omega(H)

with G_i the return-to-go (gamma) or the full return, b_i the mean over the trials
active at the same step (or 0), H the mean entropy over visited states and
Omega = -H (bonus, A3C) or 1/H (reciprocal). Actions are sampled with P(key)
clipped to [1 - eps, eps]; the gradient uses the policy's own log pi.
"""
import keras
import numpy as np
import tensorflow as tf

from rl_scheduler import config
from rl_scheduler.environment import sampled_actions, threshold_actions
from rl_scheduler.policy import compiled_forward, expert_weights

_LOG_EPS = 1e-8


def returns_to_go(rewards, active, gamma=config.GAMMA, return_mode=config.DEFAULT_OPTIONS["return_mode"]):
    """G (steps, M): sum_{t >= i} gamma^(t-i) r_t per trial, or the whole return J at every step."""
    config.check_choice("return_mode", return_mode)
    rewards = np.where(active, rewards, 0.0)
    if return_mode == "full":
        discounts = gamma ** np.arange(len(rewards))[:, None]
        return np.broadcast_to((rewards * discounts).sum(axis=0), rewards.shape).copy()
    out = np.zeros_like(rewards, dtype=np.float64)
    running = np.zeros(rewards.shape[1])
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def advantages(returns, active, baseline=config.DEFAULT_OPTIONS["baseline"]):
    """G - b with b the mean of G over the trials active at the same step (§6), or G itself."""
    config.check_choice("baseline", baseline)
    if baseline == "none":
        return np.where(active, returns, 0.0)
    count = active.sum(axis=1, keepdims=True)
    mean = np.where(count > 0, (returns * active).sum(axis=1, keepdims=True) / np.maximum(count, 1), 0.0)
    return np.where(active, returns - mean, 0.0)


def entropy(key_prob):
    """Binary entropy of pi(. | s) in nats, elementwise."""
    p = np.clip(np.asarray(key_prob, np.float64), _LOG_EPS, 1 - _LOG_EPS)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


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
                 tau=config.TAU, optimizer=None, max_chunk=2048):
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
        self.optimizer = optimizer or Tf1RMSprop(learning_rate)
        self._forward = compiled_forward(policy)   # the schedulers' compiled forward, shared
        self._chunk_gradients = tf.function(self._chunk_gradients_graph, reduce_retracing=True)

    # -- acting ------------------------------------------------------------------
    def policy_fn(self, deviation, expert):
        """P(key) (M,) numpy for a batch of states (compiled forward)."""
        return self._forward(deviation, expert)[:, 1]

    def collect(self, rng, episodes):
        """`episodes` sampled episodes (ε-greedy actions), each M trials as one batch."""
        select = sampled_actions(self.eps_clip)
        out = []
        for _ in range(episodes):
            video, start = self.env.sample_start(rng)
            out.append(self.env.rollout(self.policy_fn, select, video, start, rng))
        return out

    def validate(self, env, starts):
        """Deterministic rollouts (key iff P(key) > tau, one trial) on (video, start) pairs.

        Returns dict mean_return, key_ratio, completed (fraction reaching the last frame).
        """
        select = threshold_actions(self.tau)
        episodes = [env.rollout(self.policy_fn, select, v, s, trials=1) for v, s in starts]
        return dict(mean_return=float(np.mean([e.returns.mean() for e in episodes])),
                    key_ratio=float(np.mean([e.key_ratio for e in episodes])),
                    completed=float(np.mean([e.completed.mean() for e in episodes])))

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
        per_episode = []
        for e in episodes:
            g = returns_to_go(e.rewards, e.active, self.gamma, self.return_mode)
            per_episode.append(advantages(g, e.active, self.baseline))
        trajectories = sum(e.active.shape[1] for e in episodes)
        states = [(n, s, j) for n, e in enumerate(episodes) for s, j in zip(*np.nonzero(e.active))]
        visited_prob = np.concatenate([e.key_prob[e.active] for e in episodes]) if states else np.zeros(0)
        mean_entropy = float(entropy(visited_prob).mean()) if states else 0.0
        if self.entropy_form == "bonus":        # Omega = -H
            d_omega = -1.0
        else:                                   # Omega = 1 / H
            d_omega = -1.0 / max(mean_entropy, 1e-6) ** 2
        total_loss = 0.0
        grads_sum = [tf.zeros_like(v) for v in self.policy.trainable_variables]
        for begin in range(0, len(states), self.max_chunk):
            chunk = states[begin:begin + self.max_chunk]
            size = _bucket(len(chunk), self.max_chunk)
            deviation, expert, actions, weights = self._gather(
                episodes, per_episode, chunk, size, trajectories)
            entropy_weights = np.zeros(size, np.float32)
            entropy_weights[:len(chunk)] = self.entropy_coef * d_omega / len(states)
            loss, grads = self._chunk_gradients(deviation, expert, actions, weights, entropy_weights)
            total_loss += float(loss)
            grads_sum = [a + b for a, b in zip(grads_sum, grads)]
        if states:
            self.optimizer.apply_gradients(zip(grads_sum, self.policy.trainable_variables))
        kar_weight, lkd_weight = expert_weights(self.policy)
        acted = sum(int(e.active.sum()) for e in episodes)
        keys = sum(int((e.actions & e.active).sum()) for e in episodes)
        return dict(loss=total_loss, mean_return=float(np.mean([e.returns.mean() for e in episodes])),
                    key_ratio=keys / acted if acted else 0.0, entropy=mean_entropy,
                    kar_weight=kar_weight, lkd_weight=lkd_weight,
                    completed=float(np.mean([e.completed.mean() for e in episodes])))

    def _gather(self, episodes, per_episode, chunk, size, trajectories):
        groups = {}
        for row, (n, s, j) in enumerate(chunk):
            groups.setdefault(n, []).append((row, s, j))
        deviation = None
        expert = np.zeros((size, 2), np.float32)
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
