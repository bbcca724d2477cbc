"""Calibrating a scheduler's knob to target AKIs with measured runs (issue 13, item 4).

`run(knob)` measures an operating point (a sweep run over the test videos) and its AKI. The AKI is
monotone in the knob in principle, but stepwise (a key is a discrete event; a learnt score has
atoms) and, with decisions that feed back into the history, possibly non-monotone ("noisy"). A
`Calibrator` searches the knob until a measured AKI lies within +-tolerance of the target, and
otherwise says why not; it never interpolates: every AKI it returns was measured by a run.

Search, in the knob's unbounded coordinate v (log or logit of the knob, signed so that the AKI
rises with v):
  1. a run already within the band (from any earlier target) is the answer; no knob is run twice
     (results are cached per knob value, across targets, so brackets found for one target serve
     the next);
  2. a first probe: `guess` (fixed / random: K = the target), else the knob's start;
  3. with runs on both sides of the target, the adjacent pair (in v) whose AKIs straddle it is the
     bracket: the next probe is the log-AKI secant point (clipped to the inner 80 % of the
     bracket, so the bracket shrinks every step) on the first and third split, else the midpoint
     (a guaranteed halving when the response is a step function the secant keeps missing);
  4. with runs on one side only, the search extends past the extreme run: first to the nearest
     unrun `probes` value on that side (the sweep presets' grids), else by a step in v that doubles
     each time, clipped to the knob's bound;
  5. it gives up with `reason`: "out_of_range" (the run at the knob's bound is still on the wrong
     side: the knob cannot reach the target), "jump" (the bracket is narrower than the knob's
     resolution, or two adjacent integers: the response steps over the band), or "max_runs".
     A miss returns the measured run nearest to the target (in log AKI), `calibrated=False`, with
     the nearest measured runs below and above the target (`below`, `above`).
"""
import dataclasses
import math

from deeplab_face.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Knob:
    """A scheduler's knob. Bounds [low, high] in knob units; `domain` "log" (v = +-ln knob) or
    "logit" (v = +-logit(knob / scale)); `raises_aki`: a higher knob gives fewer keys; `integer`:
    only whole values (fixed K); `start`: the first probe when there is no guess; `resolution`: the
    narrowest bracket (in v) worth splitting (0.01: a 1 % change of the knob, or of
    its odds for a logit knob); `step`: the first extension step in v."""
    label: str
    low: float
    high: float
    domain: str
    raises_aki: bool
    start: float
    scale: float = 1.0
    integer: bool = False
    resolution: float = 1e-2
    step: float = 1.0


# The bounds keep the logit finite: float32 softmax saturates near 1e-7 (rl), and DVSNet's score is a
# predicted agreement in percent. 1e3 feature-grid pixels is beyond any grid (129 wide at 513 px).
KNOBS = {
    # A policy's P(key) and DVSNet's regressed score are continuous: brackets narrower than 1 % of the
    # odds still split the frames (DVSNet's scores on one video can sit within 0.05 points).
    "rl": Knob("tau", 1e-6, 1.0 - 1e-6, "logit", True, 0.5, resolution=1e-4),     # key when P(key) > tau
    "dvsnet": Knob("target %", 0.01, 99.99, "logit", False, 90.0, scale=100.0,
                   resolution=1e-4),                                               # key when score < target
    "flow_magnitude": Knob("flow threshold", 1e-3, 1e3, "log", True, 1.0),       # key when |flow| > thr
    "fixed": Knob("interval K", 1.0, 1e4, "log", True, 10.0, integer=True),
    "random": Knob("interval K", 1.0, 1e4, "log", True, 10.0),                   # key with p = 1 / K
}


# eval.causal_oracle's references: a score in (0, 1) ((1 + gain) / 2, 1 - mIoU, 1 - agreement), key above it
KNOBS.update({name: Knob("score", 1e-6, 1.0 - 1e-6, "logit", True, 0.5, resolution=1e-4)
              for name in ("causal_oracle", "causal_propagated", "causal_agreement")})


def knob_for(name, **changes):
    """KNOBS[name], with fields replaced (e.g. high=longest video for fixed K)."""
    if name not in KNOBS:
        raise ConfigError(f"--scheduler: no knob for {name!r} (one of {', '.join(KNOBS)})")
    return dataclasses.replace(KNOBS[name], **changes)


def to_v(knob, value):
    """The search coordinate of a knob value: the AKI rises with v."""
    if knob.domain == "log":
        u = math.log(value)
    elif knob.domain == "logit":
        p = value / knob.scale
        u = math.log(p / (1.0 - p))
    else:
        raise ConfigError(f"knob {knob.label}: unknown domain {knob.domain!r}")
    return u if knob.raises_aki else -u


def from_v(knob, v, exact=False):
    """The knob value at v, within the bounds (rounded for an integer knob unless `exact`)."""
    u = v if knob.raises_aki else -v
    value = math.exp(u) if knob.domain == "log" else knob.scale / (1.0 + math.exp(-u))
    value = min(max(value, knob.low), knob.high)
    return float(round(value)) if knob.integer and not exact else value


def in_band(aki, target, tolerance=0.1):
    """|aki - target| <= tolerance * target, with room for float rounding (22 / 10 is within 10 % of 2)."""
    return abs(float(aki) - float(target)) <= float(tolerance) * float(target) * (1 + 1e-9)


def _aki(result):
    return float(result["aki"] if isinstance(result, dict) else result)


@dataclasses.dataclass
class Calibration:
    """One target's outcome. knob / aki / result: the returned run (measured, never interpolated);
    calibrated: its AKI is within the band; reason: "hit", "out_of_range", "jump" or "max_runs";
    below / above: (knob, AKI) of the measured runs nearest to the target on each side (None when
    there is none, or on a hit); new_runs: runs made for this target."""
    target: float
    knob: float
    aki: float
    result: object
    calibrated: bool
    reason: str
    below: tuple = None
    above: tuple = None
    new_runs: int = 0

    def to_json(self):
        side = lambda s: None if s is None else {"knob": s[0], "aki": s[1]}  # noqa: E731
        return {"target_aki": self.target, "calibrated": self.calibrated, "reason": self.reason,
                "knob": self.knob, "aki": self.aki, "below": side(self.below), "above": side(self.above),
                "new_runs": self.new_runs}


class Calibrator:
    """Searches one knob for target AKIs; `runs` caches {knob value: run(knob)} across targets.

    run: knob value -> a measured AKI (number) or a dict with "aki" (a sweep point).
    probes: knob values preferred when the search extends past its extreme run (preset grids).
    log: called with one line per run (None: silent).
    """

    def __init__(self, run, knob, tolerance=0.1, max_runs=8, probes=(), log=None):
        if not 0.0 < tolerance < 1.0:
            raise ConfigError(f"--aki_tolerance={tolerance}: must be in (0, 1)")
        if max_runs < 1:
            raise ConfigError(f"--max_calibration_runs={max_runs}: must be at least 1")
        self.run, self.knob, self.tolerance, self.max_runs = run, knob, float(tolerance), int(max_runs)
        self.probes = sorted({self._clamp(p) for p in probes})
        self.log = log
        self.runs = {}

    def _clamp(self, value):
        value = min(max(float(value), self.knob.low), self.knob.high)
        return float(round(value)) if self.knob.integer else value

    def measure(self, value):
        """run(value), once per knob value."""
        value = self._clamp(value)
        if value not in self.runs:
            self.runs[value] = self.run(value)
            if self.log:
                self.log(f"  {self.knob.label} {value:.6g}: AKI {_aki(self.runs[value]):.2f}")
        return self.runs[value]

    def _points(self):
        return sorted((to_v(self.knob, x), x, _aki(r)) for x, r in self.runs.items())

    def calibrate(self, target, guess=None):
        """The Calibration of one target AKI (see the module docstring for the search)."""
        target = float(target)
        if not target > 0:
            raise ConfigError(f"--target_akis: {target} is not a positive AKI")
        new, expansions, steps = 0, 0, 0
        guess = None if guess is None else self._clamp(guess)
        while True:
            points = self._points()
            hits = [p for p in points if in_band(p[2], target, self.tolerance)]
            if hits:
                _, x, _ = min(hits, key=lambda p: (abs(math.log(p[2] / target)), p[0]))
                return Calibration(target, x, _aki(self.runs[x]), self.runs[x], True, "hit", new_runs=new)
            if new >= self.max_runs:
                return self._miss(target, "max_runs", new)
            probe, reason = self._next_probe(points, target, guess, expansions, steps)
            if probe is None:
                return self._miss(target, reason, new)
            if reason == "expand":
                expansions += 1
            elif reason == "bracket":
                steps += 1
            guess = None
            self.measure(probe)
            new += 1

    def calibrate_all(self, targets, guess=None):
        """[Calibration] per target, in the given order; `guess`: target -> first knob value (or None)."""
        return [self.calibrate(t, None if guess is None else guess(t)) for t in targets]

    # -- the search ----------------------------------------------------------------------------------
    def _next_probe(self, points, target, guess, expansions, steps):
        """(knob value to run next, why) or (None, the reason to stop)."""
        if guess is not None and guess not in self.runs:
            return guess, "guess"
        if not points:
            return self._clamp(self.knob.start), "start"
        for (va, xa, aa), (vb, xb, ab) in zip(points, points[1:]):
            if (aa - target) * (ab - target) < 0:      # adjacent runs straddle the target
                return self._split(va, xa, aa, vb, xb, ab, target, steps)
        rising = points[-1][2] < target                 # all below: more AKI lies at higher v
        v_end = (points[-1] if rising else points[0])[0]
        sign = 1 if rising else -1
        # the bound on that side, exactly (exp(log(x)) may miss it by a rounding)
        x_bound = max((self.knob.low, self.knob.high), key=lambda b: sign * to_v(self.knob, b))
        v_bound = to_v(self.knob, x_bound)
        if (v_bound - v_end) * sign <= 1e-12:   # the extreme run is at the bound
            return None, "out_of_range"
        side = [p for p in self.probes if p not in self.runs and (to_v(self.knob, p) - v_end) * sign > 0]
        if side:
            return min(side, key=lambda p: abs(to_v(self.knob, p) - v_end)), "expand"
        v = v_end + sign * self.knob.step * 2 ** expansions
        x = x_bound if (v - v_bound) * sign >= 0 else from_v(self.knob, v)
        if x in self.runs:   # an integer knob rounded back onto a run: take the bound itself
            x = self._clamp(x_bound)
            if x in self.runs:
                return None, "out_of_range"
        return x, "expand"

    def _split(self, va, xa, aa, vb, xb, ab, target, steps):
        width = vb - va
        if self.knob.integer:
            lo, hi = sorted((xa, xb))
            if hi - lo <= 1:
                return None, "jump"
        elif width < self.knob.resolution:
            return None, "jump"
        # secant in (v, log AKI) on the first and third split: it hits a smooth response at once;
        # on a step it keeps landing on one side, so the rest is bisection
        if steps in (0, 2) and aa > 0 and ab > 0 and aa != ab:
            w = (math.log(target) - math.log(aa)) / (math.log(ab) - math.log(aa))
            v = va + min(max(w, 0.1), 0.9) * width
        else:
            v = va + 0.5 * width
        x = from_v(self.knob, v)
        if self.knob.integer:   # no run lies strictly inside an adjacent pair, so any inner integer is new
            lo, hi = sorted((xa, xb))
            raw = from_v(self.knob, v, exact=True)
            x = float(min(max(round(raw), lo + 1), hi - 1))
        if x in self.runs:
            return None, "jump"
        return x, "bracket"

    def _miss(self, target, reason, new):
        points = self._points()
        # nearest in AKI; among equal AKIs, the run nearest the other side (the step's edge)
        below = max(((a, v, x) for v, x, a in points if a < target), default=None)
        above = min(((a, v, x) for v, x, a in points if a > target), default=None)
        below, above = [None if s is None else (s[2], s[0]) for s in (below, above)]
        # every run is below or above (a miss has no run in the band): the nearer of the two edges
        x, _ = min([s for s in (below, above) if s is not None], key=lambda s: abs(math.log(s[1] / target)))
        return Calibration(target, x, _aki(self.runs[x]), self.runs[x], False, reason, below, above, new)
