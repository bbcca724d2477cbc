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
features (a `flownet2s.dff.KeyHolder`, the streaming step eval.cityscapes shares); results are
yielded, never stored.

Timing (`FrameResult.ms`, milliseconds): "flow" (flow net + the flow magnitude), "policy" (the
scheduler's decision), "key" (feature_net + task_net on a key frame), "warp_task" (warp x scale +
task_net on a non-key frame), each including the argmax to the mask, and "total", their sum: the
model time of the frame (eval.metrics.model_fps). Converting the frame to float32 is not timed.

Budget mode: `DynamicSegmenter(dff, scheduler, budget=eval.budget.BudgetController(...))` hands each
result to the controller, which sets the scheduler's threshold for the next frame.

`load_pipeline(checkpoints, scheduler, ...)` builds (dff, scheduler) from a checkpoints folder; for
`rl` it picks the stage (`rl_stage_dir`) and the policy's operating threshold (`rl_threshold`).
"""
import collections
import glob
import math
import os
import time

import numpy as np

from deeplab_face.backend import to_numpy  # imports Keras on use: eval.sweeps stays free of TensorFlow
from eval.metrics import STAGES

# Schedulers whose decision needs no flow-net output (their decide() reads history / frame_index only).
OBSERVATION_FREE = ("fixed", "random")

FrameResult = collections.namedtuple("FrameResult", "index mask is_key score flow_magnitude ms knob",
                                     defaults=(math.nan,))
FrameResult.__doc__ = """One frame of `DynamicSegmenter.stream`.

index: 0-based frame index; mask: uint8 (S, S) class ids; is_key: bool; score: the scheduler's score
(nan on the forced first key); flow_magnitude: mean |flow| from the last key in feature-grid pixels
(nan where the flow was not run); ms: dict flow, policy, key, warp_task, total (milliseconds); knob:
the scheduler's threshold this frame was decided with (it moves in budget mode, eval.budget)."""


def needs_observation(scheduler):
    """True when `scheduler` reads the flow-net outputs (every scheduler but fixed and random)."""
    return getattr(scheduler, "name", None) not in OBSERVATION_FREE


def timed_flow(keys, frames, ms, streams=(0,), taps=True):
    """The flow net from the held keys of `streams` to `frames`, its time added to ms["flow"]; the one
    flow step of `DynamicSegmenter` and eval.cityscapes' `RegionalSegmenter`.

    keys: a `flownet2s.dff.KeyHolder`; row j of `frames` is the current frame of stream streams[j].
    Batching the held key frames, the flow-magnitude score and the taps' copy to the host (a scheduler
    reads them) are timed too. Returns (raw `dff.flow` outputs, numpy {"conv6", "conv6_1"} or None
    when not `taps`, numpy mean |flow| per pair).
    """
    from flownet2s.dff import mean_flow_magnitude  # the one definition of the flow-magnitude score

    start = time.perf_counter()
    raw = keys.flow(frames, streams)
    numpy_taps = {tap: to_numpy(raw[tap]) for tap in ("conv6", "conv6_1")} if taps else None
    magnitudes = to_numpy(mean_flow_magnitude(raw["flow"]))
    ms["flow"] += 1000.0 * (time.perf_counter() - start)
    return raw, numpy_taps, magnitudes


def _mask(probs):
    return np.argmax(to_numpy(probs)[0], axis=-1).astype(np.uint8)


class DynamicSegmenter:
    """DFF + a `KeyScheduler`, streaming.

    Args:
      dff: `flownet2s.dff.DeepFeatureFlow` (`key`, `flow`, `propagate`, `crop_size`).
      scheduler: a `rl_scheduler.schedulers.KeyScheduler` (`reset`, `decide`, `record`).
      budget: optional `eval.budget.BudgetController` of `scheduler`: told every frame's result, it
        sets the scheduler's threshold for the next frame (budget mode) and keeps the running AKI/FPS.
    """

    def __init__(self, dff, scheduler, budget=None):
        from flownet2s.dff import KeyHolder

        self.dff = dff
        self.scheduler = scheduler
        self.budget = budget
        self.keys = KeyHolder(dff)   # the last key frame (1, S, S, 3) float32, its features and index
        self.reset()

    def reset(self):
        """Start a new sequence: no key frame, empty scheduler history (and budget state)."""
        self.scheduler.reset()
        if self.budget is not None:
            self.budget.reset()
        self.keys.reset()
        self.index = 0

    def warm_up(self, frame=None):
        """Runs (and so compiles) the key, flow and non-key paths once, then starts a new sequence.

        Call it before timing: the first call of each compiled function traces it (seconds).
        """
        if frame is None:
            frame = np.zeros((self.dff.crop_size, self.dff.crop_size, 3), np.uint8)
        current = np.asarray(frame, np.float32)[None]
        self.keys.key(current)
        flow = self.keys.flow(current)
        _mask(self.keys.propagate(current, flow_outputs=flow)["probs"])
        if needs_observation(self.scheduler):   # its network traces on first use (~0.3 s on a CPU);
            # fixed / random are left alone: random's draw would move its seeded stream
            self.scheduler.decide({"frame_index": 1, "conv6": to_numpy(flow["conv6"]),
                                   "conv6_1": to_numpy(flow["conv6_1"]), "flow_magnitude": 0.0})
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
        flow, magnitude = None, math.nan
        observation = {"frame_index": i}
        lazy_flow = i > 0 and not needs_observation(self.scheduler)
        if i > 0 and not lazy_flow:
            flow, magnitude = self._flow(current, ms, observation)
        knob = float(self.scheduler.threshold)
        start = time.perf_counter()
        is_key, score = self.scheduler.decide(observation)
        self.scheduler.record(is_key)
        ms["policy"] = 1000.0 * (time.perf_counter() - start)
        is_key = bool(is_key or not self.keys.has_key())
        if is_key:
            if key_frame_fn is not None:
                current = np.asarray(key_frame_fn(), np.float32)[None]
            start = time.perf_counter()
            mask = _mask(self.keys.key(current, index=i)["probs"])
            ms["key"] = 1000.0 * (time.perf_counter() - start)
        else:
            if lazy_flow:
                flow, magnitude = self._flow(current, ms)
            start = time.perf_counter()
            out = self.keys.propagate(current, flow_outputs=flow)
            mask = _mask(out["probs"])
            ms["warp_task"] = 1000.0 * (time.perf_counter() - start)
        ms["total"] = sum(ms[s] for s in STAGES)
        result = FrameResult(i, mask, is_key, float(score), float(magnitude), ms, knob)
        if self.budget is not None:
            self.budget.update(result)
        return result

    def _flow(self, current, ms, observation=None):
        """(flow outputs, mean |flow|) of (key frame, current frame); fills `observation` with the taps."""
        raw, taps, magnitudes = timed_flow(self.keys, current, ms)
        magnitude = float(np.mean(magnitudes))
        if observation is not None:
            observation.update(taps, flow_magnitude=magnitude)
        return raw, magnitude


# -- a pipeline from a checkpoints folder (stage layout, WORKSPACE.md) ------------------------------
DEFAULT_RL_STAGE = "rl_eta0.06"   # the paper's middle KAR limit


def stage_dir(checkpoints, name):
    """checkpoints/name, or a CheckpointError naming it."""
    from deeplab_face.errors import CheckpointError

    path = os.path.join(checkpoints, name)
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: missing checkpoint stage (train it first, WORKSPACE.md)")
    return path


def rl_stages(checkpoints):
    """The rl_eta<limit> stage folders under `checkpoints`, by increasing KAR limit."""
    def limit(name):
        try:
            return float(name[len("rl_eta"):])
        except ValueError:
            return math.inf
    names = [os.path.basename(p) for p in glob.glob(os.path.join(checkpoints, "rl_eta*")) if os.path.isdir(p)]
    return sorted(names, key=lambda n: (limit(n), n))


def rl_stage_dir(checkpoints, rl_stage=None):
    """The RL stage to load: `rl_stage` (a name, or a bare KAR limit such as 0.14), else rl_eta0.06
    when present, else the lowest KAR limit. A missing stage is an error listing those that exist."""
    from deeplab_face.errors import CheckpointError, ConfigError

    stages = rl_stages(checkpoints)
    found = ", ".join(stages) or "none"
    if rl_stage:
        name = f"rl_eta{rl_stage}" if not str(rl_stage).startswith("rl_eta") else str(rl_stage)
        path = os.path.join(checkpoints, name)
        if not os.path.isdir(path):
            raise ConfigError(f"--rl_stage: {path} does not exist (rl stages under --checkpoints: {found})")
        return path
    if not stages:
        raise CheckpointError(f"{os.path.join(checkpoints, 'rl_eta*')}: no RL stage under --checkpoints (rl stages: "
                              f"none; train one with rl_scheduler.train, or choose another --scheduler)")
    return os.path.join(checkpoints, DEFAULT_RL_STAGE if DEFAULT_RL_STAGE in stages else stages[0])


def rl_threshold(stage_config, stage_path, threshold=None):
    """(tau, where it came from, warning or None) for an RL stage's config.json.

    --threshold wins; else the stage's "operating_threshold" (calibrated by rl_scheduler.train on the
    scheduler-validation videos so that the policy keys at its KAR budget); else the tau it was
    trained with (training.tau, else rl_scheduler.config.TAU) and a warning: that tau is only the
    training rollouts' threshold, and deterministic rollouts at it can key far below the budget.
    """
    from deeplab_face.errors import CheckpointError
    from rl_scheduler import config as rl_config

    config_path = os.path.join(stage_path, "config.json")
    if threshold is not None:
        return float(threshold), "--threshold", None
    value = stage_config.get("operating_threshold")
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise CheckpointError(f"{config_path}: operating_threshold must be a number in [0, 1], got {value!r}")
        return float(value), f"{config_path} operating_threshold", None
    tau = float((stage_config.get("training") or {}).get("tau", rl_config.TAU))
    return tau, "the training tau", (
        f"warning: {config_path} has no calibrated operating_threshold: the policy runs at tau = {tau:g}, "
        f"which may key far from its KAR limit (retrain it, or pass --threshold or --target_aki)")


def load_pipeline(checkpoints, scheduler="rl", threshold=None, rl_stage=None, seed=0, flow_resolution=None,
                  log=None):
    """(DeepFeatureFlow, KeyScheduler) from a checkpoints folder (stage layout, WORKSPACE.md).

    `threshold` None = the scheduler's default (rl: the policy's operating threshold, see
    `rl_threshold`). `log`: a callable given the line naming the loaded policy (and its warning).
    """
    import json

    from deeplab_face.errors import CheckpointError
    from flownet2s.dff import load_dff
    from rl_scheduler import load_dvsnet, load_policy
    from rl_scheduler.schedulers import make_scheduler

    if not os.path.isdir(checkpoints):
        raise CheckpointError(f"{checkpoints}: --checkpoints is not a directory")
    flownet_dir = stage_dir(checkpoints, "flownet")
    if flow_resolution is None:   # the resolution F was fine-tuned at, when its config says
        try:
            with open(os.path.join(flownet_dir, "config.json")) as f:
                stage_config = json.load(f)
            flow_resolution = stage_config.get("flow_resolution") or \
                (stage_config.get("training") or {}).get("flow_resolution") or "full"
        except (OSError, ValueError):
            flow_resolution = "full"
    options = {} if threshold is None else {"threshold": threshold}
    policy = None
    if scheduler == "rl":   # before N and F: a wrong --rl_stage fails fast
        path = rl_stage_dir(checkpoints, rl_stage)
        policy = load_policy(path)
        stage_config = getattr(policy, "stage_config", {}) or {}
        training = stage_config.get("training") or {}
        options.update({k: training[k] for k in ("window", "kar_prefill", "lkd_scale") if k in training})
        options["threshold"], source, warning = rl_threshold(stage_config, path, threshold)
        options["policy"] = policy
        if log is not None:
            limit = training.get("kar_limit")
            log(f"rl policy: {path} (KAR limit {'unknown' if limit is None else f'{limit:g}'}), "
                f"tau = {options['threshold']:g} from {source}")
            if warning:
                log(warning)
    elif scheduler == "dvsnet":
        options["network"] = load_dvsnet(stage_dir(checkpoints, "dvsnet"))
    elif scheduler == "random":
        options["seed"] = seed
    dff = load_dff(segmenter_stage_dir(checkpoints), flownet_dir, flow_resolution=flow_resolution)
    return dff, make_scheduler(scheduler, **options)


def segmenter_stage_dir(checkpoints):
    """N's stage as the pipeline's later stages used it: `segmenter_bn` (batch norm re-estimated,
    eval.reproduce's recalibrate_bn) when finished, else `segmenter`."""
    recalibrated = os.path.join(checkpoints, "segmenter_bn")
    if os.path.exists(os.path.join(recalibrated, "DONE")):
        return recalibrated
    return stage_dir(checkpoints, "segmenter")
