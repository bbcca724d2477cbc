"""A toy stand-in for `rl_scheduler.cache.VideoCache` with a known best key policy.

Each frame has a "motion" flag. The Conv6 features of a pair (k, i) carry the flag
of frame i (channel 0) plus noise; a key on a motion frame gains `gain` mIoU over
propagation, a key on a still frame loses `cost`. So under Eq. 1 the best policy
keys exactly on motion frames (as long as the KAR limit allows it).
"""
import collections

import numpy as np

ToyKey = collections.namedtuple("ToyKey", "mask confusion miou")
ToyPair = collections.namedtuple(
    "ToyPair", "mask confusion miou conv6 conv6_1 flow_magnitude agreement pseudo_miou")


class ToyVideoCache:
    def __init__(self, num_frames, motion_rate=0.25, gain=0.5, cost=0.1, seed=0, shape=(2, 2, 4), noise=0.1):
        rng = np.random.default_rng(seed)
        self.motion = rng.random(num_frames) < motion_rate
        self.noise = rng.normal(0, noise, (num_frames,) + tuple(shape)).astype(np.float32)
        self.gain, self.cost = gain, cost
        self.num_frames = num_frames
        self.pair_computations = 0
        self.prefetched = []
        self._pairs = {}

    def key(self, i):
        return ToyKey(None, None, 0.9)

    def prefetch_pairs(self, pairs):
        pairs = set(pairs)
        self.prefetched.append(pairs)
        for k, i in pairs:
            if (k, i) not in self._pairs:
                self.pair_computations += 1
                self._pairs[(k, i)] = self._make(k, i)

    def pair(self, k, i):
        if (k, i) not in self._pairs:
            self.prefetch_pairs([(k, i)])
        return self._pairs[(k, i)]

    def _make(self, k, i):
        moving = bool(self.motion[i]) and k != i
        features = self.noise[i].copy()
        features[..., 0] += 1.0 if self.motion[i] else -1.0
        miou = 0.9 - self.gain if moving else min(0.9 + self.cost, 1.0) if k != i else 0.9
        agreement = 1.0 - self.gain if moving else 1.0
        return ToyPair(None, None, miou, features[None], features[None], float(self.motion[i]),
                       agreement, agreement)
