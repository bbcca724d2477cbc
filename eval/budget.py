"""Budget mode: hold a target AKI or a target model FPS by turning the key scheduler's knob online.

    controller = BudgetController(scheduler, target_aki=10)      # or target_fps=25, or neither
    runtime = DynamicSegmenter(dff, scheduler, budget=controller)
    for result in runtime.stream(frames):
        result.knob, controller.running_aki, controller.running_fps, controller.bound

Every scheduler has one knob, `KeyScheduler.threshold`, described once for the offline calibration
and for budget mode in `eval.calibrate.KNOBS` (bounds, log or logit domain, direction): rl = tau on
P(key), dvsnet = the confidence target in percent (key when the predicted score is below it),
flow_magnitude = the mean |flow| threshold, fixed = the interval K, random = the mean interval K
(key with probability 1/K).

The controller works in the calibration coordinate v = eval.calibrate.to_v(knob): the log of the
knob (flow threshold, K) or the logit of the knob as a fraction of its range (tau, DVSNet target),
signed so that the AKI rises with v; one gain is then the same relative step for every scheduler.
After each decided frame (the forced first key of a sequence is no decision, so it is not counted):

    v <- clip(v + g * (key_t - r*), v(bounds))

with key_t in {0, 1} and r* the target key rate (1 / target AKI). This is an integral controller:
summed, v - v_0 = g (keys - t r*), the key excess, so the knob keeps moving while keys come at
another rate than r* and rests only where they come at r* -- the long-run AKI is the target
whatever the scheduler's response curve (monotone, but steep, flat or noisy). Over one key interval
of K frames the step is g (1 - K / K*), the interval's relative error, the same at AKI 2 and at AKI
200. The step uses the key indicator, not a windowed or exponentially weighted rate: such an
estimate inside the loop adds its window as lag (overshoot, slower settling) and would not move
where the loop settles. The cost of a constant gain: from a knob far off, v closes about g per
target interval (g = 0.3: a factor e in ~3 key intervals). The clip is the anti-windup: a knob
that cannot reach the target stops at its bound instead of winding up, `bound` says "min" / "max"
on the frames where the error pushed it there, and `log` gets one line. Fixed K is kept
continuous (not rounded): the interval dithers between the two integers around a fractional AKI.

FPS targets become key-rate targets. With t_key and t_nonkey the model milliseconds of a key frame
and of a non-key frame (running medians of the runtime's per-stage times, so the rate follows the
machine), a rate r costs r t_key + (1 - r) t_nonkey per frame, hence

    r* = clip((1000 / F - t_nonkey) / (t_key - t_nonkey), 0, 1)

(r* = 1 where keys are not dearer than non-keys: every frame can then be a key). A target the
non-key path alone cannot reach gives r* = 0: the knob runs to its fewest-keys bound, saying so.

The running AKI / FPS (logged per frame by eval.segment_video) are over the last `window` frames:
frames / keys, and 1000 frames / their model milliseconds (eval.metrics.model_fps).
"""
import collections
import math

import numpy as np

from deeplab_face.errors import ConfigError
from eval.calibrate import KNOBS, from_v, to_v
from eval.metrics import STAGES

DEFAULT_GAIN = 0.3           # v units (log / logit) per extra or missing key; --budget_gain
MIN_WINDOW = 90              # running AKI / FPS window: at least H, the policy's history length
WINDOW_INTERVALS = 4         # ... and at least this many target key intervals
MEDIAN_SAMPLES = 101         # per-stage running medians over this many recent samples
MAX_NOTES = 5                # saturation lines printed per sequence (the CSV has every frame)


def knob_of(scheduler):
    """The scheduler's `eval.calibrate.Knob` (by its `name`): bounds, domain, direction (the one table
    the offline calibration and budget mode share); ConfigError for a scheduler without a knob."""
    name = getattr(scheduler, "name", None)
    if name not in KNOBS:
        raise ConfigError(f"--target_aki/--target_fps: scheduler {name!r} has no knob "
                          f"(one of {', '.join(KNOBS)})")
    return KNOBS[name]


def check_targets(target_aki=None, target_fps=None, gain=DEFAULT_GAIN):
    """ConfigError naming the flag for a budget that cannot be held: both targets, AKI < 1, FPS <= 0."""
    if target_aki is not None and target_fps is not None:
        raise ConfigError("--target_aki and --target_fps: give one budget, not both")
    if target_aki is not None and not (math.isfinite(target_aki) and target_aki >= 1.0):
        raise ConfigError(f"--target_aki: must be a number >= 1 (frames per key), got {target_aki}")
    if target_fps is not None and not (math.isfinite(target_fps) and target_fps > 0):
        raise ConfigError(f"--target_fps: must be a number > 0, got {target_fps}")
    if not (math.isfinite(gain) and gain > 0):
        raise ConfigError(f"--budget_gain: must be a number > 0, got {gain}")


def key_rate_for_fps(target_fps, t_key, t_nonkey):
    """The largest key rate in [0, 1] whose mean frame time r t_key + (1 - r) t_nonkey meets 1000 / F."""
    budget = 1000.0 / target_fps
    if t_key <= t_nonkey:            # a key costs no more than a non-key: key every frame
        return 1.0
    return float(np.clip((budget - t_nonkey) / (t_key - t_nonkey), 0.0, 1.0))


class RunningStats:
    """AKI and model FPS over the last `window` frames; running medians of the key / non-key paths."""

    def __init__(self, window=MIN_WINDOW, needs_flow_on_keys=True, median_samples=MEDIAN_SAMPLES):
        self.window = int(window)
        self.needs_flow_on_keys = needs_flow_on_keys   # False for fixed / random (lazy flow)
        self.median_samples = median_samples
        self.reset()

    def reset(self):
        self._frames = collections.deque(maxlen=self.window)   # (is_key, ms total)
        self._keys, self._ms = 0, 0.0
        self._stages = {s: collections.deque(maxlen=self.median_samples) for s in STAGES}

    def add(self, result):
        """Enter one `eval.runtime.FrameResult`."""
        if len(self._frames) == self.window:
            old_key, old_ms = self._frames[0]
            self._keys -= old_key
            self._ms -= old_ms
        total = float(result.ms["total"])
        self._frames.append((int(result.is_key), total))
        self._keys += int(result.is_key)
        self._ms += total
        for stage in STAGES:
            if result.ms[stage] > 0:     # only the stages this frame ran
                self._stages[stage].append(float(result.ms[stage]))

    @property
    def running_aki(self):
        """Frames / keys over the window (inf while the window holds no key)."""
        return len(self._frames) / self._keys if self._keys else math.inf

    @property
    def running_fps(self):
        return 1000.0 * len(self._frames) / self._ms if self._ms > 0 else math.inf

    def path_ms(self):
        """(t_key, t_nonkey) model milliseconds from the running medians, or None before both paths ran."""
        med = {s: float(np.median(v)) for s, v in self._stages.items() if v}
        if "key" not in med or "warp_task" not in med or "flow" not in med:
            return None
        policy = med.get("policy", 0.0)
        t_key = med["key"] + policy + (med["flow"] if self.needs_flow_on_keys else 0.0)
        return t_key, med["flow"] + policy + med["warp_task"]


class BudgetController:
    """Holds `target_aki` or `target_fps` by setting `scheduler.threshold` after every frame.

    With neither target it only measures (running AKI / FPS) and leaves the knob alone. The knob
    starts from the scheduler's threshold at construction (its default, --threshold, or the rl
    policy's operating threshold). `log`: a callable given one line when the knob saturates.
    """

    def __init__(self, scheduler, target_aki=None, target_fps=None, gain=DEFAULT_GAIN, window=None,
                 log=None):
        from eval.runtime import needs_observation

        check_targets(target_aki, target_fps, gain)
        self.scheduler = scheduler
        self.target_aki, self.target_fps, self.gain, self.log = target_aki, target_fps, float(gain), log
        self.active = target_aki is not None or target_fps is not None
        self.knob_spec = knob_of(scheduler) if self.active else None
        if window is None:
            window = max(MIN_WINDOW, math.ceil(WINDOW_INTERVALS * (target_aki or 1.0)))
        self.stats = RunningStats(window, needs_flow_on_keys=needs_observation(scheduler))
        self.initial = float(scheduler.threshold)
        self.reset()

    def reset(self):
        """A new sequence: the knob back to its starting value, empty statistics."""
        self.stats.reset()
        self.bound, self.saturated_frames, self.target_rate, self._notes = "", 0, math.nan, 0
        if self.active:
            k = self.knob_spec
            start = min(max(self.initial, k.low), k.high)
            if start != self.initial:
                self._note(f"budget: starting {k.label} {self.initial:g} is outside [{k.low:g}, {k.high:g}]; "
                           f"starting at {start:g}")
            self._v = to_v(k, start)
            self._v_low, self._v_high = sorted((to_v(k, k.low), to_v(k, k.high)))
            self.scheduler.threshold = start

    @property
    def knob(self):
        return float(self.scheduler.threshold)

    @property
    def running_aki(self):
        return self.stats.running_aki

    @property
    def running_fps(self):
        return self.stats.running_fps

    def update(self, result):
        """Enter the frame just segmented (`eval.runtime.FrameResult`); sets the knob for the next frame."""
        self.stats.add(result)
        if not self.active or result.index == 0:   # frame 0 is a forced key, not a decision
            return
        rate = self._target_rate()
        self.target_rate = rate
        if rate is None:                           # FPS mode before both paths were timed
            self.target_rate = math.nan
            return
        # v is the calibration coordinate, in which the AKI rises: an extra key pushes it up
        v = self._v + self.gain * (float(result.is_key) - rate)
        self._v = min(max(v, self._v_low), self._v_high)
        value = from_v(self.knob_spec, self._v, exact=True)   # exact: fixed K dithers between integers
        bound = ""
        if not self._v_low <= v <= self._v_high:   # pushed past a bound: the knob sits exactly on it
            low, high = self.knob_spec.low, self.knob_spec.high
            bound, value = ("min", low) if abs(value - low) < abs(value - high) else ("max", high)
        if bound and not self.bound:
            self._saturation_note(bound)
        self.bound = bound
        self.saturated_frames += int(bool(bound))
        self.scheduler.threshold = value

    def _target_rate(self):
        if self.target_aki is not None:
            return 1.0 / self.target_aki
        paths = self.stats.path_ms()
        return None if paths is None else key_rate_for_fps(self.target_fps, *paths)

    def _saturation_note(self, bound):
        k = self.knob_spec
        value = k.low if bound == "min" else k.high
        target = f"AKI {self.target_aki:g}" if self.target_aki is not None else f"{self.target_fps:g} FPS"
        extra = ""
        if self.target_fps is not None and self.stats.path_ms() is not None:
            t_key, t_nonkey = self.stats.path_ms()
            extra = f"; key path {t_key:.1f} ms, non-key path {t_nonkey:.1f} ms"
        self._note(f"budget: {self.scheduler.name} {k.label} saturated at its {bound} {value:g}: target {target} "
                   f"not reachable (running AKI {self.running_aki:.3g}, {self.running_fps:.3g} FPS{extra})")

    def _note(self, line):
        if self.log is not None and self._notes < MAX_NOTES:
            self._notes += 1
            self.log(line)

    def summary(self):
        """Final knob and how often it sat at a bound (for the command's closing line)."""
        return dict(knob=self.knob, saturated_frames=self.saturated_frames, running_aki=self.running_aki,
                    running_fps=self.running_fps, target_aki=self.target_aki, target_fps=self.target_fps)
