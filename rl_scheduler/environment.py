"""The episode environment (paper §3.2 "Constraining key selection frequency", "Episode settings").

An episode is T frames of one training video from a random start frame; M trials
run through it as ONE batch: at every step the policy sees the M states
together, each distinct (key frame, current frame) pair is computed once by the
shared cache (`rl_scheduler.cache.VideoCache`, or any object with its `key`,
`pair`, `prefetch_pairs` and `num_frames`), and the history, stop rule and
rewards are numpy arrays over the trials.

- The first frame of an episode is a forced key; it is no decision, enters no
  history and earns no reward (paper.md §3).
- Stop rule (§4): a trial whose KAR already exceeds eta ends before acting
  (`stop_check="before"`, default: the key that crossed eta keeps its reward);
  with `"after"` the crossing key ends the trial at once and earns nothing.
- Rewards: Eq. 1 or Eq. 2 (`rl_scheduler.rewards`).
- A step whose pairs are not all cached fills its compiled batch with the next
  frames of the held keys (`lookahead`): the values are the same, calls are fewer.
"""
import dataclasses

import numpy as np

from rl_scheduler import config, rewards
from rl_scheduler.history import BatchedHistory


@dataclasses.dataclass
class Episode:
    """One episode's M trajectories; arrays are (steps, M) with steps = T - 1 decisions."""
    video: int
    start: int
    frames: np.ndarray       # (steps,) absolute frame index i of each decision
    key_frames: np.ndarray   # (steps, M) last key frame k when deciding i
    expert: np.ndarray       # (steps, M, 2) [KAR, LKD] seen by the policy
    key_prob: np.ndarray     # (steps, M) pi(a1 | s) from the policy
    actions: np.ndarray      # (steps, M) bool, True = key
    rewards: np.ndarray      # (steps, M) float64, 0 where inactive
    active: np.ndarray       # (steps, M) bool, the trial was running and acted

    @property
    def returns(self):
        """Per-trial undiscounted return J_j = sum_i r_ij, (M,) (gamma = 1 in the paper)."""
        return self.rewards.sum(axis=0)

    @property
    def key_ratio(self):
        """Keys per decision over all active steps."""
        acted = self.active.sum()
        return float((self.actions & self.active).sum() / acted) if acted else 0.0

    @property
    def completed(self):
        """(M,) True where a trial reached the last frame without stopping."""
        return self.active[-1] if len(self.active) else np.ones(self.key_frames.shape[1], bool)


def sampled_actions(eps_clip=config.EPSILON):
    """Training action rule (§7): sample with P(key) clipped to [1 - eps, eps] (epsilon-greedy)."""

    def select(key_prob, rng):
        p = np.clip(key_prob, 1.0 - eps_clip, eps_clip)
        return rng.random(p.shape) < p

    return select


def threshold_actions(tau=config.TAU):
    """Deterministic rule: key iff pi(a1 | s) > tau (§3.1, validation and test)."""

    def select(key_prob, rng):
        del rng
        return np.asarray(key_prob) > tau

    return select


class KeyEnvironment:
    """Batched-trial episodes over a list of per-video caches."""

    def __init__(self, caches, episode_length=config.EPISODE_LENGTH_300VW, trials=config.TRIALS,
                 kar_limit=config.DEFAULT_KAR_LIMIT, reward="eq1",
                 window=config.HISTORY_WINDOW,
                 kar_prefill=config.DEFAULT_OPTIONS["kar_prefill"],
                 lkd_scale=config.DEFAULT_OPTIONS["lkd_scale"],
                 stop_check=config.DEFAULT_OPTIONS["stop_check"],
                 deviation_tap=config.DEFAULT_OPTIONS["deviation_tap"],
                 reward_units=config.DEFAULT_OPTIONS["reward_units"],
                 pseudo_acc=config.DEFAULT_OPTIONS["pseudo_acc"], lookahead=8):
        if not caches:
            raise ValueError("KeyEnvironment needs at least one video cache")
        config.check_choice("reward", reward)
        config.check_choice("stop_check", stop_check)
        config.check_choice("deviation_tap", deviation_tap)
        config.check_choice("reward_units", reward_units)
        config.check_choice("pseudo_acc", pseudo_acc)
        self.caches = list(caches)
        self.episode_length = int(episode_length)
        self.trials = int(trials)
        self.kar_limit = float(kar_limit)
        self.reward = reward
        self.window = int(window)
        self.kar_prefill = kar_prefill
        self.lkd_scale = float(lkd_scale)
        self.stop_check = stop_check
        self.deviation_tap = deviation_tap
        self.reward_units = reward_units
        self.pseudo_acc = pseudo_acc
        self.lookahead = int(lookahead)   # frames ahead a short pair batch may be filled from (0: off)

    # -- episodes ----------------------------------------------------------------
    def sample_start(self, rng):
        """(video, start): a uniformly random video, then a random start frame (§3.2)."""
        video = int(rng.integers(len(self.caches)))
        length = self.length_for(video)
        start = int(rng.integers(self.caches[video].num_frames - length + 1))
        return video, start

    def length_for(self, video):
        """Episode length, shortened to the video when it is shorter than T."""
        return min(self.episode_length, self.caches[video].num_frames)

    def deviation_shape(self):
        """(h, w, c) of the chosen Conv6 tap (from the first video's first pair)."""
        entry = self.caches[0].pair(0, min(1, self.caches[0].num_frames - 1))
        return tuple(getattr(entry, self.deviation_tap).shape[1:])

    def rollout(self, policy_fn, select_fn, video, start, rng=None, trials=None):
        """Run `trials` trials of the episode (video, start) as one batch.

        Args:
          policy_fn: (deviation (M, h, w, c), expert (M, 2)) -> P(key) (M,) numpy.
          select_fn: (P(key) (M,), rng) -> bool actions (M,); see `sampled_actions`.
        """
        cache = self.caches[video]
        trials = self.trials if trials is None else int(trials)
        length = self.length_for(video)
        steps = length - 1
        history = BatchedHistory(trials, self.window, self.kar_prefill, self.lkd_scale)
        history.force_key()                                # frame `start` is a forced key
        last_key = np.full(trials, start, np.int64)
        running = np.ones(trials, bool)
        shape = (steps, trials)
        episode = Episode(video, start, np.arange(start + 1, start + length), np.zeros(shape, np.int64),
                          np.zeros(shape + (2,), np.float32), np.zeros(shape, np.float32),
                          np.zeros(shape, bool), np.zeros(shape, np.float64), np.zeros(shape, bool))
        if hasattr(cache, "prefetch_keys"):  # N on every frame of the episode in full batches
            cache.prefetch_keys(range(start, start + length))
        dev_shape = None
        for t, i in enumerate(episode.frames):
            if self.stop_check == "before":
                running &= ~history.exceeds(self.kar_limit)   # §4: stop before acting
            if not running.any():
                break
            held_keys, holders = np.unique(last_key[running], return_counts=True)
            cache.prefetch_pairs(self._step_pairs(cache, held_keys, holders, int(i), start + length))
            # one lookup per distinct key frame; trials holding the same key share its entry
            entries = {int(k): cache.pair(int(k), int(i)) for k in held_keys}
            pairs = [entries[int(k)] if run else None for k, run in zip(last_key, running)]
            if dev_shape is None:
                dev_shape = getattr(next(iter(entries.values())), self.deviation_tap).shape[1:]
            deviation = np.zeros((trials,) + dev_shape, np.float32)  # stopped trials: zeros, ignored
            for k, entry in entries.items():
                deviation[running & (last_key == k)] = getattr(entry, self.deviation_tap)[0]
            expert = history.expert()
            key_prob = np.asarray(policy_fn(deviation, expert), np.float32).reshape(trials)
            actions = np.asarray(select_fn(key_prob, rng), bool) & running
            step_rewards = np.zeros(trials)
            rows = np.nonzero(running)[0]
            step_rewards[rows] = rewards.pair_rewards(
                self.reward, actions[rows], [cache.key(i)] * len(rows), [pairs[j] for j in rows],
                self.reward_units, self.pseudo_acc)
            episode.key_frames[t], episode.expert[t], episode.key_prob[t] = last_key, expert, key_prob
            episode.actions[t], episode.active[t] = actions, running
            history.push(actions, running)
            last_key = np.where(actions, i, last_key)
            if self.stop_check == "after":
                crossed = running & history.exceeds(self.kar_limit)
                step_rewards[crossed] = 0.0                  # the crossing key ends the trial, unrewarded
                running &= ~crossed
            episode.rewards[t] = step_rewards
        return episode

    def _step_pairs(self, cache, held_keys, holders, i, end):
        """The step's (k, i) pairs; where some must be computed and the cache batches
        (`batch_size`, `has_pair`), the batch is filled with the next frames of the keys most
        trials hold (k, i+1), (k, i+2), ...: most trials do not key, so they are needed next,
        and a full batch costs about what a short one does (a call's fixed cost dominates)."""
        needed = [(int(k), i) for k in held_keys]
        has_pair = getattr(cache, "has_pair", None)
        batch = int(getattr(cache, "batch_size", 0) or 0) if self.lookahead else 0
        if has_pair is None or batch <= 1:
            return needed
        missing = [p for p in needed if not has_pair(*p)]
        if not missing:
            return needed
        room = -len(missing) % batch
        order = [int(k) for k in held_keys[np.argsort(-holders, kind="stable")]]
        extra = []
        for ahead in range(i + 1, min(i + 1 + self.lookahead, end)):
            for k in order:
                if len(extra) >= room:
                    return needed + extra
                if not has_pair(k, ahead):
                    extra.append((k, ahead))
        return needed + extra

    def deviation_features(self, episode, steps, trials):
        """The tap features of the states (steps[n], trials[n]) of `episode`, (n, h, w, c)."""
        cache = self.caches[episode.video]
        return np.stack([
            getattr(cache.pair(episode.key_frames[s, j], episode.frames[s]), self.deviation_tap)[0]
            for s, j in zip(steps, trials)]).astype(np.float32)
