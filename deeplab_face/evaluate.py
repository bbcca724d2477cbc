"""Table 1 rows for a trained N (§4.2): `python -m deeplab_face.evaluate`.

For each eval-scale set (§4.2: {1.0} and {1.25, 1.75}; softmax averaged over scales, optional
flip), one confusion matrix over every frame of the given videos gives the dataset-level mIoU, and
the model's speed is measured at batch 1: the frame is already decoded and on the device (decoding
excluded), warm-up calls are not timed, FPS = 1000 / median milliseconds of the timed calls.

The VGG rows (FCN-8s, DeepLab-V2) are single-scale models in Table 1 ("N/A"): they are evaluated
at scale 1.0 only and their rows carry `"scales": []`.

Predictions are made at the model's crop size; when the prepared data has another size, the
probabilities are resized (align-corners bilinear) to the labels' size before the argmax.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from absl import flags  # noqa: E402

from deeplab_face import atomic, cli  # noqa: E402
from deeplab_face.errors import ConfigError  # noqa: E402
from deeplab_face.models.backbones import BACKBONES  # noqa: E402
from deeplab_face.models.multiscale import PAPER_SCALE_SETS  # noqa: E402
from deeplab_face.prediction import (FPS_RUNS, FPS_WARMUP, dataset_miou, first_frame,  # noqa: E402
                                     make_predictor, model_fps, parse_scale_sets, read_manifest)
from deeplab_face.segmentation_metrics import fmt, or_none  # noqa: E402


def table1_markdown(rows):
    lines = ["| model | eval scales | mIoU (%) | FPS |", "|---|---|---|---|"]
    for row in rows:
        scales = ", ".join(str(float(s)) for s in row["scales"]) or "N/A"
        lines.append(f"| {row['model']} | {scales} | {fmt(row['miou'])} | {fmt(row['fps'], '.1f')} |")
    return "\n".join(lines) + "\n"


def evaluate(segmenter_dir, prepared_dir, video_ids, scale_sets=PAPER_SCALE_SETS, flip=False,
             max_frames=None, batch_size=4, fps_warmup=FPS_WARMUP, fps_runs=FPS_RUNS,
             out_dir=None, verbose=1, log=print):
    """Table 1 rows of the N in `segmenter_dir` on `video_ids` -> {"table1": [...]} (miou in %, None
    when no labelled pixel was seen).

    out_dir: also write `table1.json` and `table1.md` there (checked before the work starts).
    """
    from deeplab_face import load_segmenter
    video_ids = [str(v) for v in video_ids]
    size, videos = read_manifest(prepared_dir)
    missing = [v for v in video_ids if v not in videos]
    if not video_ids or missing:
        raise ConfigError(f"--video_ids: {missing or 'none given'} not in {prepared_dir}/manifest.json")
    from deeplab_face.models.multiscale import ScaledLogits
    model = load_segmenter(segmenter_dir)
    if out_dir:   # before the work (the frames and the FPS runs)
        atomic.check_output_dir(out_dir, "--out_dir")
    logits_fn = ScaledLogits(model)  # one network per input size, shared by every predictor
    args = model.segmenter_args
    crop_size = int(model.input.shape[1])
    num_classes = int(args["num_classes"])
    record = BACKBONES[args["backbone"]]   # its Table 1 name and whether the row is single-scale
    single_scale = record.single_scale
    if single_scale:
        scale_sets = ((1.0,),)
    total = sum(min(videos[v]["frames"], max_frames or videos[v]["frames"]) for v in video_ids)
    frame = first_frame(prepared_dir, video_ids[0], crop_size)
    rows = []
    for scales in scale_sets:
        scales = tuple(float(s) for s in scales)
        progbar = keras.utils.Progbar(total, verbose=verbose, unit_name="frame")
        predict = make_predictor(model, scales, flip, (size, size), logits_fn)
        miou, _, _ = dataset_miou(predict, prepared_dir, video_ids, crop_size, num_classes,
                                  batch_size, max_frames, progbar)
        if size != crop_size:  # time the model's own output size, not the labels' resize
            predict = make_predictor(model, scales, flip, (crop_size, crop_size), logits_fn)
        fps = model_fps(predict, frame, fps_warmup, fps_runs)
        if or_none(miou) is None:
            log(f"warning: {record.display_name} at scales {scales}: no "
                "labelled pixel in the test frames; its mIoU is n/a")
        miou = or_none(miou)
        rows.append(dict(model=record.display_name,
                         scales=[] if single_scale else list(scales), miou=miou, fps=fps))
    results = {"table1": rows}
    if out_dir:
        atomic.write_json(os.path.join(out_dir, "table1.json"), results, indent=2)
        atomic.write_text(os.path.join(out_dir, "table1.md"), table1_markdown(rows))
    return results


FLAGS = flags.FLAGS


def define_flags():
    """Defined only when run as a command (importing the module defines no flags)."""
    flags.DEFINE_string("segmenter_dir", None, "Finished segmentation stage (config.json, "
                        "final.weights.h5), e.g. W/checkpoints/segmenter.")
    flags.DEFINE_string("prepared_dir", None, "Prepared TFRecords (python -m deeplab_face.prepare_300vw).")
    flags.DEFINE_list("video_ids", [], "Test video ids (default: every video in the manifest).")
    flags.DEFINE_string("scale_sets", "1.0;1.25,1.75", "Eval-scale sets, ';' between sets, ',' "
                        "between the scales of a set (§4.2). VGG models: 1.0 only.")
    flags.DEFINE_boolean("flip", False, "Also average the left-right flipped input.")
    flags.DEFINE_integer("max_frames", None, "At most this many frames per video.", lower_bound=1)
    flags.DEFINE_integer("batch_size", 4, "Frames per call for the mIoU pass (FPS uses batch 1).",
                         lower_bound=1)
    flags.DEFINE_integer("fps_runs", FPS_RUNS, "Timed calls for the FPS median.", lower_bound=1)
    flags.DEFINE_string("out_dir", None, "Write table1.json and table1.md here (created if missing; "
                        "default: <segmenter_dir>/eval).")
    flags.register_validator("scale_sets", _valid_scale_sets, "--scale_sets must be positive scales, ',' "
                             "between the scales of a set, ';' between sets, e.g. '1.0;1.25,1.75'")
    flags.mark_flags_as_required(["segmenter_dir", "prepared_dir"])


def _valid_scale_sets(text):
    try:
        parse_scale_sets(text)
    except ConfigError:
        return False
    return True


def main(argv):
    del argv
    if FLAGS.out_dir:   # before reading anything (the default, <segmenter_dir>/eval, once N has loaded)
        atomic.check_output_dir(FLAGS.out_dir, "--out_dir")
    out_dir = FLAGS.out_dir or os.path.join(FLAGS.segmenter_dir, "eval")
    video_ids = FLAGS.video_ids or sorted(read_manifest(FLAGS.prepared_dir)[1])
    results = evaluate(FLAGS.segmenter_dir, FLAGS.prepared_dir, video_ids,
                       scale_sets=parse_scale_sets(FLAGS.scale_sets), flip=FLAGS.flip,
                       max_frames=FLAGS.max_frames, batch_size=FLAGS.batch_size,
                       fps_runs=FLAGS.fps_runs, out_dir=out_dir)
    print(table1_markdown(results["table1"]))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
