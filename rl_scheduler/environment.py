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
- Rewards: Eq. 1 or Eq. 2 (`rl_scheduler.rewards`), credited to a key for its own frame
  (`reward_credit="frame"`, the paper's reconstructed body) or for the loss it removes on every
  frame until the next key (`"span"`, the default; see `span_rewards`).
- A step whose pairs are not all cached fills its compiled batch with the next
  frames of the held keys (`lookahead`): the values are the same, calls are fewer.
"""
import dataclasses

import numpy as np

from rl_scheduler import config, rewards
from rl_scheduler.history import BatchedHistory, expert_options, motion_feature


def flow_change(cache, k, i, pair=None):
    """The motion since the key k at frame i as the flow net reports it (motion_input="flow_change"):
    m(k, i) - m(k, k + 1), the mean flow magnitude less its value at the first frame after the key, so that
    a flow net's content-dependent offset cancels. `pair`: cache.pair(k, i) when the caller has it."""
    pair = cache.pair(k, i) if pair is None else pair
    return float(pair.flow_magnitude) - float(cache.pair(k, k + 1).flow_magnitude)


@dataclasses.dataclass
class Episode:
    """One episode's M trajectories; arrays are (steps, M) with steps = T - 1 decisions."""
    video: int
    start: int
    frames: np.ndarray       # (steps,) absolute frame index i of each decision
    key_frames: np.ndarray   # (steps, M) last key frame k when deciding i
    expert: np.ndarray       # (steps, M, E) [KAR, LKD(, motion)] seen by the policy
    key_prob: np.ndarray     # (steps, M) pi(a1 | s) from the policy
    actions: np.ndarray      # (steps, M) bool, True = key
    rewards: np.ndarray      # (steps, M) float64, 0 where inactive
    active: np.ndarray       # (steps, M) bool, the trial was running and acted
    quality: np.ndarray = None   # (steps, M) mIoU (fraction) of the trial's own result on frame i
    gross_rewards: np.ndarray = None   # rewards before the key price
    forced: np.ndarray = None    # (steps, M) keys forced by max_gap: not decisions, no gradient

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


@dataclasses.dataclass
class _Record:
    """A batched rollout's per-step arrays, (steps, trials of every episode) each."""
    key_frames: np.ndarray
    expert: np.ndarray
    key_prob: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    active: np.ndarray
    quality: np.ndarray
    forced: np.ndarray

    @classmethod
    def empty(cls, steps, count, expert_size):
        shape = (steps, count)
        return cls(key_frames=np.zeros(shape, np.int64), expert=np.zeros(shape + (expert_size,), np.float32),
                   key_prob=np.zeros(shape, np.float32), actions=np.zeros(shape, bool),
                   rewards=np.zeros(shape, np.float64), active=np.zeros(shape, bool),
                   quality=np.full(shape, np.nan), forced=np.zeros(shape, bool))


def sampled_actions(eps_clip=config.EPSILON):
    """Training action rule (§7): sample with P(key) clipped to [1 - eps, eps] (epsilon-greedy)."""

    def select(key_prob, rng):
        p = np.clip(key_prob, 1.0 - eps_clip, eps_clip)
        return rng.random(p.shape) < p

    return select


def threshold_actions(tau=config.TAU):
    """Deterministic rule: key iff pi(a1 | s) > tau (§3.1, validation and test). `tau` may be an
    (M,) array: one threshold per trial, so one batched rollout traces several operating points."""

    def select(key_prob, rng):
        del rng
        key_prob = np.asarray(key_prob)
        # one threshold per trial; a batch of several episodes repeats the list per episode
        return key_prob > np.resize(np.asarray(tau, np.float64), key_prob.shape)

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
                 pseudo_acc=config.DEFAULT_OPTIONS["pseudo_acc"], lookahead=8,
                 kar_input=config.DEFAULT_OPTIONS["kar_input"], lkd_input=config.DEFAULT_OPTIONS["lkd_input"],
                 reward_credit=config.DEFAULT_OPTIONS["reward_credit"],
                 credit_horizon=config.CREDIT_HORIZON, max_gap=None,
                 motion_input=config.DEFAULT_OPTIONS["motion_input"], motion_scale=1.0):
        if not caches:
            raise ValueError("KeyEnvironment needs at least one video cache")
        config.check_choice("reward", reward)
        config.check_choice("stop_check", stop_check)
        config.check_choice("deviation_tap", deviation_tap)
        config.check_choice("reward_units", reward_units)
        config.check_choice("pseudo_acc", pseudo_acc)
        config.check_choice("reward_credit", reward_credit)
        config.check_choice("motion_input", motion_input)
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
        self.reward_credit = reward_credit
        # Price lambda charged per decided key (0: none, the paper). REINFORCE adjusts it by dual
        # ascent toward the budget's key rate (rl_scheduler.reinforce, key_price="dual").
        self.key_price = 0.0
        self.credit_horizon = int(credit_horizon)
        # Training only: a trial whose LKD reaches max_gap keys (not a policy decision; no gradient),
        # so every state it visits is in the precomputed pair table. None: never forced.
        self.max_gap = None if not max_gap else int(max_gap)
        self.motion_input, self.motion_scale = motion_input, float(motion_scale)
        self.history_options = expert_options(kar_limit, kar_input, lkd_input, self.window, kar_prefill,
                                              self.lkd_scale)

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

    @property
    def expert_size(self):
        """Entries of the policy's expert input: KAR, LKD (and the motion since the key)."""
        return 3 if self.motion_input == "flow_change" else 2

    def flow_change_scale(self, rng, pairs=1024):
        """1 / std of the motion since the key, m(k, i) - m(k, k + 1), over random pairs within the
        pair table (gaps up to max_gap or credit_horizon): the motion input's `motion_scale`."""
        from rl_scheduler.probe import sample_pairs   # the one random (video, k, i) sampler

        values = [flow_change(self.caches[c], k, i)
                  for c, k, i in sample_pairs(self.caches, pairs, self.max_gap or self.credit_horizon, rng)]
        std = float(np.std(values))
        return 1.0 / std if std > 1e-9 else 1.0

    def deviation_shape(self):
        """(h, w, c) of the chosen Conv6 tap (from the first video's first pair)."""
        entry = self.caches[0].pair(0, min(1, self.caches[0].num_frames - 1))
        return tuple(getattr(entry, self.deviation_tap).shape[1:])

    def rollout(self, policy_fn, select_fn, video, start, rng=None, trials=None, enforce_limit=True):
        """Run `trials` trials of the episode (video, start) as one batch (`rollout_many`)."""
        return self.rollout_many(policy_fn, select_fn, [(video, start)], rng, trials, enforce_limit)[0]

    def rollout_many(self, policy_fn, select_fn, starts, rng=None, trials=None, enforce_limit=True):
        """Run `trials` trials of each episode of `starts` [(video, start)], all as ONE batch: the
        policy sees E x M states per step in one call (episodes are cut to a common length).

        Args:
          policy_fn: (deviation (N, h, w, c), expert (N, E) [KAR, LKD(, motion)]) -> P(key) (N,) numpy.
          select_fn: (P(key) (N,), rng) -> bool actions (N,); see `sampled_actions`.
          enforce_limit: apply the KAR stop rule (training); False runs every trial to the last
            frame as a deployed scheduler does (validation at a threshold).
        Returns one `Episode` per entry of `starts`.
        """
        trials = self.trials if trials is None else int(trials)
        length = min(self.length_for(v) for v, _ in starts)
        count, steps = len(starts) * trials, length - 1
        owner = np.repeat(np.arange(len(starts)), trials)            # row -> episode
        first = np.repeat([s for _, s in starts], trials).astype(np.int64)
        history = BatchedHistory(count, **self.history_options)
        history.force_key()                                # frame `start` is a forced key
        last_key, running = first.copy(), np.ones(count, bool)
        record = _Record.empty(steps, count, self.expert_size)
        limit = self.kar_limit if enforce_limit else np.inf
        caches = [self.caches[v] for v, _ in starts]
        for cache, (_, s) in zip(caches, starts):
            if hasattr(cache, "prefetch_keys"):  # N on every frame of the episode in full batches
                cache.prefetch_keys(range(s, s + length))
        deviation = None
        for t in range(steps):
            if self.stop_check == "before":
                running &= ~history.exceeds(limit)   # §4: stop before acting
            if not running.any():
                break
            frame = first + 1 + t
            pair_of = self._held_pairs(caches, starts, owner, running, frame, last_key, length)
            rows = np.nonzero(running)[0]
            deviation = self._step_deviation(deviation, pair_of, rows, running)
            expert = history.expert()
            if self.motion_input == "flow_change":
                expert = self._with_motion(expert, pair_of, caches, owner, rows, last_key)
            prob = np.asarray(policy_fn(deviation, expert), np.float32).reshape(count)
            actions = np.asarray(select_fn(prob, rng), bool) & running
            if self.max_gap:
                record.forced[t] = running & (frame - last_key >= self.max_gap)
                actions |= record.forced[t]
            key_entries = [caches[owner[r]].key(int(frame[r])) for r in rows]
            record.rewards[t, rows] = rewards.pair_rewards(
                self.reward, actions[rows], key_entries, [pair_of[r] for r in rows],
                self.reward_units, self.pseudo_acc)
            record.quality[t, rows] = [key.miou if actions[r] else pair_of[r].miou
                                       for key, r in zip(key_entries, rows)]
            record.key_frames[t], record.expert[t], record.key_prob[t] = last_key, expert, prob
            record.actions[t], record.active[t] = actions, running
            history.push(actions, running)
            last_key = np.where(actions, frame, last_key)
            if self.stop_check == "after":
                crossed = running & history.exceeds(limit)
                record.rewards[t, crossed] = 0.0               # the crossing key ends the trial, unrewarded
                running &= ~crossed
        return [self._episode(record, e, trials, video, start, length, caches[e])
                for e, (video, start) in enumerate(starts)]

    def _step_deviation(self, deviation, pair_of, rows, running):
        """The step's deviation batch (allocated on the first step, refilled after): the running trials'
        taps, zeros for stopped trials (ignored)."""
        if deviation is None:
            tap = getattr(pair_of[rows[0]], self.deviation_tap)
            deviation = np.zeros((len(running),) + tap.shape[1:], np.float32)
        deviation[~running] = 0.0
        deviation[rows] = np.concatenate([getattr(pair_of[r], self.deviation_tap) for r in rows])
        return deviation

    def _with_motion(self, expert, pair_of, caches, owner, rows, last_key):
        """`expert` with the motion column appended: each running trial's flow magnitude less its key's first
        step's (0 for stopped trials), through `motion_feature`."""
        change = np.zeros(len(owner))
        change[rows] = [flow_change(caches[owner[r]], int(last_key[r]), None, pair_of[r]) for r in rows]
        return np.concatenate([expert, motion_feature(change, self.motion_scale)[:, None]], 1)

    def _held_pairs(self, caches, starts, owner, running, frame, last_key, length):
        """Row -> the cached (last key, current frame) pair entry of each running trial (None when
        stopped); one lookup per distinct key frame of an episode, shared by the trials holding it."""
        pair_of = [None] * len(owner)
        for e, cache in enumerate(caches):
            rows = np.nonzero(running & (owner == e))[0]
            if not len(rows):
                continue
            i = int(frame[rows[0]])
            held_keys, holders = np.unique(last_key[rows], return_counts=True)
            cache.prefetch_pairs(self._step_pairs(cache, held_keys, holders, i, starts[e][1] + length))
            entries = {int(k): cache.pair(int(k), i) for k in held_keys}
            for r in rows:
                pair_of[r] = entries[int(last_key[r])]
        return pair_of

    def _episode(self, record, e, trials, video, start, length, cache):
        """Episode `e` of a batched rollout: its trials' columns of `record`, then the span credit
        and the key price on its rewards."""
        cols = slice(e * trials, (e + 1) * trials)
        episode = Episode(video, start, np.arange(start + 1, start + length), record.key_frames[:, cols].copy(),
                          record.expert[:, cols].copy(), record.key_prob[:, cols].copy(),
                          record.actions[:, cols].copy(), record.rewards[:, cols].copy(),
                          record.active[:, cols].copy(), record.quality[:, cols].copy())
        episode.forced = record.forced[:, cols].copy()
        if self.reward_credit == "span":
            episode.rewards = span_rewards(self._frame_loss(cache), episode, start + length, self.credit_horizon)
        episode.gross_rewards = episode.rewards
        if self.key_price:
            episode.rewards = episode.rewards - self.key_price * (episode.actions & episode.active)
        return episode

    def _frame_loss(self, cache):
        """q(k, j): what propagating frame j from key k loses against keying j (0 when k == j).

        Eq. 1: U^{a1}_j - U^{a0}_{k,j}; Eq. 2: 1 - Acc(y^{a0}_{k,j}, y^{a1}_j). A key at i then earns
        q(k, i) under frame credit, the Eq. 1 / Eq. 2 reward itself (`rewards.pair_rewards`)."""
        memo = {}
        scale = 100.0 if self.reward_units == "percent" else 1.0
        field = "agreement" if self.pseudo_acc == "pixel_acc" else "pseudo_miou"

        def loss(k, j):
            if k == j:
                return 0.0
            j = min(j, k + self.credit_horizon)    # beyond the table: propagation loss taken as saturated
            if (k, j) not in memo:
                pair = cache.pair(k, j)
                value = cache.key(j).miou - pair.miou if self.reward == "eq1" else 1.0 - getattr(pair, field)
                memo[(k, j)] = scale * float(value)
            return memo[(k, j)]

        return loss

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


def span_rewards(loss, episode, end, horizon):
    """Span credit: a key at frame i (previous key k) earns the loss it removes on the `horizon`
    frames from i on, sum_{j=i}^{min(end, i + horizon) - 1} [q(k, j) - q(i, j)], as if no later key
    came. `loss` clamps q(k, j) at the pair table's largest gap (`KeyEnvironment._frame_loss`).

    Why not up to the next key: the n-th key's credit is then L_{n-1} - L_n (within the horizon),
    L_n the episode's loss with the first n keys only, which depends on past actions alone (so
    REINFORCE's reward-to-go stays unbiased), and the credits telescope: a trial's return is the
    episode's loss with no decided key minus its loss with the trial's keys, i.e. the quality its
    keys buy, where they fall included. Crediting only up to the next key would make a key's reward
    depend on the next decision, and the rewards would no longer add up to the objective.

    Returns (steps, M) float64 rewards.
    """
    out = np.zeros(episode.rewards.shape)
    first = int(episode.frames[0]) - 1 if len(episode.frames) else 0   # the forced key
    for j in range(out.shape[1]):
        k = first
        for t in np.nonzero(episode.actions[:, j] & episode.active[:, j])[0]:
            i = int(episode.frames[t])
            out[t, j] = sum(loss(k, f) - loss(i, f) for f in range(i, min(end, i + horizon)))
            k = i
    return out
