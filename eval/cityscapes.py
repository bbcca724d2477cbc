"""Cityscapes with DVSNet's released weights: the 4-region runner and its command (paper §4.1, §4.2).

    python -m eval.cityscapes --data_dir=CITYSCAPES --checkpoint=DVSNET_CKPT --scheduler=dvsnet
        [--threshold=90] [--rl_stage=DIR] [--split=val] [--max_snippets=N] --out=results.json

Protocol (reference/dvsnet.md "Cityscapes protocol", paper.md §9, §11):
- Each frame is split into DVSNet's four regions: the quadrants grown by `overlap` (64) px toward
  the centre, 576x1088 each for 1024x2048 frames (`eval.regions.region_boxes`).
- Each region is an independent stream (paper.md §1, reconstructed): its own key frame, key
  logits, decision history and scheduler instance; one scheduler type for all four. Flow runs on
  the four (key, current) pairs as one batch (DVSNet's step 1); keys are segmented and non-keys
  propagated by `flownet2s.dff.KeyHolder` with four streams (the streaming step eval.runtime
  shares; split "logits": the key fc_out logits are warped and multiplied by the 19-channel scale
  field).
- The four region predictions are merged by DVSNet's `overlap4` rule: in the overlap bands every
  pixel takes the label of the region with the larger maximum upsampled logit (`merge_score`).
- Every val snippet runs from its first frame (a key in every region, left out of the FPS) to the
  annotated 20th frame; one 19-class confusion matrix over the annotated frames (255 ignored)
  gives the mIoU; AKI = region-frames / region-keys (the forced first keys counted, §11).
- FPS is model time only (network passes, the schedulers' decisions and the argmax; the merge,
  I/O and the frame conversion are not timed), as `eval.runtime` measures it.
"""
import collections
import time

import numpy as np

from deeplab_face.backend import compile_fn, device_name, to_numpy
from deeplab_face.data import cityscapes
from deeplab_face.errors import ConfigError, DataError
from eval import metrics
from eval.regions import merge_regions, region_boxes, region_size
from eval.runtime import needs_observation, timed_flow
from rl_scheduler.dvsnet_import import DVSNET_OVERLAP

MERGE_SCORES = ("logit", "probability")
SCHEDULER_NAMES = ("dvsnet", "rl", "fixed", "flow_magnitude", "random")

StepResult = collections.namedtuple("StepResult", "index mask is_key scores flow_magnitudes ms")
StepResult.__doc__ = """One frame of `RegionalSegmenter.stream`: mask uint8 (H, W) merged train ids;
is_key, scores, flow_magnitudes: one per region; ms: flow, policy, key, warp_task, total (model time,
milliseconds) and merge (not in total)."""


def _deviation_hw(scheduler):
    """(h, w) the scheduler's network takes its deviation features at, or None."""
    model = getattr(scheduler, "network", None) or getattr(scheduler, "policy", None)
    if model is None:
        return None
    shape = model.inputs[0].shape
    return int(shape[1]), int(shape[2])


class RegionalSegmenter:
    """DFF on DVSNet's four regions, one scheduler instance per region (module docstring).

    Args:
      dff: `flownet2s.dff.DeepFeatureFlow` built at `region_size(frame_hw, overlap)`.
      schedulers: four `KeyScheduler`s of one type (top-left, top-right, bottom-left, bottom-right).
      frame_hw: (H, W) of the frames.
      merge_score: "logit" (DVSNet's overlap4: maximum upsampled logit) or "probability".
    """

    def __init__(self, dff, schedulers, frame_hw, overlap=DVSNET_OVERLAP, merge_score="logit"):
        import keras

        from flownet2s.dff import KeyHolder

        self.boxes = region_boxes(frame_hw, overlap)
        self.frame_hw = (int(frame_hw[0]), int(frame_hw[1]))
        expected = region_size(frame_hw, overlap)
        if tuple(dff.frame_hw) != expected:
            raise ConfigError(f"--overlap={overlap}: {self.frame_hw[0]}x{self.frame_hw[1]} frames need "
                              f"{expected[0]}x{expected[1]} region models, got {dff.frame_hw}")
        if len(schedulers) != len(self.boxes) or len({s.name for s in schedulers}) != 1:
            raise ConfigError("--scheduler: need one scheduler instance of one type per region")
        if merge_score not in MERGE_SCORES:
            raise ConfigError(f"--merge_score: {merge_score!r} not in {list(MERGE_SCORES)}")
        if merge_score == "logit" and dff.task_logits_net is None:
            raise ConfigError("--merge_score=logit: the segmenter's task_net does not end in a softmax")
        self.dff = dff
        self.keys = KeyHolder(dff, len(self.boxes))   # per region: key frame (1, h, w, 3), fc_out logits
        self.schedulers = list(schedulers)
        self.merge_score = merge_score
        self.observe = needs_observation(self.schedulers[0])
        self._ops = keras.ops
        head = dff.task_logits_net if merge_score == "logit" else dff.task_net

        def label_score(features):
            scores = head(features, training=False)
            return keras.ops.argmax(scores, axis=-1), keras.ops.max(scores, axis=-1)

        self._label_score = compile_fn(label_score)
        self.reset()

    def reset(self):
        """New sequence: no key frames, empty histories."""
        for scheduler in self.schedulers:
            scheduler.reset()
        self.keys.reset()
        self.index = 0

    def crops(self, frame):
        """(4, h, w, 3) float32 regions of an RGB uint8 (H, W, 3) frame."""
        frame = np.asarray(frame)
        if frame.shape[:2] != self.frame_hw:
            raise DataError(f"frame of size {frame.shape[:2]}, expected {self.frame_hw}")
        return np.stack([frame[b.y0:b.y1, b.x0:b.x1] for b in self.boxes]).astype(np.float32)

    def warm_up(self, frame=None, batch_sizes=None):
        """Runs (so traces and compiles) the key, flow, warp and label paths for each batch size
        (default 4..1: any subset of regions can be keys), then starts a new sequence."""
        frame = np.zeros(self.frame_hw + (3,), np.uint8) if frame is None else frame
        current = self._ops.convert_to_tensor(self.crops(frame))
        for n in batch_sizes or range(len(self.boxes), 0, -1):
            batch, regions = current[:n], range(n)
            self.keys.key(batch, regions)
            flow = self.keys.flow(batch, regions)
            self._labels(self.keys.propagate(batch, regions, flow_outputs=flow)["features"])
        self.reset()

    def stream(self, frames):
        """Yields a `StepResult` per RGB uint8 frame, starting a new sequence."""
        self.reset()
        for frame in frames:
            yield self.step(frame)

    def _take(self, tensor, indices):
        return self._ops.take(tensor, self._ops.convert_to_tensor(np.asarray(indices, np.int32)), axis=0)

    def _observation(self, scheduler, i, region, flow_np, magnitudes):
        from rl_scheduler.dvsnet_import import resize_bilinear_tf1

        observation = {"frame_index": i}
        if flow_np is None:
            return observation
        size = _deviation_hw(scheduler)
        for tap in ("conv6", "conv6_1"):
            value = flow_np[tap][region:region + 1]
            # DVSNet resizes conv6_1 to 4x8 with TF1's resize_bilinear (dvsnet.md step 2)
            observation[tap] = value if size is None or value.shape[1:3] == size \
                else resize_bilinear_tf1(value, size)
        observation["flow_magnitude"] = float(magnitudes[region])
        return observation

    def step(self, frame):
        """Segments the next frame: flow, four decisions, keys, warps, merge (module docstring)."""
        n, i = len(self.boxes), self.index
        self.index += 1
        current = self._ops.convert_to_tensor(self.crops(frame))  # not timed (frame conversion)
        ms = dict.fromkeys(metrics.STAGES, 0.0)
        magnitudes = np.full(n, np.nan)
        flow, flow_np, flow_regions = None, None, []
        if i > 0 and self.observe:  # DVSNet step 1: flow on the four pairs as one batch
            flow, flow_np, magnitudes = timed_flow(self.keys, current, ms, streams=range(n))
            magnitudes, flow_regions = magnitudes.astype(np.float64), list(range(n))
        is_key, scores = self._decide(i, flow_np, magnitudes, ms)
        labels, region_scores = [None] * n, [None] * n
        keys = [r for r in range(n) if is_key[r]]
        warps = [r for r in range(n) if not is_key[r]]
        if keys:
            start = time.perf_counter()
            label, score = self._labels(self.keys.key(self._take(current, keys), keys, index=i)["features"])
            ms["key"] = 1000.0 * (time.perf_counter() - start)
            for j, r in enumerate(keys):
                labels[r], region_scores[r] = label[j], score[j]
        if warps:
            label, score = self._propagate(current, warps, flow, flow_regions, magnitudes, ms)
            for j, r in enumerate(warps):
                labels[r], region_scores[r] = label[j], score[j]
        ms["total"] = sum(ms[s] for s in metrics.STAGES)

        start = time.perf_counter()
        mask = merge_regions(labels, region_scores, self.boxes, self.frame_hw)
        ms["merge"] = 1000.0 * (time.perf_counter() - start)
        return StepResult(i, mask, tuple(is_key), tuple(scores), tuple(magnitudes.tolist()), ms)

    def _decide(self, i, flow_np, magnitudes, ms):
        """Every region's decision, timed as "policy"; a region without a key frame is a key."""
        start = time.perf_counter()
        is_key, scores = [], []
        for region, scheduler in enumerate(self.schedulers):
            key, score = scheduler.decide(self._observation(scheduler, i, region, flow_np, magnitudes))
            scheduler.record(key)
            is_key.append(bool(key) or not self.keys.has_key(region))
            scores.append(float(score))
        ms["policy"] = 1000.0 * (time.perf_counter() - start)
        return is_key, scores

    def _propagate(self, current, warps, flow, flow_regions, magnitudes, ms):
        """(labels, scores) of the non-key regions `warps`: their key features warped by the flow."""
        frames = self._take(current, warps)
        if flow is None:  # fixed / random: flow on the non-key regions only, as DFF does
            flow, _, magnitudes[warps] = timed_flow(self.keys, frames, ms, streams=warps, taps=False)
            flow_regions = warps
        start = time.perf_counter()
        rows = [flow_regions.index(r) for r in warps]
        given = {k: self._take(flow[k], rows) for k in ("flow", "scale")}
        out = self.keys.propagate(frames, warps, flow_outputs=given)
        label, score = self._labels(out["features"])
        ms["warp_task"] = 1000.0 * (time.perf_counter() - start)
        return label, score

    def _labels(self, features):
        """Numpy (labels, merge scores) of task-net features."""
        label, score = self._label_score(features)
        return to_numpy(label), to_numpy(score)


def load_frames(snippet):
    """(frames uint8 (20, H, W, 3): first .. annotated, trainIds (H, W)) of a `cityscapes.Snippet`."""
    paths = snippet.frame_paths[:cityscapes.ANNOTATED_INDEX + 1]
    frames = np.stack([cityscapes.read_frame(p) for p in paths])
    label = cityscapes.read_train_ids(snippet.label_path)
    if label.shape != frames.shape[1:3]:
        raise DataError(f"{snippet.label_path}: label size {label.shape} differs from its frames "
                        f"{frames.shape[1:3]}")
    return frames, label


def evaluate_snippets(runner, snippets, num_classes=cityscapes.NUM_CLASSES, progress=True):
    """Runs every snippet from its first to its annotated frame; returns the protocol's numbers.

    Returns dict miou (percent, one confusion matrix over the annotated frames), aki (region-frames
    / region-keys), fps (model time, frames after the first of each snippet), snippets, frames,
    keys_per_region, first_frame_keys (regions that were keys on each first frame), confusion.
    """
    import keras

    snippets = list(snippets)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    region_flags = [[] for _ in runner.boxes]
    frame_ms, first_keys = [], []
    bar = keras.utils.Progbar(len(snippets)) if progress else None
    for number, snippet in enumerate(snippets):
        frames, label = load_frames(snippet)
        flags = np.zeros((len(frames), len(runner.boxes)), bool)
        result = None
        for result in runner.stream(frames):
            flags[result.index] = result.is_key
            if result.index > 0:  # frame 1 is the initial key, left out of the FPS (dvsnet.md)
                frame_ms.append(result.ms["total"])
        first_keys.append(int(flags[0].sum()))
        for region in range(len(runner.boxes)):
            region_flags[region].append(flags[:, region])
        confusion += metrics.confusion_matrix(result.mask, label, num_classes)
        if bar is not None:
            bar.update(number + 1, [("mIoU", 100.0 * metrics.mean_iou(confusion))])
    all_flags = [f for flags in region_flags for f in flags]
    return dict(miou=100.0 * metrics.mean_iou(confusion), aki=metrics.aki(all_flags),
                fps=metrics.model_fps(frame_ms), snippets=len(snippets),
                frames=int(sum(len(f) for f in region_flags[0])),
                keys_per_region=[int(sum(f.sum() for f in flags)) for flags in region_flags],
                first_frame_keys=first_keys, confusion=confusion)


def make_region_schedulers(name, threshold=None, decision_net=None, policy=None, seed=0, count=4):
    """`count` independent instances of scheduler `name` (one per region)."""
    from rl_scheduler.schedulers import make_scheduler

    if name not in SCHEDULER_NAMES:
        raise ConfigError(f"--scheduler: {name!r} not in {list(SCHEDULER_NAMES)}")
    schedulers = []
    for region in range(count):
        options = {} if threshold is None else {"threshold": threshold}
        if name == "dvsnet":
            options["network"] = decision_net
        elif name == "rl":
            options["policy"] = policy
        elif name == "random":
            options["seed"] = seed + region  # independent draws per region, reproducible
        schedulers.append(make_scheduler(name, **options))
    return schedulers


def run(data_dir, checkpoint, scheduler="dvsnet", threshold=None, rl_stage=None, split="val",
        max_snippets=None, out=None, overlap=DVSNET_OVERLAP, merge_score="logit", seed=0,
        warm_up=True):
    """The command's work: load DVSNet's release, run the protocol, write `out` (JSON).

    `warm_up` traces every path before the first snippet so that no trace is timed (off in tests).
    Returns the results dict (also written to `out`): config, curves {scheduler: [point]},
    cityscapes (evaluate_snippets' numbers).
    """
    from flownet2s.dff import DeepFeatureFlow
    from rl_scheduler.dvsnet_import import DVSNET_BORDER, load_dvsnet_release

    if scheduler == "rl" and not rl_stage:
        raise ConfigError("--rl_stage: required with --scheduler=rl")
    if out:   # before the work: a place that cannot be written fails now, not after the last snippet
        from deeplab_face import atomic
        atomic.check_output_file(out, "--out")
    snippets = list(cityscapes.iter_snippets(data_dir, split))
    if max_snippets:
        snippets = snippets[:int(max_snippets)]
    frame_hw = cityscapes.read_frame(snippets[0].frame_paths[0]).shape[:2]
    release = load_dvsnet_release(checkpoint, cityscapes.NUM_CLASSES,
                                  region_size(frame_hw, overlap), decision=scheduler == "dvsnet")
    policy = None
    if scheduler == "rl":
        from rl_scheduler import load_policy
        policy = load_policy(rl_stage)
    dff = DeepFeatureFlow(release.segmenter, release.flow_net, flow_resolution="half",
                          border=DVSNET_BORDER, dvsnet_compat=True)
    schedulers = make_region_schedulers(scheduler, threshold, release.decision_net, policy, seed)
    runner = RegionalSegmenter(dff, schedulers, frame_hw, overlap, merge_score)
    if warm_up:
        runner.warm_up(cityscapes.read_frame(snippets[0].frame_paths[0]))
    numbers = evaluate_snippets(runner, snippets)
    threshold = schedulers[0].threshold
    point = dict(aki=numbers["aki"], miou=numbers["miou"], fps=numbers["fps"],
                 threshold=float(threshold))
    config = dict(data_dir=str(data_dir), checkpoint=str(checkpoint), scheduler=scheduler,
                  threshold=float(threshold), rl_stage=rl_stage, split=split,
                  max_snippets=max_snippets, overlap=overlap, merge_score=merge_score, seed=seed,
                  frame_size=list(frame_hw), region_size=list(region_size(frame_hw, overlap)),
                  flow_input=list(dff.flow_input), device=device_name())
    results = {"config": config, "curves": {scheduler: [point]},
               "cityscapes": {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                              for k, v in numbers.items()}}
    if out:
        from deeplab_face import atomic
        atomic.write_json(out, results, indent=2)   # NaN (an empty set) as null
    return results


def main(argv):
    del argv
    from absl import flags
    from keras.utils import set_random_seed

    f = flags.FLAGS
    set_random_seed(f.seed)
    results = run(f.data_dir, f.checkpoint, f.scheduler, f.threshold, f.rl_stage, f.split,
                  f.max_snippets, f.out, f.overlap, f.merge_score, f.seed)
    numbers = results["cityscapes"]
    print(f"{f.scheduler} threshold={results['config']['threshold']}: mIoU {numbers['miou']:.2f}% "
          f"AKI {numbers['aki']:.2f} FPS {numbers['fps']:.2f} ({numbers['snippets']} snippets, "
          f"{results['config']['device']})")


def define_flags():
    from absl import flags

    flags.DEFINE_string("data_dir", None, "Cityscapes root holding leftImg8bit_sequence/ and gtFine/.")
    flags.DEFINE_string("checkpoint", None, "DVSNet's TF1 'all in one' checkpoint (prefix or folder): "
                        "DeepLab-Fast, FlowNets and (for --scheduler=dvsnet) the decision network.")
    flags.DEFINE_enum("scheduler", "dvsnet", list(SCHEDULER_NAMES),
                      "Key scheduler, one instance per region.")
    flags.DEFINE_float("threshold", None, "The scheduler's knob: dvsnet target (percent), rl tau, "
                       "flow_magnitude pixels, fixed/random interval. Default: the scheduler's.", lower_bound=0.0)
    flags.DEFINE_string("rl_stage", None, "rl_scheduler.train stage folder (with --scheduler=rl).")
    flags.DEFINE_string("split", "val", "Cityscapes split whose annotated snippets are run.")
    flags.DEFINE_integer("max_snippets", None, "Run only the first N snippets (sorted by name).", lower_bound=1)
    flags.DEFINE_string("out", "results.json", "Where to write the results (JSON).")
    flags.DEFINE_integer("overlap", DVSNET_OVERLAP, "Pixels each quadrant grows toward the centre "
                         "(a multiple of 8).", lower_bound=0)
    flags.register_validator("overlap", lambda v: v % 8 == 0, "--overlap must be a multiple of 8")
    flags.DEFINE_enum("merge_score", "logit", list(MERGE_SCORES), "Overlap-band rule: the larger "
                      "maximum upsampled logit (DVSNet's overlap4) or probability.")
    flags.DEFINE_integer("seed", 0, "Seed (random scheduler: seed + region index).", lower_bound=0)
    flags.mark_flags_as_required(["data_dir", "checkpoint"])


if __name__ == "__main__":
    from deeplab_face.cli import run as cli_run

    define_flags()
    cli_run(main)
