"""Decision history: KAR and LKD over the last H decisions (paper §3.2, paper.md §3).

One implementation, `BatchedHistory`, keeps M independent histories as numpy
arrays (the M trials of an episode); `DecisionHistory` is the same arithmetic
for one sequence (the runtime and the schedulers).

- The window holds the last `window` decisions, pre-filled with non-key
  (`kar_prefill="nonkey"`, KAR = keys / H) or empty (`"none"`, KAR = keys /
  decisions so far, 0 before the first decision).
- LKD = i - k, the frames since the last key, for the frame about to be decided.
- The policy's expert input scales both (options in rl_scheduler/config.py): KAR times
  `kar_scale` (1 / eta with kar_input="budget"), and LKD times `lkd_scale` (lkd_input="linear",
  the paper reconstruction) or log2(1 + LKD) (lkd_input="log").
- The forced first key of a sequence is not a decision: `force_key()` sets the
  last key without entering the window.
"""
import numpy as np

from rl_scheduler import config


class BatchedHistory:
    """M decision histories stepped together; inactive trials can be left out of a push."""

    def __init__(self, batch, window=config.HISTORY_WINDOW,
                 kar_prefill=config.DEFAULT_OPTIONS["kar_prefill"],
                 lkd_scale=config.DEFAULT_OPTIONS["lkd_scale"], kar_scale=1.0, lkd_input="linear"):
        config.check_choice("kar_prefill", kar_prefill)
        config.check_choice("lkd_input", lkd_input)
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.batch = int(batch)
        self.window = int(window)
        self.kar_prefill = kar_prefill
        self.lkd_scale = float(lkd_scale)
        self.kar_scale = float(kar_scale)
        self.lkd_input = lkd_input
        self.reset()

    def reset(self):
        """Empty histories: the window is all non-key, no key seen yet."""
        self._slots = np.zeros((self.batch, self.window), bool)
        self._decisions = np.zeros(self.batch, np.int64)   # decisions pushed so far
        self._distance = np.zeros(self.batch, np.int64)    # i - k for the next frame

    def force_key(self, mask=None):
        """The forced first key (§3): the next frame is 1 past a key; the window is untouched."""
        mask = self._mask(mask)
        self._distance[mask] = 1

    def push(self, is_key, mask=None):
        """Enter one decision per trial (where `mask` is True)."""
        mask = self._mask(mask)
        is_key = np.broadcast_to(np.asarray(is_key, bool), (self.batch,))
        rows = np.nonzero(mask)[0]
        self._slots[rows, self._decisions[rows] % self.window] = is_key[rows]
        self._decisions[rows] += 1
        self._distance[rows] = np.where(is_key[rows], 1, self._distance[rows] + 1)

    @property
    def keys(self):
        """Key decisions in each window, (M,) int."""
        return self._slots.sum(axis=1)

    def _kar64(self):
        keys = self.keys.astype(np.float64)
        if self.kar_prefill == "nonkey":
            return keys / self.window
        seen = np.minimum(self._decisions, self.window)
        return np.where(seen > 0, keys / np.maximum(seen, 1), 0.0)

    @property
    def kar(self):
        """Key-all ratio per trial, (M,) float32."""
        return self._kar64().astype(np.float32)

    @property
    def last_key_distance(self):
        """i - k for the frame about to be decided, (M,) int."""
        return self._distance.copy()

    @property
    def lkd(self):
        """Scaled last-key distance per trial, (M,) float32."""
        return lkd_feature(self._distance, self.lkd_input, self.lkd_scale, self.window)

    def expert(self):
        """The policy's expert input [KAR * kar_scale, LKD feature], (M, 2) float32 (§3.2)."""
        return np.stack([(self._kar64() * self.kar_scale).astype(np.float32), self.lkd], axis=1)

    def exceeds(self, limit):
        """True where KAR has surpassed `limit` (§4 stop rule), robust to float rounding."""
        return self._kar64() > float(limit) + 1e-9

    def _mask(self, mask):
        if mask is None:
            return np.ones(self.batch, bool)
        return np.broadcast_to(np.asarray(mask, bool), (self.batch,))


def lkd_feature(distance, lkd_input="linear", lkd_scale=config.DEFAULT_OPTIONS["lkd_scale"],
                window=config.HISTORY_WINDOW):
    """The LKD entry of the expert input for last-key distances `distance` (float32 array)."""
    distance = np.asarray(distance, np.float64)
    if lkd_input == "log":
        return np.log2(1.0 + distance).astype(np.float32)
    return (distance * lkd_scale).astype(np.float32)


def motion_feature(flow_change, motion_scale=1.0):
    """The motion entry of the expert input (motion_input="flow_change"): the mean flow magnitude from
    the key to the current frame less its value at the first frame after the key, scaled."""
    return (np.asarray(flow_change, np.float64) * float(motion_scale)).astype(np.float32)


def expert_options(kar_limit, kar_input, lkd_input, window=config.HISTORY_WINDOW,
                   kar_prefill=config.DEFAULT_OPTIONS["kar_prefill"],
                   lkd_scale=config.DEFAULT_OPTIONS["lkd_scale"]):
    """History keyword arguments for a policy trained with these options (train and test alike)."""
    config.check_choice("kar_input", kar_input)
    return dict(window=window, kar_prefill=kar_prefill, lkd_scale=lkd_scale, lkd_input=lkd_input,
                kar_scale=1.0 / float(kar_limit) if kar_input == "budget" else 1.0)


class DecisionHistory:
    """One sequence's history: `push(is_key)`, `kar`, `lkd` (DESIGN.md)."""

    def __init__(self, window=config.HISTORY_WINDOW,
                 kar_prefill=config.DEFAULT_OPTIONS["kar_prefill"],
                 lkd_scale=config.DEFAULT_OPTIONS["lkd_scale"], kar_scale=1.0, lkd_input="linear"):
        self._batched = BatchedHistory(1, window, kar_prefill, lkd_scale, kar_scale, lkd_input)

    @property
    def window(self):
        return self._batched.window

    def reset(self):
        self._batched.reset()

    def force_key(self):
        self._batched.force_key()

    def push(self, is_key):
        self._batched.push(bool(is_key))

    @property
    def keys(self):
        return int(self._batched.keys[0])

    @property
    def kar(self):
        return float(self._batched.kar[0])

    @property
    def lkd(self):
        return float(self._batched.lkd[0])

    @property
    def last_key_distance(self):
        return int(self._batched.last_key_distance[0])

    def expert(self):
        """[[KAR, LKD]], (1, 2) float32, ready for the policy."""
        return self._batched.expert()

    def exceeds(self, limit):
        return bool(self._batched.exceeds(limit)[0])
