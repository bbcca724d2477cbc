"""Benchmark: the dynamic pipeline's FPS at AKI 10, 30 and 100 against per-frame segmentation and
against its limit (issue 6, item 7). Random weights; one run prints one table.

    python bench/pipeline.py [--size=513] [--backbone=resnet_v1_50_beta] [--akis=10,30,100]

- dynamic: `eval.runtime.DynamicSegmenter` with the fixed-interval scheduler at K = AKI over a
  multiple of K frames (so exactly AKI), synthetic face frames of size S;
- per-frame: the same runtime with K = 1, i.e. N = task_net . feature_net on every frame (same
  backbone, same size);
- limit: 1 / (t_flow + t_policy + t_warp + t_task), the medians of the non-key frames of all runs:
  what the pipeline approaches as AKI grows.
FPS is model time (eval.metrics.model_fps: the network passes and the scheduler; the float
conversion, frame synthesis and the Python loop excluded); the wall-clock FPS of the same loop is
printed beside it, and so is the FPS of the same key / non-key mix priced at the stage medians (on a
shared machine, load spikes inflate the measured sums but not the medians). Target at S = 513 on CPU: at AKI >= 30, >= 0.8 x the limit and >= 4 x per-frame.

Memory over long videos (issue 11, item 5):

    python bench/pipeline.py --memory_frames=200 [--memory_factor=10] [--size=129] [--backbone=...]

streams a generated face video of N frames (the base clip) and one of factor x N frames through
`eval.runtime.DynamicSegmenter` (rl scheduler, random-weight policy, or --scheduler=fixed), each in its
own process so that the peaks do not mix. Frames are rendered one at a time (never held), results are
dropped as they come. Reported per run: RSS after the warm-up (the networks compiled, a few frames
streamed), peak RSS (VmHWM, the whole process; getrusage's ru_maxrss is in the JSON too), the final
RSS, and the RSS growth over the second half of the stream (samples every 50 frames: the allocator
settles in the first few hundred frames; a leak keeps growing). Target: peak(long) <= 1.05 x peak(base).
"""
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from deeplab_face import cli  # noqa: E402
from bench.streams import face_frames, timed_stream  # noqa: E402
from deeplab_face.errors import ConfigError  # noqa: E402

NUM_CLASSES = 5
MIN_FRAMES = 60      # frames per dynamic run at least (a multiple of K is used)
PER_FRAME_FRAMES = 12


def build_dff(size, backbone, width, flow_resolution, warp_jit, seed):
    """N (random weights) + FlowNet2-s (random weights) composed by DeepFeatureFlow."""
    import keras

    from deeplab_face import build_segmenter
    from flownet2s import build_flownet
    from flownet2s.dff import DeepFeatureFlow, flow_input_size

    keras.utils.set_random_seed(seed)
    segmenter = build_segmenter(backbone, NUM_CLASSES, size)
    flow_net = build_flownet(width=width, feature_channels=int(segmenter.feature_net.output_shape[-1]),
                             input_size=flow_input_size(size, flow_resolution))
    return DeepFeatureFlow(segmenter, flow_net, flow_resolution=flow_resolution, warp_jit=warp_jit)


def run(size=513, backbone="resnet_v1_50_beta", akis=(10, 30, 100), width=0.375, flow_resolution="full",
        warp_jit=True, seed=0, log=print):
    """Runs the benchmark; returns {"rows": [...], "stage_ms": {...}, "per_frame_fps", "limit_fps"}."""
    from eval import metrics
    from eval.runtime import DynamicSegmenter
    from rl_scheduler.schedulers import make_scheduler

    dff = build_dff(size, backbone, width, flow_resolution, warp_jit, seed)
    lengths = {k: k * int(np.ceil(max(MIN_FRAMES, 2 * k) / k)) for k in akis}
    frames = face_frames(max(list(lengths.values()) + [PER_FRAME_FRAMES]), size, seed)
    log(f"{backbone} at S={size}, FlowNet2-s width {width:g} ({flow_resolution}), warp_jit={warp_jit}, "
        f"{platform.processor() or platform.machine()}; {len(frames)} frames")
    DynamicSegmenter(dff, make_scheduler("fixed", threshold=2)).warm_up(frames[0])
    timed_stream(dff, 2, frames[:6])   # first-run allocations

    per_frame, per_frame_s = timed_stream(dff, 1, frames[:PER_FRAME_FRAMES])
    per_frame_fps = metrics.model_fps([r.ms for r in per_frame])
    non_key = {"flow": [], "policy": [], "warp_task": []}
    runs = {}
    for k in akis:
        results, seconds = timed_stream(dff, k, frames[:lengths[k]])
        runs[k] = (results, seconds)
        for r in results:
            if not r.is_key:
                for stage in non_key:
                    non_key[stage].append(r.ms[stage])
    stage_ms = {stage: float(np.median(v)) for stage, v in non_key.items()}
    stage_ms["key"] = float(np.median([r.ms["key"] for r in per_frame]))
    non_key_ms = stage_ms["flow"] + stage_ms["policy"] + stage_ms["warp_task"]
    limit_fps = 1000.0 / non_key_ms

    def median_fps(frames, keys):   # the same mix priced at the stage medians (robust to load spikes)
        return 1000.0 * frames / (keys * stage_ms["key"] + (frames - keys) * non_key_ms)

    rows = [dict(name="per-frame N", aki=1.0, frames=len(per_frame), keys=len(per_frame), fps=per_frame_fps,
                 wall_fps=metrics.end_to_end_fps(len(per_frame), per_frame_s),
                 median_fps=1000.0 / stage_ms["key"])]
    for k, (results, seconds) in runs.items():
        keys = [r.is_key for r in results]
        rows.append(dict(name=f"dynamic, fixed K={k}", aki=metrics.aki(keys), frames=len(results), keys=sum(keys),
                         fps=metrics.model_fps([r.ms for r in results]),
                         wall_fps=metrics.end_to_end_fps(len(results), seconds),
                         median_fps=median_fps(len(results), sum(keys))))
    rows.append(dict(name="limit 1/(flow+policy+warp+task)", aki=float("inf"), frames=None, keys=None,
                     fps=limit_fps, wall_fps=None, median_fps=limit_fps))
    log("median ms: " + ", ".join(f"{s} {v:.2f}" for s, v in stage_ms.items()))
    log("| pipeline | AKI | frames | keys | FPS (model time) | FPS (wall) | x per-frame | x limit "
        "| FPS at stage medians | x per-frame | x limit |")
    log("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        wall = "" if row["wall_fps"] is None else f"{row['wall_fps']:.2f}"
        log(f"| {row['name']} | {row['aki']:.1f} | {row['frames'] or ''} | {row['keys'] or ''} | {row['fps']:.2f} "
            f"| {wall} | {row['fps'] / per_frame_fps:.2f} | {row['fps'] / limit_fps:.2f} "
            f"| {row['median_fps']:.2f} | {row['median_fps'] / rows[0]['median_fps']:.2f} "
            f"| {row['median_fps'] / limit_fps:.2f} |")
    return dict(rows=rows, stage_ms=stage_ms, per_frame_fps=per_frame_fps, limit_fps=limit_fps)


# -- memory over long videos (issue 11, item 5) -------------------------------------------------------
MEMORY_SAMPLE_EVERY = 50
MEMORY_WARMUP_FRAMES = 12


def rss_kib(field="VmRSS"):
    """This process's resident set size (KiB) from /proc/self/status: now (VmRSS) or its peak (VmHWM,
    what getrusage's ru_maxrss reports, read from the same accounting as VmRSS)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def memory_run(frames, size=129, backbone="resnet_v1_50_beta", width=0.375, flow_resolution="full", warp_jit=True,
               seed=0, scheduler="rl", threshold=0.5):
    """Streams `frames` generated frames through the runtime in this process; returns its memory figures."""
    import keras

    from deeplab_face.data.synthetic import SyntheticFace
    from eval.runtime import DynamicSegmenter
    from rl_scheduler import build_policy
    from rl_scheduler.schedulers import make_scheduler

    dff = build_dff(size, backbone, width, flow_resolution, warp_jit, seed)
    if scheduler == "rl":
        keras.utils.set_random_seed(seed)
        deviation = [int(d) for d in dff.flow_net.output["conv6_1"].shape[1:]]
        chosen = make_scheduler("rl", policy=build_policy(deviation), threshold=threshold)
    else:
        chosen = make_scheduler("fixed", threshold=int(threshold))
    runtime = DynamicSegmenter(dff, chosen)
    face = SyntheticFace(max(frames, MEMORY_WARMUP_FRAMES), size, seed)

    def video(count):   # rendered on demand: the clip is never held in memory
        for t in range(count):
            yield face.render(t)[0]

    runtime.warm_up(face.render(0)[0])
    for _ in runtime.stream(video(MEMORY_WARMUP_FRAMES)):   # first-run allocations of every path
        pass
    after_warmup = rss_kib()
    samples, keys, start = [], 0, time.perf_counter()
    for result in runtime.stream(video(frames)):
        keys += int(result.is_key)
        if result.index % MEMORY_SAMPLE_EVERY == 0 or result.index == frames - 1:
            samples.append((result.index, rss_kib()))
    half = [rss for index, rss in samples if index >= frames // 2]
    final = rss_kib()
    # The kernel syncs its per-thread RSS counters lazily, so VmHWM can lag a VmRSS read by a few MiB (seen
    # on a 2-core AMD EPYC): the peak is at least every sample this run took.
    peak = max([rss_kib("VmHWM"), after_warmup, final] + [rss for _, rss in samples])
    return dict(frames=frames, keys=keys, seconds=time.perf_counter() - start, rss_after_warmup_kib=after_warmup,
                peak_rss_kib=peak, final_rss_kib=final,
                ru_maxrss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                second_half_growth_kib=half[-1] - half[0], samples=samples)


def memory_benchmark(base_frames, factor=10, size=129, backbone="resnet_v1_50_beta", width=0.375,
                     flow_resolution="full", warp_jit=True, seed=0, scheduler="rl", threshold=0.5, log=print):
    """The base clip and the factor x longer one, each in a fresh process; prints and returns the table."""
    runs = []
    for frames in (base_frames, factor * base_frames):
        command = [sys.executable, str(pathlib.Path(__file__).resolve()), f"--memory_child={frames}",
                   f"--size={size}", f"--backbone={backbone}", f"--width={width}",
                   f"--flow_resolution={flow_resolution}",
                   f"--{'' if warp_jit else 'no'}warp_jit", f"--seed={seed}", f"--scheduler={scheduler}",
                   f"--threshold={threshold}"]
        proc = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("MEMORY ")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"memory run of {frames} frames failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        runs.append(json.loads(lines[-1][len("MEMORY "):]))
        log(f"  {frames} frames: peak {runs[-1]['peak_rss_kib'] / 1024:.1f} MiB ({runs[-1]['seconds']:.0f} s)")
    log(f"Memory over a long video: {backbone} at S={size}, scheduler {scheduler}, "
        f"{platform.processor() or platform.machine()}; each run in its own process")
    log("| run | frames | keys | RSS after warm-up (MiB) | peak RSS (MiB) | final RSS (MiB) "
        "| RSS growth over the stream's second half (MiB) |")
    log("|---|---|---|---|---|---|---|")
    for name, run in zip(("base clip", f"{factor}x longer"), runs):
        log(f"| {name} | {run['frames']} | {run['keys']} | {run['rss_after_warmup_kib'] / 1024:.1f} "
            f"| {run['peak_rss_kib'] / 1024:.1f} | {run['final_rss_kib'] / 1024:.1f} "
            f"| {run['second_half_growth_kib'] / 1024:.1f} |")
    ratio = runs[1]["peak_rss_kib"] / runs[0]["peak_rss_kib"]
    log(f"peak RSS ratio long / base: {ratio:.3f} (target <= 1.05: {'met' if ratio <= 1.05 else 'not met'})")
    return dict(runs=runs, ratio=ratio)


def define_flags():
    flags.DEFINE_integer("size", 513, "Crop size S (16k + 1).", lower_bound=17)
    flags.DEFINE_string("backbone", "resnet_v1_50_beta", "Backbone of N (deeplab_face BACKBONE_NAMES); the "
                        "paper's N is resnet_v1_50_beta.")
    flags.DEFINE_list("akis", ["10", "30", "100"], "Key intervals of the dynamic runs.")
    flags.DEFINE_float("width", 0.375, "FlowNet2-s width multiplier.", lower_bound=0.01)
    flags.DEFINE_enum("flow_resolution", "full", ["full", "half"], "Flow-net input: full or half size.")
    flags.DEFINE_bool("warp_jit", True, "XLA-compile the warp + task_net (non-key) path.")
    flags.DEFINE_integer("seed", 0, "Seed of the random weights and frames.", lower_bound=0)
    flags.DEFINE_integer("memory_frames", None, "Memory mode: frames of the base clip (the long one has "
                         "--memory_factor times more).", lower_bound=1)
    flags.DEFINE_integer("memory_factor", 10, "Memory mode: length of the long video in base clips.", lower_bound=2)
    flags.DEFINE_integer("memory_child", None, "(internal) stream this many frames and print MEMORY <json>.",
                         lower_bound=1)
    flags.DEFINE_enum("scheduler", "rl", ["rl", "fixed"], "Memory mode: rl (random-weight policy) or fixed.")
    flags.DEFINE_float("threshold", 0.5, "Memory mode: tau of rl, or K of fixed.", lower_bound=0.0)


def main(argv):
    cli.check_command_line(argv)
    FLAGS = flags.FLAGS
    if (FLAGS.size - 1) % 16:
        raise ConfigError(f"--size={FLAGS.size}: must be 16k + 1 (513, 257, 129, 65)")
    try:
        akis = [int(a) for a in FLAGS.akis]
    except ValueError:
        raise ConfigError(f"--akis: expected integers, got {FLAGS.akis}") from None
    options = dict(size=FLAGS.size, backbone=FLAGS.backbone, width=FLAGS.width, flow_resolution=FLAGS.flow_resolution,
                   warp_jit=FLAGS.warp_jit, seed=FLAGS.seed)
    if FLAGS.memory_child:
        result = memory_run(FLAGS.memory_child, scheduler=FLAGS.scheduler, threshold=FLAGS.threshold, **options)
        print("MEMORY " + json.dumps(result), flush=True)
    elif FLAGS.memory_frames:
        memory_benchmark(FLAGS.memory_frames, FLAGS.memory_factor, scheduler=FLAGS.scheduler,
                         threshold=FLAGS.threshold, **options)
    else:
        run(akis=akis, **options)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
