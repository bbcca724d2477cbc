"""Deep Feature Flow propagation (§3.1): the ONLY propagation code in the project.

Key frame:     f_k = feature_net(I_k),                y_k = task_net(f_k).
Non-key frame: f_i = warp(f_k, F(I_k, I_i)) * S(I_k, I_i), y_i = task_net(f_i).

The flow net sees both frames resized (align-corners bilinear, as DeepLab resizes) to the
largest multiple of 64 not above S, or half of it (DFF's half-resolution mode), per
DESIGN.md. Its stride-4 flow, in flow-input pixels, is resized to the feature grid with
its vectors scaled by the same align-corners factor (grid - 1) / (input - 1), so that it
is expressed in feature-grid pixels (DESIGN.md "Flow"). The scale field is resized to the
grid likewise. Each public call is one compiled function under the TensorFlow backend.
"""
import time

import keras
import numpy as np
from keras import ops

from deeplab_face.backend import compile_fn, to_numpy
from deeplab_face.errors import ConfigError
from deeplab_face.models import layers
from flownet2s.model import INPUT_MULTIPLE, resized_flownet
from flownet2s.warp import BORDERS, warp

FLOW_RESOLUTIONS = ("full", "half")
MIN_GAP, MAX_GAP = 1, 30   # §4.2 (reconstructed): F is fine-tuned on key-current pairs 1-30 frames apart
PAPER_GAPS = (1, 5, 10, 20, 30)   # Table 1's FlowNet2-s row: interpolation mIoU at these key-current gaps


def flow_input_size(crop_size, flow_resolution="full"):
    """Largest multiple of 64 not above `crop_size` (512 for 513), halved in "half" mode."""
    if flow_resolution not in FLOW_RESOLUTIONS:
        raise ConfigError(f"--flow_resolution: {flow_resolution!r} not in {list(FLOW_RESOLUTIONS)}")
    size = (int(crop_size) // INPUT_MULTIPLE) * INPUT_MULTIPLE
    if size < INPUT_MULTIPLE:
        raise ConfigError(f"--crop_size={crop_size}: the flow net needs frames of at least "
                          f"{INPUT_MULTIPLE} pixels")
    return size // 2 if flow_resolution == "half" else size


# The gather form of the align-corners resize (deeplab_face.models.layers.resize_align_corners):
# the non-key path resizes 3-channel frames (513 -> 512) and the 256-channel scale field (128 -> 129),
# where the matrix form costs as much as the flow net.
RESIZE = "gather"


def resize_flow(flow, size, input_size):
    """Flow (B, h, w, 2) in pixels of a `input_size` (h_in, w_in) frame -> grid `size`, grid pixels.

    The field is resized align-corners and each vector scaled by (grid - 1) / (input - 1) per
    axis: the align-corners map between the flow input and the feature grid, both spanning
    the same frame.
    """
    size = (int(size[0]), int(size[1]))
    scale_x = (size[1] - 1) / max(int(input_size[1]) - 1, 1)
    scale_y = (size[0] - 1) / max(int(input_size[0]) - 1, 1)
    flow = layers.resize_align_corners(flow, size, method=RESIZE)
    return flow * ops.convert_to_tensor([scale_x, scale_y], dtype=flow.dtype)


def mean_flow_magnitude(flow):
    """Per example mean sqrt(dx^2 + dy^2) of a (B, h, w, 2) flow -> (B,); in the flow's pixels
    (feature-grid pixels for DeepFeatureFlow's flow). The flow-magnitude baseline's score (§10)."""
    flow = ops.convert_to_tensor(flow)
    magnitude = ops.sqrt(ops.sum(ops.square(ops.cast(flow, "float32")), axis=-1))
    return ops.mean(magnitude, axis=(1, 2))


def _logits_of(task_net):
    """task_net up to its final softmax (for a from-logits loss), or None."""
    last = task_net.layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return keras.Model(task_net.inputs, last.input, name="task_logits")
    return None


class DeepFeatureFlow:
    """Composes `feature_net`, `task_net` (of a segmenter) and a flow net (§3.1).

    Args:
      segmenter: `deeplab_face.build_segmenter(...)` model (`feature_net`, `task_net`).
      flow_net: `flownet2s.build_flownet(...)` model. Rebuilt with the same weights when its
        input size is not the one `flow_resolution` asks for.
      flow_resolution: "full" (flow input = largest multiple of 64 <= S) or "half"; None = what
        the flow stage was fine-tuned with (`load_flownet` records it), else "full".
      border: "zeros" (DFF) or "clamp" (DVSNet); None = the flow stage's, else "zeros".
      dvsnet_compat: DVSNet's swapped-weight warp (only for its released weights).
      warp_jit: XLA-compile the warp + task part of the non-key path (TensorFlow backend). Measured
        on the 2-core CPU at S = 513: warp + task 70-98 ms -> 24-45 ms (tensorflow.md: the warp is
        about 3x faster under XLA, the conv nets slower, so F itself is not XLA-compiled).
    """

    def __init__(self, segmenter, flow_net, flow_resolution=None, border=None,
                 dvsnet_compat=False, warp_jit=True):
        stage = getattr(flow_net, "dff_options", {})
        flow_resolution = flow_resolution or stage.get("flow_resolution", "full")
        border = border or stage.get("border", "zeros")
        if border not in BORDERS:
            raise ConfigError(f"--border: {border!r} not in {list(BORDERS)}")
        self.segmenter = segmenter
        self.feature_net = segmenter.feature_net
        self.task_net = segmenter.task_net
        self.task_logits_net = _logits_of(self.task_net)
        self.crop_size = int(segmenter.input_shape[1])
        self.frame_hw = (int(segmenter.input_shape[1]), int(segmenter.input_shape[2]))
        grid = self.feature_net.output_shape
        self.feature_grid = (int(grid[1]), int(grid[2]))
        self.feature_channels = int(grid[3])
        self.flow_resolution = flow_resolution
        self.flow_input = (flow_input_size(self.frame_hw[0], flow_resolution),
                           flow_input_size(self.frame_hw[1], flow_resolution))
        self.flow_net = resized_flownet(flow_net, list(self.flow_input)) \
            if hasattr(flow_net, "flownet_args") else flow_net
        scale_channels = getattr(self.flow_net, "flownet_args", {}).get("feature_channels", 1)
        if scale_channels not in (1, self.feature_channels):
            raise ConfigError(f"--feature_channels={scale_channels}: the scale field must have the "
                              f"feature_net's {self.feature_channels} channels (or 1)")
        self.border = border
        self.dvsnet_compat = bool(dvsnet_compat)
        self._key = compile_fn(self._key_fn)
        self._flow = compile_fn(self._flow_fn)
        self._warp_task_fn = compile_fn(self._warp_task, jit_compile=True) if warp_jit else self._warp_task
        self._propagate = compile_fn(self._propagate_fn)
        self._propagate_given = compile_fn(self._propagate_given_fn)

    # -- building blocks (differentiable; used by the trainer inside its own tape) -----------
    def flow_outputs(self, key_frame, frame, training=False):
        """Flow-net outputs with `flow` and `scale` resized to the feature grid (grid pixels)."""
        key_small = layers.resize_align_corners(ops.cast(key_frame, "float32"), self.flow_input, method=RESIZE)
        frame_small = layers.resize_align_corners(ops.cast(frame, "float32"), self.flow_input, method=RESIZE)
        out = self.flow_net([key_small, frame_small], training=training)
        return {"flow": resize_flow(out["flow"], self.feature_grid, self.flow_input),
                "scale": layers.resize_align_corners(out["scale"], self.feature_grid, method=RESIZE),
                "conv6": out["conv6"], "conv6_1": out["conv6_1"]}

    def warp_features(self, key_features, flow, scale):
        """f_i = W(f_k, flow) * S (§3.1)."""
        warped = warp(key_features, flow, border=self.border, dvsnet_compat=self.dvsnet_compat)
        return warped * ops.cast(scale, warped.dtype)

    # -- compiled bodies -------------------------------------------------------------------
    def _key_fn(self, frame):
        features = self.feature_net(frame, training=False)
        return {"features": features, "probs": self.task_net(features, training=False)}

    def _flow_fn(self, key_frame, frame):
        return self.flow_outputs(key_frame, frame)

    def _warp_task(self, key_features, flow, scale):
        features = self.warp_features(key_features, flow, scale)
        return features, self.task_net(features, training=False)

    def _propagate_given_fn(self, key_features, flow, scale):
        features, probs = self._warp_task_fn(key_features, flow, scale)
        return {"features": features, "probs": probs}

    def _propagate_fn(self, key_frame, key_features, frame):
        out = dict(self.flow_outputs(key_frame, frame))
        features, probs = self._warp_task_fn(key_features, out["flow"], out["scale"])
        out.update(features=features, probs=probs)
        return out

    # -- public interface (docs/interfaces.md) ------------------------------------------------
    def key(self, frame):
        """Key path: {"features", "probs"} of frames (B, S, S, 3) in [0, 255]."""
        return self._key(ops.cast(frame, "float32"))

    def flow(self, key_frame, frame):
        """{"flow" (grid pixels, on the feature grid), "scale", "conv6", "conv6_1"}."""
        return self._flow(ops.cast(key_frame, "float32"), ops.cast(frame, "float32"))

    def propagate(self, key_frame, key_features, frame, flow_outputs=None):
        """Non-key path: {"features", "probs", "flow", "scale", "conv6", "conv6_1"}.

        `flow_outputs` (a `flow()` result for this pair) skips the flow net.
        """
        key_features = ops.cast(key_features, "float32")
        if flow_outputs is None:
            return self._propagate(ops.cast(key_frame, "float32"), key_features,
                                   ops.cast(frame, "float32"))
        out = self._propagate_given(key_features, ops.cast(flow_outputs["flow"], "float32"),
                                    ops.cast(flow_outputs["scale"], "float32"))
        result = {k: flow_outputs[k] for k in ("flow", "scale", "conv6", "conv6_1") if k in flow_outputs}
        result.update(out)
        return result


class KeyHolder:
    """DFF's streaming step (§3.1): the held key frame and key features of each of `streams` streams.

    The one home of "hold the key, then key or propagate" for the streaming runners: eval.runtime's
    `DynamicSegmenter` (one stream, a video) and eval.cityscapes' `RegionalSegmenter` (four streams,
    DVSNet's regions, run as one batch). `key` runs N on a batch of frames, one per stream, and holds
    each as its stream's key; `flow` and `propagate` run F and the warp from the held keys of some
    streams to their current frames. The runners decide which frames are keys and time the stages.

    rl_scheduler.cache computes (key, frame) pairs through `DeepFeatureFlow.propagate` directly: its
    pairs are a table looked up by (k, i) in any order, not a stream with one held key.

    A key batch is held by reference, each stream remembering its row: holding copies nothing. A held
    part (frames for F, features for the warp) is passed on as it is when the streams asked for are
    its batch's rows in order; else each stream's row is cut out once and kept alone (an old batch is
    not held for one row).
    """

    def __init__(self, dff, streams=1):
        self.dff = dff
        self.streams = int(streams)
        self.reset()

    def reset(self):
        """No key in any stream."""
        self._held = {"frames": [None] * self.streams, "features": [None] * self.streams}  # (batch, row)
        self._index = [None] * self.streams

    def has_key(self, stream=0):
        return self._held["features"][stream] is not None

    def index(self, stream=0):
        """The frame index the stream's key was held with (`key(..., index=)`), or None."""
        return self._index[stream]

    def key(self, frames, streams=(0,), index=None):
        """N on `frames` (B, h, w, 3), row j the current frame of stream `streams[j]`, each held as
        its stream's key (frame, features; `index` recorded). Returns `dff.key`'s {"features", "probs"}."""
        out = self.dff.key(frames)
        for row, stream in enumerate(streams):
            self._held["frames"][stream] = (frames, row)
            self._held["features"][stream] = (out["features"], row)
            self._index[stream] = index
        return out

    def held(self, streams=(0,), part="frames"):
        """The held key `part` ("frames" or "features") of `streams`, batched in that order."""
        column = self._held[part]
        entries = [column[s] for s in streams]
        batch = entries[0][0]
        if all(b is batch for b, _ in entries) and [r for _, r in entries] == list(range(int(batch.shape[0]))):
            return batch   # the held batch itself, whole and in order
        for stream, (rows, row) in zip(streams, entries):
            if int(rows.shape[0]) > 1:   # keep the stream's own row, not its whole key batch
                column[stream] = (rows[row:row + 1], 0)
        rows = [column[s][0] for s in streams]
        return rows[0] if len(rows) == 1 else ops.concatenate(rows, axis=0)

    def flow(self, frames, streams=(0,)):
        """`dff.flow` from the held keys of `streams` to `frames` (row j: stream streams[j])."""
        return self.dff.flow(self.held(streams), frames)

    def propagate(self, frames, streams=(0,), flow_outputs=None):
        """`dff.propagate` of the held keys of `streams` to `frames` (row j: stream streams[j]);
        `flow_outputs` (their `flow`) skips F, and with it the key frames."""
        key_frames = None if flow_outputs is not None else self.held(streams)
        return self.dff.propagate(key_frames, self.held(streams, "features"), frames,
                                  flow_outputs=flow_outputs)


def load_dff(segmenter_dir, flownet_dir, **dff_options):
    """The frozen N and F of two finished stages composed into one DeepFeatureFlow (§3.1)."""
    from deeplab_face import load_segmenter
    from flownet2s import load_flownet

    return DeepFeatureFlow(load_segmenter(segmenter_dir), load_flownet(flownet_dir), **dff_options)


def time_call(fn, warmup=2, runs=10):
    """Median milliseconds of `fn()` over `runs` after `warmup` calls (results fetched to host)."""
    for _ in range(warmup):
        _block(fn())
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        _block(fn())
        times.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(times))


def _block(result):
    values = result.values() if isinstance(result, dict) else [result]
    for value in values:
        to_numpy(value)
