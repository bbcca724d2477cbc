"""The causal oracle: a key rule that reads the present frame's true gain (issue 13, diagnostics).

`eval.oracle` places keys knowing every pair's true quality, the future included: an upper bound no
scheduler can reach, and much of its headroom comes from keying frames where N itself happens to be
right. This rule answers the question between that bound and the schedulers: how much could a
scheduler gain if it knew, at frame i, exactly what a key there is worth now? It keys when the true
gain of a key at i, Eq. 1's reward (§3.2) read from the labels,

    gain(k, i) = mIoU(N(i)) - mIoU(W(N_feat(k), F(k, i)))      (per-frame mIoU, a fraction),

exceeds a threshold, with k the last key. Like every scheduler it decides frame by frame without
seeing the future; unlike them it reads the ground truth, so it is a reference, not a competitor
(no FPS: no deployable model computes its input). RL's state (Conv6, KAR, LKD) can at best estimate
this gain, so where this rule gains little over the fixed interval at a matched AKI, a present-frame
policy, however well trained and whatever its flow net, cannot gain much either (it can still
anticipate, which a threshold on the present cannot: this is not a strict bound).

Knob: `threshold` in (0, 1) on the score (1 + gain) / 2 (0.5: any positive gain), so the sweeps'
logit calibration (`eval.calibrate.KNOBS`) covers every gain in (-1, 1).
"""
from rl_scheduler.schedulers import KeyScheduler

NAME = "causal_oracle"


class CausalOracle(KeyScheduler):
    """Keys when (1 + gain) / 2 > threshold; the observation must carry `key_miou` (N's mIoU on the
    frame) and `pair_miou` (the mIoU propagated from the last key), as `eval.curves.run_decisions`
    gives a scheduler with `reads_labels`."""

    name = NAME
    reads_labels = True

    def __init__(self, threshold=0.5):
        super().__init__(float(threshold))

    def score(self, observation):
        return 0.5 * (1.0 + float(observation["key_miou"]) - float(observation["pair_miou"]))

    def is_key(self, score):
        return score > self.threshold
