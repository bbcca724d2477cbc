"""GPU figures (issue 11, item 3): the paper's speed rows measured on our Keras 3 models, one table.

    KERAS_BACKEND=jax python bench/gpu_fps.py [--size=513] [--json=out.json]     (bench/gpu.sh runs this)
    python bench/gpu_fps.py --tiny                       (65 px, a few calls: a CPU check, any backend)

Rows, each beside the paper's GTX 1080 Ti number where the paper prints one (Table 1; its Fig. 4
draws FPS curves without printing values, so the dynamic rows have none):
- Table 1: DeepLab-V3+ with MobileNet-V2, ResNet-50 (beta) and Xception-65 at S, eval scales (1.0)
  and (1.25, 1.75) (deeplab_face.models.multiscale: softmax averaged over scales), to the class-id map;
- FlowNet2-s interpolation: one non-key frame, flow net + warp x scale + task_net + argmax
  (flownet2s.dff.DeepFeatureFlow.propagate), N = ResNet-50;
- the dynamic pipeline streamed through eval.runtime.DynamicSegmenter (fixed interval K = AKI 10, 30,
  100, and K = 1: per-frame N), FPS = eval.metrics.model_fps of its per-frame stage times (bench/
  pipeline.py's runs), the wall-clock FPS of the loop beside it. The runtime brings every mask to the
  host and takes its argmax there (eval.runtime._mask), one device-to-host copy of the (S, S, C)
  probabilities per frame, which these figures include;
- the same key placements priced for the RL scheduler with eval.curves.model_time_fps (the sweeps'
  formula: keys t_key + non-keys t_warp_task + flows t_flow + decisions t_policy, flow on every
  decided frame) at the device stage times: key = N + argmax, flow = F, warp_task = warp x scale +
  task_net + argmax (masks left on the device), policy = rl_scheduler.build_policy's network with its
  P(key) fetched to the host (the decision is taken there).
Batch 1, random weights (speed does not depend on them), inputs already on the device, warm-up calls
untimed, median of the timed calls. Each network call is compiled: jax.jit under the JAX backend (the
variables passed as arguments through keras.StatelessScope), tf.function under TensorFlow (as the
project's DeepFeatureFlow and deeplab_face.evaluate do). Under JAX nothing here imports TensorFlow.
"""
import argparse
import json
import math
import os
import pathlib
import platform
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Table 1 of the paper (reference/paper.txt), FPS on a GTX 1080 Ti.
PAPER_FPS = {("mobilenet_v2", (1.0,)): 58.8, ("mobilenet_v2", (1.25, 1.75)): 21.7,
             ("resnet_v1_50_beta", (1.0,)): 33.3, ("resnet_v1_50_beta", (1.25, 1.75)): 10.1,
             ("xception_65", (1.0,)): 24.4, ("xception_65", (1.25, 1.75)): 6.4, "flownet2s": 153.8}
NAMES = {"mobilenet_v2": "DeepLab-V3+ (MobileNet-V2)", "resnet_v1_50_beta": "DeepLab-V3+ (ResNet-50)",
         "xception_65": "DeepLab-V3+ (Xception-65)"}
BACKBONES = ("mobilenet_v2", "resnet_v1_50_beta", "xception_65")
TARGET = (30, 300.0)   # issue 11: H100 class, batch 1, 513, ResNet-50: the pipeline at AKI 30 >= 300 FPS
NUM_CLASSES = 5


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="65 px, few calls and frames: a CPU check")
    parser.add_argument("--size", type=int, default=None, help="crop size S, 16k + 1 (default 513; tiny 65)")
    parser.add_argument("--backbones", default=",".join(BACKBONES), help="Table 1 networks to time")
    parser.add_argument("--pipeline_backbone", default="resnet_v1_50_beta", help="N of the dynamic pipeline")
    parser.add_argument("--akis", default=None, help="fixed key intervals (default 10,30,100; tiny 2,5)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls (default 3; tiny 1)")
    parser.add_argument("--runs", type=int, default=None, help="timed calls (default 30; tiny 3)")
    parser.add_argument("--min_frames", type=int, default=None, help="frames per dynamic run at least "
                        "(a multiple of K; default 120, tiny 8)")
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    tiny = args.tiny
    args.size = args.size or (65 if tiny else 513)
    args.akis = [int(a) for a in (args.akis or ("2,5" if tiny else "10,30,100")).split(",")]
    args.warmup = 1 if tiny and args.warmup is None else (3 if args.warmup is None else args.warmup)
    args.runs = 3 if tiny and args.runs is None else (30 if args.runs is None else args.runs)
    args.min_frames = args.min_frames or (8 if tiny else 120)
    args.backbones = [b for b in args.backbones.split(",") if b]
    if (args.size - 1) % 16 or args.size < 65:
        parser.error(f"--size={args.size}: must be 16k + 1 and >= 65")
    if min(args.akis) < 1 or args.runs < 1 or args.warmup < 0:
        parser.error("--akis >= 1, --runs >= 1, --warmup >= 0")
    return args


def setup_backend(tiny):
    """Before keras is imported: on a CPU check under JAX, XLA's cheapest compile (the timings of a
    tiny run mean nothing; a full LLVM compile of every initializer takes minutes on a small CPU)."""
    if tiny and os.environ.get("KERAS_BACKEND") == "jax" and "xla_backend_optimization_level" not in \
            os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
                                   " --xla_llvm_disable_expensive_passes=true").strip()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# -- compiled calls and timing --------------------------------------------------------------------------
def compile_fn(fn, models):
    """`fn` compiled for the backend: jax.jit with the models' variables as arguments, tf.function."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        variables, seen = [], set()
        for model in models:
            for v in model.variables:
                if id(v) not in seen:
                    seen.add(id(v))
                    variables.append(v)

        def pure(values, *args):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn(*args)

        jitted = jax.jit(pure)
        values = [v.value for v in variables]
        return lambda *args: jitted(values, *args)
    from deeplab_face.backend import compile_fn as compile_tf  # tf.function, or fn itself
    return compile_tf(fn)


def block(out, fetch=False):
    """Waits for `out` (every leaf) on the device; `fetch` also copies it to the host."""
    import keras

    leaves = keras.tree.flatten(out)
    if keras.backend.backend() == "jax" and not fetch:
        import jax
        jax.block_until_ready(leaves)
    else:
        from deeplab_face.backend import to_numpy
        for leaf in leaves:
            to_numpy(leaf)
    return out


def time_ms(fn, args, warmup, runs, fetch=False):
    """Median milliseconds of fn(*args) over `runs` calls after `warmup` untimed ones."""
    import numpy as np

    for _ in range(warmup):
        block(fn(*args), fetch)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        block(fn(*args), fetch)
        times.append(1000.0 * (time.perf_counter() - start))
    return float(np.median(times))


def device_name():
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        device = jax.devices()[0]
        return f"{device.device_kind} ({device.platform}, jax {jax.__version__})"
    if backend == "tensorflow":
        import tensorflow as tf
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return f"{tf.config.experimental.get_device_details(gpus[0]).get('device_name', 'GPU')} (tensorflow)"
    return f"{platform.processor() or platform.machine()} CPU ({backend})"


def on_device(array):
    import keras
    return keras.ops.convert_to_tensor(array)


# -- the measurements ----------------------------------------------------------------------------------
def table1_rows(args, frame, log):
    """Table 1: each backbone x each scale set, frame -> class ids, compiled."""
    import keras
    from keras import ops

    from deeplab_face import build_segmenter
    from deeplab_face.models.layers import scale_dimension
    from deeplab_face.models.multiscale import PAPER_SCALES, ScaledLogits, predict_multiscale

    rows = []
    for backbone in args.backbones:
        keras.utils.set_random_seed(args.seed)
        model = build_segmenter(backbone, NUM_CLASSES, args.size)
        logits_fn = ScaledLogits(model)
        for scales in ((1.0,), tuple(PAPER_SCALES)):
            for scale in scales:    # each scale's network built (weights copied) before tracing, not run
                size = scale_dimension(args.size, scale)
                logits_fn._net(size, size)
            copies = [copy for copy, _ in logits_fn._nets.values()]

            def predict(images, scales=scales):
                return ops.argmax(predict_multiscale(logits_fn, images, scales=scales), axis=-1)

            ms = time_ms(compile_fn(predict, copies), (frame,), args.warmup, args.runs)
            rows.append(dict(name=NAMES.get(backbone, backbone), scales=list(scales), ms=ms, fps=1000.0 / ms,
                             paper_fps=PAPER_FPS.get((backbone, scales))))
            log(f"  {backbone} scales {scales}: {ms:.2f} ms")
        del model, logits_fn
        keras.backend.clear_session()
    return rows


def build_dff(args):
    import keras

    from deeplab_face import build_segmenter
    from flownet2s import build_flownet
    from flownet2s.dff import DeepFeatureFlow, flow_input_size

    keras.utils.set_random_seed(args.seed)
    segmenter = build_segmenter(args.pipeline_backbone, NUM_CLASSES, args.size)
    flow_net = build_flownet(feature_channels=int(segmenter.feature_net.output_shape[-1]),
                             input_size=flow_input_size(args.size))
    return DeepFeatureFlow(segmenter, flow_net)


class CompiledDFF:
    """What eval.runtime.DynamicSegmenter calls of a DeepFeatureFlow (key, flow, propagate with the
    flow given, crop_size), each through DeepFeatureFlow's own method, compiled by `compile_fn`
    (under JAX DeepFeatureFlow runs eagerly: its own compilation is tf.function)."""

    def __init__(self, dff):
        models = [dff.segmenter, dff.flow_net]
        self.crop_size = dff.crop_size
        self.key = compile_fn(dff.key, models)
        self.flow = compile_fn(dff.flow, models)
        self._given = compile_fn(lambda features, flow, scale: dff.propagate(
            None, features, None, flow_outputs={"flow": flow, "scale": scale}), models)
        self._full = compile_fn(dff.propagate, models)

    def propagate(self, key_frame, key_features, frame, flow_outputs=None):
        if flow_outputs is None:
            return self._full(key_frame, key_features, frame)
        out = dict(self._given(key_features, flow_outputs["flow"], flow_outputs["scale"]))
        out.update({k: flow_outputs[k] for k in ("conv6", "conv6_1") if k in flow_outputs})
        return out


def pipeline_rows(args, log):
    """FlowNet2-s interpolation, the streamed dynamic pipeline and its RL pricing."""
    import keras
    import numpy as np

    from bench.streams import face_frames

    dff = build_dff(args)
    lengths = {k: k * max(2, math.ceil(args.min_frames / k)) for k in args.akis}
    frames = face_frames(max(list(lengths.values()) + [args.min_frames]), args.size, args.seed)
    key_frame, frame = on_device(frames[:1].astype(np.float32)), on_device(frames[3:4].astype(np.float32))
    compiled = CompiledDFF(dff)
    stage = _device_stage_ms(args, dff, compiled, key_frame, frame)
    log("  device ms: " + ", ".join(f"{k} {v:.2f}" for k, v in stage.items()))

    runtime_dff = compiled if keras.backend.backend() == "jax" else dff
    streamed, stage_ms = _streamed_runs(args, runtime_dff, frames, lengths)
    log("  runtime median ms (masks fetched to the host): " + ", ".join(f"{k} {v:.2f}" for k, v in stage_ms.items()))
    return _pipeline_table(args, stage, streamed), dict(device_ms=stage, runtime_ms=stage_ms)


def _device_stage_ms(args, dff, compiled, key_frame, frame):
    """Milliseconds of each DFF stage and of the RL policy on the device (masks, argmax, left there)."""
    import keras
    import numpy as np
    from keras import ops

    from rl_scheduler import build_policy

    models = [dff.segmenter, dff.flow_net]
    features = compiled.key(key_frame)["features"]
    flow = compiled.flow(key_frame, frame)
    stage = {   # on the device, masks (argmax) included and left there
        "key": time_ms(compile_fn(lambda f: ops.argmax(dff.key(f)["probs"], axis=-1), models), (key_frame,),
                       args.warmup, args.runs),
        "interpolation": time_ms(compile_fn(lambda k, x, f: ops.argmax(dff.propagate(k, x, f)["probs"], axis=-1),
                                            models), (key_frame, features, frame), args.warmup, args.runs),
        "flow": time_ms(compiled.flow, (key_frame, frame), args.warmup, args.runs),
        "warp_task": time_ms(compile_fn(lambda x, fl, sc: ops.argmax(dff.propagate(
            None, x, None, flow_outputs={"flow": fl, "scale": sc})["probs"], axis=-1), models),
            (features, flow["flow"], flow["scale"]), args.warmup, args.runs)}
    tap = flow["conv6_1"]
    keras.utils.set_random_seed(args.seed)
    policy = build_policy([int(d) for d in tap.shape[1:]])
    expert = on_device(np.array([[0.1, 0.2]], np.float32))
    stage["policy"] = time_ms(compile_fn(lambda d, e: policy([d, e], training=False)[:, 1], [policy]),
                              (tap, expert), args.warmup, args.runs, fetch=True)
    return stage


def _streamed_runs(args, runtime_dff, frames, lengths):
    """({K: timed_stream at fixed interval K}, the runtime's median ms per stage), K = 1 and args.akis."""
    import numpy as np

    from bench.streams import timed_stream
    from eval.runtime import DynamicSegmenter
    from rl_scheduler.schedulers import make_scheduler

    DynamicSegmenter(runtime_dff, make_scheduler("fixed", threshold=2)).warm_up(frames[0])
    timed_stream(runtime_dff, 2, frames[:6])          # first-run allocations
    streamed = {1: timed_stream(runtime_dff, 1, frames[:args.min_frames])}
    for k in args.akis:
        streamed[k] = timed_stream(runtime_dff, k, frames[:lengths[k]])
    non_key = [r for k, (results, _) in streamed.items() for r in results if not r.is_key]
    stage_ms = {"key": float(np.median([r.ms["key"] for r in streamed[1][0]])),
                "flow": float(np.median([r.ms["flow"] for r in non_key])) if non_key else math.nan,
                "warp_task": float(np.median([r.ms["warp_task"] for r in non_key])) if non_key else math.nan}
    return streamed, stage_ms


def _pipeline_table(args, stage, streamed):
    """The rows: F's interpolation, each streamed run, and RL priced at the device stage times."""
    from eval import metrics
    from eval.curves import model_time_fps

    rows = [dict(name="FlowNet2-s interpolation (F + warp x scale + task_net)", scales=None,
                 ms=stage["interpolation"], fps=1000.0 / stage["interpolation"], paper_fps=PAPER_FPS["flownet2s"])]
    for k, (results, seconds) in streamed.items():
        keys = [r.is_key for r in results]
        fps = metrics.model_fps([r.ms for r in results])
        name = "per-frame N, streamed (eval.runtime, K = 1)" if k == 1 else \
            f"dynamic, fixed K = {k}, streamed (eval.runtime)"
        rows.append(dict(name=name, aki=metrics.aki(keys), frames=len(results), ms=1000.0 / fps, fps=fps,
                         wall_fps=metrics.end_to_end_fps(len(results), seconds),
                         paper_fps=PAPER_FPS.get((args.pipeline_backbone, (1.0,))) if k == 1 else None))
    device_ms = dict(stage, policy={"rl": stage["policy"]})
    for k in args.akis:
        keys = [r.is_key for r in streamed[k][0]]
        fps = model_time_fps([keys], "rl", device_ms)
        rows.append(dict(name=f"dynamic, RL scheduler at AKI {metrics.aki(keys):g}, priced at the device stage times",
                         aki=metrics.aki(keys), ms=1000.0 / fps, fps=fps, paper_fps=None))
    return rows


def format_table(rows, size):
    lines = [f"| measurement (S = {size}, batch 1) | eval scales | paper FPS (1080 Ti) | ours ms / frame | ours FPS "
             "| ours wall FPS |", "|---|---|---|---|---|---|"]
    for r in rows:
        scales = ", ".join(str(float(s)) for s in r["scales"]) if r.get("scales") else "n/a"
        paper = f"{r['paper_fps']:g}" if r.get("paper_fps") is not None else "- (Fig. 4: curves only)"
        wall = f"{r['wall_fps']:.1f}" if r.get("wall_fps") is not None else ""
        lines.append(f"| {r['name']} | {scales} | {paper} | {r['ms']:.2f} | {r['fps']:.1f} | {wall} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    setup_backend(args.tiny)
    import keras
    import numpy as np

    def log(line):
        print(line, flush=True)

    start = time.perf_counter()
    device = device_name()
    log(f"bench/gpu_fps.py: keras {keras.__version__}, {keras.backend.backend()} backend on {device}; "
        f"S = {args.size}, warm-up {args.warmup}, median of {args.runs}"
        + (" (tiny: not a timing)" if args.tiny else ""))
    frame = on_device(np.random.default_rng(args.seed).uniform(0, 255, (1, args.size, args.size, 3))
                      .astype(np.float32))
    rows = table1_rows(args, frame, log)
    pipeline, stages = pipeline_rows(args, log)
    rows += pipeline
    log("")
    log(format_table(rows, args.size))
    dynamic = [r for r in rows if r["name"].startswith("dynamic, ") and r.get("aki") == TARGET[0]]
    if args.pipeline_backbone == "resnet_v1_50_beta" and args.size == 513:
        for r in dynamic:
            log(f"target (issue 11, H100 class: AKI {TARGET[0]} >= {TARGET[1]:g} FPS): {r['name']}: "
                f"{r['fps']:.1f} FPS on {device}: {'met' if r['fps'] >= TARGET[1] else 'not met'}")
    if keras.backend.backend() == "jax":
        log(f"tensorflow in this process: {'yes' if sys.modules.get('tensorflow') is not None else 'no'} (where "
            "it is installed, keras.utils.set_random_seed imports it to seed it; nothing here needs it: "
            "tests/bench/test_gpu_fps.py runs the JAX path with it blocked)")
    log(f"total {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=device, backend=keras.backend.backend(), size=args.size, tiny=args.tiny,
                           rows=rows, stages=stages), f, indent=1)
    return rows


if __name__ == "__main__":
    main()
