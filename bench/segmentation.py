"""Milliseconds per frame of each segmentation network N (Table 1's speed column).

    python bench/segmentation.py [--backbones=mobilenet_v2,...] [--sizes=513,129] [--runs=10]

Batch 1, random weights (speed does not depend on them), the frame already in memory (decoding
excluded), warm-up calls untimed, median of the timed calls; one scale {1.0} and two scales
{1.25, 1.75} (§4.2; softmax averaged, then argmax), as `deeplab_face.evaluate` measures FPS.
The VGG models are single-scale in Table 1 ("N/A"): they are timed at scale 1.0 only.
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
from deeplab_face.prediction import make_predictor, model_fps, parse_scale_sets  # noqa: E402
from deeplab_face.models.backbones import BACKBONE_NAMES, BACKBONES  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("backbones", list(BACKBONE_NAMES), "Networks to time.")
flags.DEFINE_list("sizes", ["513", "129"], "Crop sizes S (16k + 1).")
flags.DEFINE_string("scale_sets", "1.0;1.25,1.75", "Eval-scale sets: ';' between sets.")
flags.DEFINE_integer("num_classes", 5, "Classes of the logits layer (5 face classes).", lower_bound=2)
flags.DEFINE_integer("warmup", 3, "Untimed calls first.", lower_bound=0)
flags.DEFINE_integer("runs", 10, "Timed calls (median reported).", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the random weights and the random frame.", lower_bound=0)


def benchmark(backbones, sizes, scale_sets, num_classes=5, warmup=3, runs=10, seed=0):
    """[(backbone, S, scales, ms per frame)] for every combination."""
    rows = []
    rng = np.random.default_rng(seed)
    for backbone in backbones:
        for size in sizes:
            keras.utils.set_random_seed(seed)
            model = build_segmenter(backbone, num_classes, size)
            frame = rng.uniform(0, 255, (1, size, size, 3)).astype("float32")
            for scales in ((1.0,),) if BACKBONES[backbone].single_scale else scale_sets:
                predict = make_predictor(model, scales, False, (size, size))
                fps = model_fps(predict, frame, warmup, runs)
                rows.append((backbone, size, scales, 1000.0 / fps))
                print(f"  {backbone} S={size} scales={scales}: {1000.0 / fps:.1f} ms", flush=True)
            del model
            keras.backend.clear_session()
    return rows


def main(argv):
    del argv
    scale_sets = parse_scale_sets(FLAGS.scale_sets)
    rows = benchmark(FLAGS.backbones, [int(s) for s in FLAGS.sizes], scale_sets, FLAGS.num_classes,
                     FLAGS.warmup, FLAGS.runs, FLAGS.seed)
    print(f"\nSegmentation speed: batch 1, random weights, {keras.backend.backend()} backend, "
          f"median of {FLAGS.runs} runs after {FLAGS.warmup} warm-up calls, decoding excluded")
    print("| model | S | eval scales | ms / frame | FPS |")
    print("|---|---|---|---|---|")
    for backbone, size, scales, ms in rows:
        name = BACKBONES[backbone].display_name
        print(f"| {name} | {size} | {', '.join(str(float(s)) for s in scales)} | {ms:.1f} | "
              f"{1000.0 / ms:.1f} |")


if __name__ == "__main__":
    app.run(main)
