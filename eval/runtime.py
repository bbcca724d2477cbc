"""The streaming runtime: Deep Feature Flow with a key scheduler, one frame at a time (§3.1).

    segmenter = DynamicSegmenter(dff, scheduler)
    for result in segmenter.stream(frames):      # frames: iterable of RGB uint8 (S, S, 3)
        result.mask, result.is_key, result.score, result.ms

Per frame i > 0: the flow net runs on (last key frame, frame i) -> flow, scale, conv6, conv6_1; the
scheduler decides from the observation (docs/interfaces.md: conv6, conv6_1, flow_magnitude,
frame_index); a key runs N = task_net . feature_net on frame i (which becomes the key), a non-key
warps the key features with the flow, scales them and runs task_net (`dff.propagate` with the flow
already computed). Frame 0 is a forced key without a decision.

Schedulers that read nothing from the observation (`fixed`, `random`, see OBSERVATION_FREE) decide
first and the flow runs on non-key frames only, as DFF does with a fixed key interval.

Memory stays flat however long the video: the segmenter keeps only the last key frame and its
features; results are yielded, never stored.

Timing (`FrameResult.ms`, milliseconds): "flow" (flow net + the flow magnitude), "policy" (the
scheduler's decision), "key" (feature_net + task_net on a key frame), "warp_task" (warp x scale +
task_net on a non-key frame), each including the argmax to the mask, and "total", their sum: the
model time of the frame (eval.metrics.model_fps). Converting the frame to float32 is not timed.
"""
import collections
import math
import time

import numpy as np

from eval.metrics import STAGES

# Schedulers whose decision needs no flow-net output (their decide() reads history / frame_index only).
OBSERVATION_FREE = ("fixed", "random")

FrameResult = collections.namedtuple("FrameResult", "index mask is_key score flow_magnitude ms")
FrameResult.__doc__ = """One frame of `DynamicSegmenter.stream`.

index: 0-based frame index; mask: uint8 (S, S) class ids; is_key: bool; score: the scheduler's score
(nan on the forced first key); flow_magnitude: mean |flow| from the last key in feature-grid pixels
(nan where the flow was not run); ms: dict flow, policy, key, warp_task, total (milliseconds)."""


def needs_observation(scheduler):
    """True when `scheduler` reads the flow-net outputs (every scheduler but fixed and random)."""
    return getattr(scheduler, "name", None) not in OBSERVATION_FREE


def _numpy(x):
    import keras  # imported on use: `import eval.sweeps` (and eval.report) stays free of TensorFlow

    return np.asarray(keras.ops.convert_to_numpy(x))


def _mask(probs):
    return np.argmax(_numpy(probs)[0], axis=-1).astype(np.uint8)


class DynamicSegmenter:
    """DFF + a `KeyScheduler`, streaming.

    Args:
      dff: `flownet2s.dff.DeepFeatureFlow` (`key`, `flow`, `propagate`, `crop_size`).
      scheduler: a `rl_scheduler.schedulers.KeyScheduler` (`reset`, `decide`, `record`).
    """

    def __init__(self, dff, scheduler):
        self.dff = dff
        self.scheduler = scheduler
        self.reset()

    def reset(self):
        """Start a new sequence: no key frame, empty scheduler history."""
        self.scheduler.reset()
        self.key_frame = None       # (1, S, S, 3) float32
        self.key_features = None    # feature_net output of the key frame
        self.key_index = None
        self.index = 0

    def warm_up(self, frame=None):
        """Runs (and so compiles) the key, flow and non-key paths once, then starts a new sequence.

        Call it before timing: the first call of each compiled function traces it (seconds).
        """
        if frame is None:
            frame = np.zeros((self.dff.crop_size, self.dff.crop_size, 3), np.uint8)
        current = np.asarray(frame, np.float32)[None]
        key = self.dff.key(current)
        flow = self.dff.flow(current, current)
        _mask(self.dff.propagate(current, key["features"], current, flow_outputs=flow)["probs"])
        self.reset()

    def stream(self, frames):
        """Yields one `FrameResult` per frame of `frames` (RGB uint8 (S, S, 3)), starting a new sequence."""
        self.reset()
        for frame in frames:
            yield self.step(frame)

    def step(self, frame, key_frame_fn=None):
        """Segments the next frame of the sequence and returns its `FrameResult`.

        key_frame_fn: optional callable returning the frame to use instead of `frame` when this frame
        turns out to be a key (`eval.segment_video` re-detects the face box on key frames).
        """
        i = self.index
        self.index += 1
        current = np.asarray(frame, np.float32)[None]
        ms = dict.fromkeys(STAGES, 0.0)
        flow_outputs, magnitude = None, math.nan
        observation = {"frame_index": i}
        lazy_flow = i > 0 and not needs_observation(self.scheduler)
        if i > 0 and not lazy_flow:
            flow_outputs, magnitude = self._flow(current, ms)
            observation.update(conv6=flow_outputs["conv6_np"], conv6_1=flow_outputs["conv6_1_np"],
                               flow_magnitude=magnitude)
        start = time.perf_counter()
        is_key, score = self.scheduler.decide(observation)
        self.scheduler.record(is_key)
        ms["policy"] = 1000.0 * (time.perf_counter() - start)
        is_key = bool(is_key or self.key_frame is None)
        if is_key:
            if key_frame_fn is not None:
                current = np.asarray(key_frame_fn(), np.float32)[None]
            start = time.perf_counter()
            out = self.dff.key(current)
            mask = _mask(out["probs"])
            ms["key"] = 1000.0 * (time.perf_counter() - start)
            self.key_frame, self.key_features, self.key_index = current, out["features"], i
        else:
            if lazy_flow:
                flow_outputs, magnitude = self._flow(current, ms)
            start = time.perf_counter()
            out = self.dff.propagate(self.key_frame, self.key_features, current,
                                     flow_outputs=flow_outputs["raw"])
            mask = _mask(out["probs"])
            ms["warp_task"] = 1000.0 * (time.perf_counter() - start)
        ms["total"] = sum(ms[s] for s in STAGES)
        return FrameResult(i, mask, is_key, float(score), float(magnitude), ms)

    def _flow(self, current, ms):
        """Flow-net pass (key frame, current frame); adds its time to ms["flow"]."""
        from flownet2s.dff import mean_flow_magnitude  # the one definition of the flow-magnitude score

        start = time.perf_counter()
        raw = self.dff.flow(self.key_frame, current)
        outputs = {"raw": raw, "conv6_np": _numpy(raw["conv6"]), "conv6_1_np": _numpy(raw["conv6_1"])}
        magnitude = float(np.mean(_numpy(mean_flow_magnitude(raw["flow"]))))
        ms["flow"] += 1000.0 * (time.perf_counter() - start)
        return outputs, magnitude
