"""The main job: the whole paper pipeline in one command (DESIGN.md "Commands").

    python -m eval.reproduce --workdir=W [--config=tiny|smoke|paper] [--data_dir=D]

Stages, in order: data -> prepare -> segmenter (N) -> table1 (N's scale sets) -> flownet_pretrain (F learns
motion from generated pairs with known flow) -> flownet (F fine-tuned as §4.2) ->
flownet_eval (Table 1's FlowNet2-s row) -> rl_eta<η> (one per KAR limit) -> dvsnet -> sweeps -> figures
-> report. Each stage calls the stage function of its package (docs/interfaces.md, "Stage functions") with
the preset's hyper-parameters (eval.presets). A finished stage leaves `W/stages/<name>.json` (its returned
numbers and elapsed time) and is skipped on re-run; an interrupted training resumes from its own
checkpoint when called again. WORKSPACE.md documents the workdir.
"""
import dataclasses
import os
import pathlib
import time

from absl import flags

from deeplab_face import atomic, cli, stage as stage_lib
from deeplab_face.atomic import jsonable as _jsonable
from deeplab_face.errors import ConfigError, DataError
from eval import presets
from eval import diagnostics
from eval import real_face
from eval import report as report_lib
from eval import workdir as workdir_lib
from eval.splits import resolve_split  # noqa: F401 (the split rules live there; tests call it here)

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Work directory: data/, prepared/, checkpoints/, figures/, report.md, "
                    "results.json (WORKSPACE.md). Re-using it resumes the run.")
flags.DEFINE_enum("config", "tiny", sorted(presets.PRESETS), "Experiment preset (eval/presets.py): tiny = "
                  "embedded data, ~15 min on a 2-core CPU; smoke = CI check; paper = the paper's settings.")
flags.DEFINE_string("data_dir", None, "A real 300VW tree (NNN/vid.avi, NNN/annot/*.pts). Default: the embedded "
                    "data, generated into W/data. Required by --config=paper.")
flags.DEFINE_string("split_dir", None, "Folder with the paper's 300VW-Mask split_2 lists A.txt, B.txt, C.txt "
                    "(§9). Default: the official 300VW split mapped onto A/B/C (WORKSPACE.md).")
flags.DEFINE_string("exclude_file", None, "Optional list of frames to drop (300VW ReadMe/extra.zip), passed to "
                    "deeplab_face.prepare_300vw.")
flags.DEFINE_string("segmenter_init", None, "TF1 DeepLab model-zoo checkpoint to fine-tune N from (§4.2).")
flags.DEFINE_string("flownet_init", None, "TF1 FlowNet2 checkpoint to fine-tune F from (§4.2).")
flags.DEFINE_string("stop_after", None, "Stop after this stage (e.g. segmenter); re-run later to continue.")
flags.mark_flag_as_required("workdir")


def _eta_name(kar_limit):
    return f"rl_eta{kar_limit:g}"


class Pipeline:
    """Runs the stages of one experiment in one workdir; knows which ones are finished."""

    def __init__(self, workdir, experiment, data_dir=None, split_dir=None, exclude=None, log=print):
        self.workdir = pathlib.Path(workdir)
        self.experiment = experiment
        self.external_data = data_dir
        self.split_dir = split_dir
        self.exclude = exclude
        self.log = log
        self.results = {}           # stage name -> returned numbers
        self.timings = {}           # stage name -> wall seconds (of the run that finished it)
        self.cpu_timings = {}       # stage name -> CPU seconds of this process (all threads)
        self.skipped = []
        self.real_clip_note = None  # why Split.real_test's videos were dropped (eval.real_face)
        self.stages_dir = self.workdir / "stages"
        self.stages_dir.mkdir(parents=True, exist_ok=True)

    # -- paths (WORKSPACE.md) -------------------------------------------------------------------
    @property
    def data_dir(self):
        return str(self.external_data or self.workdir / "data")

    @property
    def prepared_dir(self):
        return str(self.workdir / "prepared")

    def checkpoint_dir(self, stage):
        return str(self.workdir / "checkpoints" / stage)

    # -- stage bookkeeping ------------------------------------------------------------------------
    def run_stage(self, index, total, name, description, fn, training=False):
        """Runs `fn()` unless `name` finished earlier; records its numbers and elapsed time."""
        record = self.stages_dir / f"{name}.json"
        head = f"[{index}/{total}] {name}"
        saved = workdir_lib.read_stage_record(record, log=self.log)
        if saved is not None:
            self.results[name], self.timings[name] = saved["result"], saved["seconds"]
            self.cpu_timings[name] = saved.get("cpu_seconds", 0.0)
            self.skipped.append(name)
            self.log(f"==== {head}: finished earlier ({saved['seconds']:.1f} s), skipped")
            return self.results[name]
        if training and stage_lib.check_done(self.checkpoint_dir(name), log=self.log):
            # Trained by hand with the stage's own command (WORKSPACE.md): use it as it is.
            self.log(f"==== {head}: {self.checkpoint_dir(name)}/DONE exists, skipped")
            result, seconds, cpu_seconds = {}, 0.0, 0.0
        else:
            self.log(f"==== {head}: {description}")
            start, cpu_start = time.perf_counter(), time.process_time()
            result = fn()
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
            self.log(f"---- {name} finished in {seconds:.1f} s ({cpu_seconds:.1f} s CPU)")
        if training:
            workdir_lib.link_tensorboard(self.workdir, name, self.checkpoint_dir(name))
        result = _jsonable(result if result is not None else {})
        stage_lib.kill_point(f"stage/{name}/before-record")
        workdir_lib.write_stage_record(record, result, seconds, cpu_seconds)
        self.results[name], self.timings[name], self.cpu_timings[name] = result, seconds, cpu_seconds
        return result

def _call(fn, *args, log=print, **kwargs):
    """`fn(*args, **kwargs)`, dropping (loudly) preset keys the stage function does not take; `log`
    goes to the functions that take one."""
    import inspect
    params = inspect.signature(fn).parameters
    if "log" in params:
        kwargs["log"] = log
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        dropped = sorted(k for k in kwargs if k not in params)
        if dropped:
            log(f"warning: {fn.__module__}.{fn.__name__} takes no {', '.join(dropped)}; not passed")
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return fn(*args, **kwargs)


def _batch_norm_layers(model):
    import keras
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            yield layer
        elif hasattr(layer, "layers"):
            yield from _batch_norm_layers(layer)


def recalibrate_batch_norm(segmenter_dir, out_dir, prepared_dir, video_ids, batches, batch_size=8, seed=0):
    """Precise BN (Wu & Johnson 2021): N of `segmenter_dir` with its batch-norm moving statistics
    replaced by their average over `batches` random batches of training frames; written as a stage dir
    (config.json, final.weights.h5, DONE) that later stages load in place of the trained one."""
    import numpy as np
    import tensorflow as tf

    from deeplab_face import load_segmenter
    from deeplab_face.data.pipelines import load_video
    model = load_segmenter(segmenter_dir)
    norms = list(_batch_norm_layers(model))
    for layer in norms:
        layer.momentum = 0.0    # a training-mode call then leaves exactly that batch's statistics
    forward = tf.function(lambda x: model(x, training=True))
    frames = np.concatenate([load_video(prepared_dir, v)[0] for v in video_ids])
    rng = np.random.default_rng(seed)
    sums = [[0.0, 0.0] for _ in norms]
    for _ in range(batches):
        forward(frames[rng.choice(len(frames), batch_size, replace=False)].astype(np.float32))
        for total, layer in zip(sums, norms):
            total[0] += layer.moving_mean.numpy()
            total[1] += layer.moving_variance.numpy()
    for (mean, variance), layer in zip(sums, norms):
        layer.moving_mean.assign(mean / batches)
        layer.moving_variance.assign(variance / batches)
    stage_lib.finish_stage(out_dir, model, stage_lib.read_stage_config(segmenter_dir, "segmenter"))
    return {"batch_norm_layers": len(norms), "batches": batches, "batch_size": batch_size,
            "source": segmenter_dir}


# -- the stages -------------------------------------------------------------------------------------
def stage_list(p, split, segmenter_init=None, flownet_init=None):
    """[(name, description, fn, training)] in pipeline order."""
    e = p.experiment
    trained_seg_dir, flow_dir = p.checkpoint_dir("segmenter"), p.checkpoint_dir("flownet")
    seg_dir = p.checkpoint_dir("segmenter_bn") if e.recalibrate_bn else trained_seg_dir
    all_videos = sorted(set(split.segmenter_train + split.segmenter_val + split.scheduler_train
                            + split.scheduler_val + split.test + split.real_test))

    def data():
        from deeplab_face.make_synthetic import make_synthetic
        d = e.data
        return make_synthetic(p.data_dir, videos=d.synthetic_videos, frames=d.synthetic_frames,
                              size=d.synthetic_size, seed=d.seed, demo_clip=d.demo_clip,
                              long_videos=d.long_videos, long_frames=d.long_frames, real_clip=d.real_clip,
                              log=p.log)

    def prepare():
        from deeplab_face.prepare_300vw import prepare as prepare_fn
        return prepare_fn(p.data_dir, p.prepared_dir, size=e.data.crop_size, video_ids=all_videos,
                          exclude=p.exclude)

    def train_segmenter(stage, backbone):
        from deeplab_face.train import train_eval
        hparams = dict(dataclasses.asdict(e.segmenter), backbone=backbone)
        if segmenter_init and backbone == e.segmenter.backbone:
            hparams["init_checkpoint"] = segmenter_init
        return _call(train_eval, p.checkpoint_dir(stage), p.prepared_dir, list(split.segmenter_train),
                     list(split.segmenter_val), log=p.log, **hparams)

    def table1():
        from deeplab_face.evaluate import evaluate
        rows = []
        for stage_dir in [seg_dir] + [p.checkpoint_dir(f"segmenter_{b}") for b in e.table1.extra_backbones]:
            # (evaluate gives the VGG models their single "N/A" row itself)
            out = _call(evaluate, stage_dir, p.prepared_dir, list(split.test), log=p.log,
                        scale_sets=e.table1.scale_sets, flip=e.table1.flip, max_frames=e.table1.max_frames)
            rows += out["table1"]
        # N per class: the test videos against the real face (Split.real_test, Table 1 only)
        per_class = real_face.per_class_iou(seg_dir, p.prepared_dir, {"test": split.test, "real_face": split.real_test},
                                            max_frames=e.table1.max_frames, log=p.log)
        return {"table1": rows, "per_class": per_class}

    def pretrain_flownet():
        from flownet2s.pretrain import pretrain
        return _call(pretrain, p.checkpoint_dir("flownet_pretrain"), log=p.log, width=e.flow.width,
                     face_crop_size=e.data.crop_size, **dataclasses.asdict(e.flow_pretrain))

    def train_flownet():
        from flownet2s.train import train_eval
        hparams = dataclasses.asdict(e.flow)
        if flownet_init:
            hparams["init_checkpoint"] = flownet_init
        elif e.flow_pretrain.steps:
            hparams["init_stage"] = p.checkpoint_dir("flownet_pretrain")
        return _call(train_eval, flow_dir, p.prepared_dir, seg_dir, list(split.segmenter_train),
                     list(split.segmenter_val), log=p.log, **hparams)

    def flownet_eval():
        from flownet2s.evaluate import evaluate
        return _call(evaluate, seg_dir, flow_dir, p.prepared_dir, list(split.test), log=p.log,
                     gaps=e.table1.gaps, max_frames=e.table1.max_frames, flow_resolution=e.flow.flow_resolution)

    def train_dvsnet():
        from rl_scheduler.train_dvsnet import train_eval
        return _call(train_eval, p.checkpoint_dir("dvsnet"), p.prepared_dir, seg_dir, flow_dir,
                     list(split.scheduler_train), list(split.scheduler_val), log=p.log,
                     flow_resolution=e.flow.flow_resolution, pair_table_dir=str(p.workdir / "pair_tables"),
                     **dataclasses.asdict(e.dvsnet))

    def train_rl(kar_limit):
        from rl_scheduler.train import train_eval
        return _call(train_eval, p.checkpoint_dir(_eta_name(kar_limit)), p.prepared_dir, seg_dir, flow_dir,
                     list(split.scheduler_train), list(split.scheduler_val), log=p.log, kar_limit=kar_limit,
                     flow_resolution=e.flow.flow_resolution, pair_table_dir=str(p.workdir / "pair_tables"),
                     **dataclasses.asdict(e.rl))

    def sweeps():
        from eval import sweeps as sweeps_lib
        return _call(sweeps_lib.run_sweeps, str(p.workdir / "sweeps"), p.prepared_dir, seg_dir, flow_dir,
                     {eta: p.checkpoint_dir(_eta_name(eta)) for eta in e.kar_limits},
                     p.checkpoint_dir("dvsnet"), list(split.test), log=p.log,
                     flow_resolution=e.flow.flow_resolution, **dataclasses.asdict(e.sweep))

    def figures():
        from eval import figures as figures_lib
        return _call(figures_lib.make_figures, str(p.workdir / "figures"), str(p.workdir), log=p.log)

    stages = []
    if p.external_data is None:
        stages.append(("data", f"embedded data: {e.data.synthetic_videos} synthetic videos x "
                       f"{e.data.synthetic_frames} frames" + (" + the astronaut clip" if e.data.demo_clip else "")
                       + (" + the real-face clip" if e.data.real_clip else ""),
                       data, False))
    stages.append(("prepare", f"face crops at S={e.data.crop_size} for {len(all_videos)} videos", prepare, False))
    stages.append(("segmenter", f"train N ({e.segmenter.backbone}, S={e.segmenter.crop_size}, "
                   f"{e.segmenter.steps} steps) on {len(split.segmenter_train)} videos",
                   lambda: train_segmenter("segmenter", e.segmenter.backbone), True))
    if e.recalibrate_bn:
        stages.append(("segmenter_bn", f"re-estimate N's batch-norm statistics ({e.recalibrate_bn} batches)",
                       lambda: recalibrate_batch_norm(trained_seg_dir, seg_dir, p.prepared_dir,
                                                      split.segmenter_train, e.recalibrate_bn,
                                                      seed=e.segmenter.seed), False))
    for backbone in e.table1.extra_backbones:
        stages.append((f"segmenter_{backbone}", f"train the Table 1 model {backbone}",
                       lambda b=backbone: train_segmenter(f"segmenter_{b}", b), True))
    stages.append(("table1", f"Table 1: N at scales {e.table1.scale_sets} on the test videos", table1, False))
    if e.flow_pretrain.steps and not flownet_init:
        stages.append(("flownet_pretrain", f"pretrain F on generated pairs with known flow "
                       f"({e.flow_pretrain.steps} steps, EPE loss)", pretrain_flownet, True))
    stages.append(("flownet", f"fine-tune F (width {e.flow.width}, {e.flow.steps} steps, gaps "
                   f"{e.flow.min_gap}-{e.flow.max_gap})", train_flownet, True))
    stages.append(("flownet_eval", "Table 1: the FlowNet2-s row, mIoU per gap", flownet_eval, False))
    for eta in e.kar_limits:   # first: their pair tables (W/pair_tables) serve the DVSNet stage too
        stages.append((_eta_name(eta), f"train the RL policy, KAR limit {eta:g}, {e.rl.episodes} episodes",
                       lambda eta=eta: train_rl(eta), True))
    stages.append(("dvsnet", f"train the DVSNet decision network ({e.dvsnet.epochs} epochs)", train_dvsnet, True))
    stages.append(("sweeps", f"scheduler sweeps on the test videos {' '.join(split.test)}", sweeps, False))
    stages.append(("figures", "Fig. 3, 4, 6, 7, 8 and Table 1", figures, False))
    return stages


# -- results.json -----------------------------------------------------------------------------------
def collect_results(p, split):
    """results.json (DESIGN.md schema: config, curves, table1, dataset) plus claim, timings, training."""
    e, r = p.experiment, p.results
    table1 = list(r.get("table1", {}).get("table1", [])) + list(r.get("flownet_eval", {}).get("table1", []))
    curves = r.get("sweeps", {}).get("curves", {})
    return {
        "config": dict(e.to_dict(), data_dir=p.data_dir, embedded_data=p.external_data is None),
        "curves": curves,
        "table1": table1,
        "table1_per_class": dict(r.get("table1", {}).get("per_class") or {}, real_face_note=p.real_clip_note),
        "dataset": {
            "source": "embedded (deeplab_face.make_synthetic)" if p.external_data is None else p.data_dir,
            "train_videos": sorted(set(split.segmenter_train + split.segmenter_val
                                       + split.scheduler_train + split.scheduler_val)),
            "test_videos": list(split.test),
            "real_test_videos": list(split.real_test),
            "split": dataclasses.asdict(split),
        },
        "claim": report_lib.matched_aki_claim(curves, e.sweep.matched_aki_min),
        "diagnostics": {"rl": diagnostics.rl_diagnostics(str(p.workdir), r)},
        "gap_miou": r.get("flownet_eval", {}).get("gap_miou", {}),
        "training": {name: r[name] for name in r
                     if name in ("segmenter", "flownet_pretrain", "flownet", "dvsnet")
                     or name.startswith(("rl_eta", "segmenter_"))},
        "sweeps": {k: v for k, v in r.get("sweeps", {}).items() if k != "curves"},
        "figures": r.get("figures", {}),
        "timings": {"seconds_per_stage": dict(p.timings), "total_seconds": sum(p.timings.values()),
                    "cpu_seconds_per_stage": dict(p.cpu_timings),
                    "skipped_this_run": list(p.skipped)},
    }


def reproduce(workdir, config="tiny", data_dir=None, split_dir=None, exclude=None, segmenter_init=None,
              flownet_init=None, stop_after=None, log=print):
    """Runs (or resumes) the whole pipeline in `workdir`; returns the results.json dict."""
    experiment = presets.get(config)
    if data_dir is None and not experiment.uses_embedded_data:
        raise ConfigError(f"--data_dir: --config={config} needs a real 300VW tree")
    if data_dir is not None and not os.path.isdir(data_dir):
        raise DataError(f"{data_dir}: --data_dir is not a directory")
    data_dir = os.path.abspath(data_dir) if data_dir else None
    split_dir = os.path.abspath(split_dir) if split_dir else None
    lock = stage_lib.workdir_lock(workdir, log=log)   # checks the folder first: a bad --workdir fails now
    try:
        workdir_lib.check_identity(workdir, {"config": config, "data_dir": data_dir, "split_dir": split_dir,
                                             "preset": _jsonable(experiment.to_dict())}, log=log)
        return _run(Pipeline(workdir, experiment, data_dir, split_dir, exclude, log=log), segmenter_init,
                    flownet_init, stop_after)
    finally:
        lock.release()


def _run(p, segmenter_init, flownet_init, stop_after):
    experiment, data_dir, split_dir, log = p.experiment, p.external_data, p.split_dir, p.log
    start = time.perf_counter()
    log(f"eval.reproduce: config {experiment.name}, workdir {os.path.abspath(p.workdir)}")

    split, finished = experiment.split, set()
    names = [s[0] for s in stage_list(p, split, segmenter_init, flownet_init)]
    if stop_after is not None and stop_after not in names:   # checked before any work
        raise ConfigError(f"--stop_after: no stage {stop_after!r} (stages: {' '.join(names)})")
    if data_dir is None:   # the embedded data must exist before its split can be checked
        stages = stage_list(p, split, segmenter_init, flownet_init)
        p.run_stage(1, len(stages) + 1, *stages[0])
        finished.add(stages[0][0])
        # the real face (901) without the optional extra: dropped with the note, never a failure
        split, p.real_clip_note = real_face.drop_missing_real_test(split, p.data_dir, log=log)
    split = resolve_split(dataclasses.replace(experiment, split=split), p.data_dir, data_dir is None, split_dir,
                          log=log)
    stages = stage_list(p, split, segmenter_init, flownet_init)
    total = len(stages) + 1
    for index, (name, description, fn, training) in enumerate(stages, start=1):
        if name == "figures":   # the figures read results.json
            atomic.write_json(p.workdir / "results.json", collect_results(p, split))
        if name not in finished:
            p.run_stage(index, total, name, description, fn, training)
        if name == stop_after:
            log(f"stopped after {name} (--stop_after); run the same command again to continue")
            return collect_results(p, split)

    log(f"==== [{total}/{total}] report")
    results = collect_results(p, split)
    atomic.write_json(p.workdir / "results.json", results)
    report_path = report_lib.write_report(p.workdir, results)
    elapsed = time.perf_counter() - start
    if p.skipped:
        log(f"skipped {len(p.skipped)} finished stage(s): {' '.join(p.skipped)}")
    log(f"done in {elapsed:.1f} s. Report: {os.path.abspath(report_path)}")
    log(f"results: {os.path.abspath(p.workdir / 'results.json')}, figures: {os.path.abspath(p.workdir / 'figures')}")
    return results


def main(argv):
    cli.check_command_line(argv)
    reproduce(FLAGS.workdir, FLAGS.config, FLAGS.data_dir, FLAGS.split_dir, FLAGS.exclude_file,
              FLAGS.segmenter_init, FLAGS.flownet_init, FLAGS.stop_after)


if __name__ == "__main__":
    cli.run(main)
