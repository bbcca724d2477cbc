"""Causal references: key rules that know one signal of the present frame exactly (issue 13, diagnostics).

`eval.oracle` places keys knowing every pair's true quality, the future included. These rules sit
between that bound and the schedulers: like every scheduler they decide frame by frame without seeing
the future (k = the last key, i = the present frame), but each reads one signal of the present exactly,
and keys when it exceeds a calibrated threshold:

- `causal_oracle` ("gain"): the true gain of a key at i, Eq. 1's reward (§3.2) from the labels,
      gain(k, i) = mIoU(N(i)) - mIoU(W(N_feat(k), F(k, i)))        (per-frame mIoU, a fraction).
  RL's state (Conv6, KAR, LKD) can at best estimate this: where this rule gains little over the fixed
  interval, no present-frame policy can gain much (it can still anticipate, which a threshold on the
  present cannot, so this is not a strict bound).
- `causal_propagated` ("propagated"): only the propagated mask's own error, 1 - mIoU(propagated), from
  the labels: what knowing exactly where propagation fails (not where N succeeds) buys.
- `causal_agreement` ("agreement"): 1 - the pixel agreement of the propagated mask with N's own mask on
  i, DVSNet's regression target (§4.2), which needs no labels: what DVSNet with a perfect decision
  network would do, and the most any label-free estimate of "propagation has drifted from N" can tell.

Scores are mapped into (0, 1) so the sweeps' logit calibration (`eval.calibrate.KNOBS`) covers every
value: (1 + gain) / 2 (0.5 = any positive gain), 1 - mIoU, 1 - agreement. They read the labels or N on
every frame, so they are references, never competitors, and have no FPS.
"""
from rl_scheduler.schedulers import KeyScheduler

NAME = "causal_oracle"
# curve name -> (signal, score from the present frame's true numbers)
REFERENCES = {
    "causal_oracle": ("gain", lambda o: 0.5 * (1.0 + float(o["key_miou"]) - float(o["pair_miou"]))),
    "causal_propagated": ("propagated", lambda o: 1.0 - float(o["pair_miou"])),
    "causal_agreement": ("agreement", lambda o: 1.0 - float(o["pair_agreement"])),
}
SIGNALS = {signal: name for name, (signal, _) in REFERENCES.items()}


class CausalOracle(KeyScheduler):
    """Keys when the score of `signal` (module docstring) exceeds the threshold. The observation must
    carry key_miou (N's mIoU on the frame), pair_miou and pair_agreement (of the mask propagated from the
    last key), as `eval.curves.run_decisions` gives a scheduler with `reads_labels`."""

    reads_labels = True

    def __init__(self, threshold=0.5, signal="gain"):
        if signal not in SIGNALS:
            raise ValueError(f"signal {signal!r}: one of {', '.join(SIGNALS)}")
        super().__init__(float(threshold))
        self.signal = signal
        self.name = SIGNALS[signal]
        self._score = REFERENCES[self.name][1]

    def score(self, observation):
        return self._score(observation)

    def is_key(self, score):
        return score > self.threshold
