"""Key schedulers: the RL policy and the baselines (paper §3.1, §4.2; paper.md §10).

All share the `KeyScheduler` interface (docs/interfaces.md):
  reset()                      start a new sequence (empty history);
  decide(observation)          -> (is_key, score); frame 0 is always a key, without a decision;
  record(is_key)               enter the decision actually taken in the history;
  threshold                    the one knob a sweep turns.
`observation` = dict conv6, conv6_1 ((1, h, w, c) arrays), flow_magnitude (float,
mean |flow| from the last key in feature-grid pixels), frame_index (0-based).
Every scheduler keeps its KAR / LKD in `rl_scheduler.history.DecisionHistory`.
"""
import abc
import numpy as np

from deeplab_face.errors import ConfigError
from rl_scheduler import config
from rl_scheduler.history import DecisionHistory, expert_options, motion_feature
from rl_scheduler.policy import compiled_forward, expert_size_of


class KeyScheduler(abc.ABC):
    """Base class: history bookkeeping and the forced first key."""

    name = "base"

    def __init__(self, threshold, window=config.HISTORY_WINDOW,
                 kar_prefill=config.DEFAULT_OPTIONS["kar_prefill"],
                 lkd_scale=config.DEFAULT_OPTIONS["lkd_scale"], kar_scale=1.0, lkd_input="linear"):
        self.threshold = threshold
        self.history = DecisionHistory(window, kar_prefill, lkd_scale, kar_scale, lkd_input)
        self._forced = False

    def reset(self):
        self.history.reset()
        self._forced = False

    def decide(self, observation):
        """(is_key, score) for the frame of `observation`; frame 0 -> (True, nan)."""
        if int(observation.get("frame_index", 1)) == 0:
            self.reset()
            self._forced = True
            return True, float("nan")
        self._forced = False
        score = float(self.score(observation))
        return bool(self.is_key(score)), score

    def record(self, is_key):
        """Enter the decision taken for the last decided frame (the forced first key is no decision)."""
        if self._forced:
            self.history.force_key()
            self._forced = False
        else:
            self.history.push(is_key)

    @abc.abstractmethod
    def score(self, observation):
        """The scheduler's number for this frame (P(key), confidence, flow magnitude, ...)."""

    @abc.abstractmethod
    def is_key(self, score):
        """Key or not, from `score` and the threshold."""


class PolicyScheduler(KeyScheduler):
    """`rl`: key when pi(a1 | s) > threshold (tau), s = (Conv6 tap, [KAR, LKD]) (§3.1)."""

    name = "rl"

    def __init__(self, policy, threshold=config.TAU, deviation_tap=None, **history_options):
        # the expert input exactly as in training (KAR / eta, log LKD, ...); explicit options win
        super().__init__(float(threshold), **dict(policy_history_options(policy), **history_options))
        self.policy = policy
        # load_policy() tags the model with the tap it was trained on
        tap = deviation_tap or getattr(policy, "deviation_tap", config.DEFAULT_OPTIONS["deviation_tap"])
        self.deviation_tap = config.check_choice("deviation_tap", tap)
        self._forward = compiled_forward(policy)   # one trace per model, shared by schedulers
        # motion_input="flow_change": m(k, i) - m(k, k + 1), as in training (rl_scheduler.environment)
        self._motion = expert_size_of(policy) == 3
        training = dict(getattr(policy, "stage_config", None) or {}).get("training") or {}
        self._motion_scale = float(training.get("motion_scale", 1.0))
        self._motion_base = 0.0

    def score(self, observation):
        deviation = np.asarray(observation[self.deviation_tap], np.float32)
        expert = self.history.expert()
        if self._motion:
            magnitude = float(observation["flow_magnitude"])
            if self.history.last_key_distance <= 1:    # the first frame after a key sets the base
                self._motion_base = magnitude
            change = motion_feature([magnitude - self._motion_base], self._motion_scale)
            expert = np.concatenate([expert, change[:, None]], 1)
        return float(self._forward(deviation, expert)[0, 1])

    def is_key(self, score):
        return score > self.threshold


def policy_history_options(policy):
    """History options a policy was trained with, from its stage config (`load_policy`); a policy
    without one (built in code) gets the paper's raw KAR and linear LKD."""
    training = dict(getattr(policy, "stage_config", None) or {}).get("training") or {}
    D = config.DEFAULT_OPTIONS
    if "kar_limit" not in training:
        return {}
    return expert_options(training["kar_limit"], training.get("kar_input", "raw"),
                          training.get("lkd_input", "linear"), training.get("window", config.HISTORY_WINDOW),
                          training.get("kar_prefill", D["kar_prefill"]), training.get("lkd_scale", D["lkd_scale"]))


class DVSNetScheduler(KeyScheduler):
    """`dvsnet`: key when the predicted confidence score (percent) is below the target (dvsnet.md)."""

    name = "dvsnet"

    def __init__(self, network, threshold=config.DVSNET_TARGET, deviation_tap=None, **history_options):
        super().__init__(float(threshold), **history_options)
        self.network = network
        tap = deviation_tap or getattr(network, "deviation_tap", "conv6_1")  # DVSNet uses conv6_1
        self.deviation_tap = config.check_choice("deviation_tap", tap)
        self._forward = compiled_forward(network)

    def score(self, observation):
        deviation = np.asarray(observation[self.deviation_tap], np.float32)
        return float(self._forward(deviation)[0, 0])

    def is_key(self, score):
        return score < self.threshold


class FlowMagnitudeScheduler(KeyScheduler):
    """`flow_magnitude`: key when the mean flow magnitude from the last key exceeds the threshold."""

    name = "flow_magnitude"

    def __init__(self, threshold=1.0, **history_options):
        super().__init__(float(threshold), **history_options)

    def score(self, observation):
        return float(observation["flow_magnitude"])

    def is_key(self, score):
        return score > self.threshold


class FixedScheduler(KeyScheduler):
    """`fixed`: a key every K frames (DFF); the score is the distance to the last key."""

    name = "fixed"

    def __init__(self, threshold=config.DFF_KEY_INTERVAL, **history_options):
        if int(threshold) < 1:
            raise ConfigError(f"fixed scheduler: interval must be >= 1, got {threshold}")
        super().__init__(int(threshold), **history_options)

    def score(self, observation):
        return self.history.last_key_distance

    def is_key(self, score):
        return score >= self.threshold


class RandomScheduler(KeyScheduler):
    """`random`: a key with probability 1/K per frame (reconstructed), seeded; score = the draw."""

    name = "random"

    def __init__(self, threshold=config.DFF_KEY_INTERVAL, seed=0, **history_options):
        if float(threshold) < 1:
            raise ConfigError(f"random scheduler: interval must be >= 1, got {threshold}")
        super().__init__(float(threshold), **history_options)
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def score(self, observation):
        return float(self.rng.random())

    def is_key(self, score):
        return score < 1.0 / self.threshold


SCHEDULERS = {cls.name: cls for cls in
              (PolicyScheduler, DVSNetScheduler, FlowMagnitudeScheduler, FixedScheduler, RandomScheduler)}


def make_scheduler(name, **options):
    """A `KeyScheduler` by name: rl(policy=...), dvsnet(network=...), flow_magnitude, fixed, random.

    `threshold` is the sweep knob of each (tau, target %, flow pixels, interval K, interval K).
    """
    if name not in SCHEDULERS:
        raise ConfigError(f"--scheduler: unknown scheduler {name!r} (one of {', '.join(SCHEDULERS)})")
    try:
        return SCHEDULERS[name](**options)
    except TypeError as e:
        raise ConfigError(f"--scheduler={name}: {e}") from None
