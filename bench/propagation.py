"""Key path vs non-key path (§3.1): the speed-up limit of the whole system.

    python bench/propagation.py [--backbone=resnet_v1_50_beta] [--sizes=513,129]
                                [--resolutions=full,half] [--width=0.375] [--warp_jit] [--runs=10]

Key path = N on the frame (feature_net + task_net). Non-key path = F on the (key, current)
pair + warp of the key features x scale field + task_net, as DeepFeatureFlow.propagate runs it
(one compiled call each). Batch 1, random weights (speed does not depend on them), frames
already in memory, warm-up calls untimed, median of the timed calls. The ratio key / non-key
is the largest speed-up any key scheduler can reach (all frames non-key).
"""
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from deeplab_face import build_segmenter  # noqa: E402
from flownet2s import build_flownet  # noqa: E402
from flownet2s.dff import DeepFeatureFlow, flow_input_size, time_call  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("backbone", "resnet_v1_50_beta", "Segmentation network N (the paper's: ResNet-50).")
flags.DEFINE_list("sizes", ["513", "129"], "Crop sizes S (16k + 1).")
flags.DEFINE_list("resolutions", ["full", "half"], "Flow-net input: full (largest multiple of 64 "
                  "<= S) and/or half.")
flags.DEFINE_float("width", 0.375, "FlowNetS width (0.375 = FlowNet2-s, the paper's F).", lower_bound=0.01)
flags.DEFINE_boolean("warp_jit", True, "XLA-compile the warp + task part of the non-key path "
                     "(DeepFeatureFlow's default; --nowarp_jit for plain tf.function).")
flags.DEFINE_integer("num_classes", 5, "Classes of N.", lower_bound=2)
flags.DEFINE_integer("warmup", 3, "Untimed calls first.", lower_bound=0)
flags.DEFINE_integer("runs", 10, "Timed calls (median reported).", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the random weights and frames.", lower_bound=0)


def benchmark(backbone, sizes, resolutions, width=0.375, warp_jit=False, num_classes=5, warmup=3,
              runs=10, seed=0):
    """[dict(S, resolution, flow_input, key_ms, flow_ms, non_key_ms, ratio)]."""
    rows = []
    rng = np.random.default_rng(seed)
    for size in sizes:
        keras.utils.set_random_seed(seed)
        segmenter = build_segmenter(backbone, num_classes, size)
        key_frame = rng.uniform(0, 255, (1, size, size, 3)).astype("float32")
        frame = np.clip(np.roll(key_frame, 3, axis=2) + rng.normal(0, 2, key_frame.shape), 0, 255)
        frame = frame.astype("float32")
        key_ms = None
        for resolution in resolutions:
            flow_net = build_flownet(width=width, feature_channels=int(segmenter.feature_net.output_shape[-1]),
                                     input_size=flow_input_size(size, resolution))
            dff = DeepFeatureFlow(segmenter, flow_net, flow_resolution=resolution, warp_jit=warp_jit)
            if key_ms is None:
                key_ms = time_call(lambda: dff.key(key_frame), warmup, runs)
            features = dff.key(key_frame)["features"]
            flow_ms = time_call(lambda: dff.flow(key_frame, frame), warmup, runs)
            non_key_ms = time_call(lambda: dff.propagate(key_frame, features, frame), warmup, runs)
            row = dict(S=size, resolution=resolution, flow_input=dff.flow_input[0], key_ms=key_ms,
                       flow_ms=flow_ms, non_key_ms=non_key_ms, ratio=key_ms / non_key_ms)
            rows.append(row)
            print(f"  S={size} {resolution}: key {key_ms:.1f} ms, non-key {non_key_ms:.1f} ms "
                  f"(flow {flow_ms:.1f})", flush=True)
        del segmenter
        keras.backend.clear_session()
    return rows


def table(rows):
    lines = ["| S | flow input | key path (ms) | F only (ms) | non-key path (ms) | key / non-key |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['S']} | {r['flow_input']} ({r['resolution']}) | {r['key_ms']:.1f} | "
                     f"{r['flow_ms']:.1f} | {r['non_key_ms']:.1f} | {r['ratio']:.1f}x |")
    return "\n".join(lines)


def main(argv):
    del argv
    rows = benchmark(FLAGS.backbone, [int(s) for s in FLAGS.sizes], FLAGS.resolutions, FLAGS.width,
                     FLAGS.warp_jit, FLAGS.num_classes, FLAGS.warmup, FLAGS.runs, FLAGS.seed)
    import tensorflow as tf
    devices = [d.device_type for d in tf.config.list_logical_devices()] \
        if keras.backend.backend() == "tensorflow" else []
    device = "GPU" if "GPU" in devices else "CPU"
    print(f"\nPropagation speed: N = {FLAGS.backbone}, F = FlowNetS width {FLAGS.width:g}, batch 1, "
          f"random weights, {keras.backend.backend()} backend on {device}, warp_jit={FLAGS.warp_jit}, "
          f"median of {FLAGS.runs} runs after {FLAGS.warmup} warm-up calls\n")
    print(table(rows))


if __name__ == "__main__":
    app.run(main)
