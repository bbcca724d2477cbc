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
import json
import os
import pathlib
import time

from absl import flags

from deeplab_face import cli
from deeplab_face.errors import ConfigError, DataError
from eval import presets
from eval import diagnostics
from eval import report as report_lib

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
        if record.exists():
            saved = json.loads(record.read_text())
            self.results[name], self.timings[name] = saved["result"], saved["seconds"]
            self.cpu_timings[name] = saved.get("cpu_seconds", 0.0)
            self.skipped.append(name)
            self.log(f"==== {head}: finished earlier ({saved['seconds']:.1f} s), skipped")
            return self.results[name]
        if training and os.path.exists(os.path.join(self.checkpoint_dir(name), "DONE")):
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
            self._link_tensorboard(name)
        result = _jsonable(result if result is not None else {})
        record.write_text(json.dumps({"result": result, "seconds": seconds, "cpu_seconds": cpu_seconds},
                                     indent=1))
        self.results[name], self.timings[name], self.cpu_timings[name] = result, seconds, cpu_seconds
        return result

    def _link_tensorboard(self, stage):
        """W/tensorboard/<stage> -> the stage's own event files, so one `tensorboard --logdir` shows all."""
        target = pathlib.Path(self.checkpoint_dir(stage)) / "tensorboard"
        link = self.workdir / "tensorboard" / stage
        if target.is_dir() and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(target, link.parent), link)


def _jsonable(value):
    """Numbers from the stages as plain JSON (numpy scalars, tuples, int dict keys)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


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


# -- the video split ------------------------------------------------------------------------------
def resolve_split(experiment, data_dir, embedded, split_dir=None, log=print):
    """The experiment's Split, checked against the videos present in `data_dir`."""
    from deeplab_face.data import vw300
    available = set(vw300.list_videos(data_dir))
    if embedded:
        split = experiment.split
    else:
        if split_dir:   # §9: the paper's 300VW-Mask split_2 lists
            sets = {n: vw300.read_split(os.path.join(split_dir, f"{n}.txt")) for n in ("A", "B", "C")}
        else:           # documented fallback: the official 300VW split (eval.presets)
            sets = {n: [v for part in parts for v in vw300.OFFICIAL_SPLITS[part]]
                    for n, parts in presets.OFFICIAL_FALLBACK_SETS.items()}
        missing = sorted({v for ids in sets.values() for v in ids} - available)
        if missing:
            log(f"note: {len(missing)} split videos are not in {data_dir} and are left out: {' '.join(missing)}")
        sets = {n: [v for v in ids if v in available] for n, ids in sets.items()}
        if experiment.uses_embedded_data:
            # A small preset on real data: the first videos of each set, as many as the preset's roles use.
            sizes = {"A": len(experiment.split.segmenter_train), "B": len(experiment.split.scheduler_train),
                     "C": len(experiment.split.test)}
            sets = {n: ids[:sizes[n]] for n, ids in sets.items()}
        split = presets.paper_split(sets)
    split.check_disjoint()
    for role, ids in dataclasses.asdict(split).items():
        absent = [v for v in ids if v not in available]
        if absent:
            raise DataError(f"{data_dir}: split role {role} names videos that are not there: {' '.join(absent)}")
    return split


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
    import shutil

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
    os.makedirs(out_dir, exist_ok=True)
    shutil.copy(os.path.join(segmenter_dir, "config.json"), out_dir)
    model.save_weights(os.path.join(out_dir, "final.weights.h5"))
    pathlib.Path(out_dir, "DONE").touch()
    return {"batch_norm_layers": len(norms), "batches": batches, "batch_size": batch_size,
            "source": segmenter_dir}


# -- the stages -------------------------------------------------------------------------------------
def stage_list(p, split, segmenter_init=None, flownet_init=None):
    """[(name, description, fn, training)] in pipeline order."""
    e = p.experiment
    trained_seg_dir, flow_dir = p.checkpoint_dir("segmenter"), p.checkpoint_dir("flownet")
    seg_dir = p.checkpoint_dir("segmenter_bn") if e.recalibrate_bn else trained_seg_dir
    all_videos = sorted(set(split.segmenter_train + split.segmenter_val + split.scheduler_train
                            + split.scheduler_val + split.test))

    def data():
        from deeplab_face.make_synthetic import make_synthetic
        d = e.data
        return make_synthetic(p.data_dir, videos=d.synthetic_videos, frames=d.synthetic_frames,
                              size=d.synthetic_size, seed=d.seed, demo_clip=d.demo_clip,
                              long_videos=d.long_videos, long_frames=d.long_frames)

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
        return {"table1": rows}

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
                       f"{e.data.synthetic_frames} frames" + (" + the astronaut clip" if e.data.demo_clip else ""),
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
        "dataset": {
            "source": "embedded (deeplab_face.make_synthetic)" if p.external_data is None else p.data_dir,
            "train_videos": sorted(set(split.segmenter_train + split.segmenter_val
                                       + split.scheduler_train + split.scheduler_val)),
            "test_videos": list(split.test),
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


def _write_json(path, value):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(_jsonable(value), f, indent=1)
    os.replace(tmp, path)


def _check_workdir(workdir, identity, log=print):
    """A workdir holds one experiment: refuse to mix presets or data trees in it; warn when the preset's
    settings changed since it was started (finished stages keep the settings they ran with)."""
    path = pathlib.Path(workdir) / "config.json"
    if path.exists():
        before = json.loads(path.read_text())
        for key in ("config", "data_dir", "split_dir"):
            if before.get(key) != identity[key]:
                raise ConfigError(f"--workdir: {workdir} holds a run with --{key}={before.get(key)}; use a new "
                                  f"--workdir for --{key}={identity[key]}")
        changed = sorted(k for k in identity["preset"] if before["preset"].get(k) != identity["preset"][k])
        if changed:
            log(f"warning: preset settings changed since {workdir} was started ({', '.join(changed)}); "
                "finished stages keep their old settings (delete their stages/<name>.json to redo them)")
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(path, identity)


def reproduce(workdir, config="tiny", data_dir=None, split_dir=None, exclude=None, segmenter_init=None,
              flownet_init=None, stop_after=None, log=print):
    """Runs (or resumes) the whole pipeline in `workdir`; returns the results.json dict."""
    experiment = presets.get(config)
    if data_dir is None and not experiment.uses_embedded_data:
        raise ConfigError(f"--data_dir: --config={config} needs a real 300VW tree")
    if data_dir is not None and not os.path.isdir(data_dir):
        raise DataError(f"{data_dir}: --data_dir is not a directory")
    data_dir = os.path.abspath(data_dir) if data_dir else None
    _check_workdir(workdir, {"config": config, "data_dir": data_dir, "split_dir": split_dir,
                             "preset": _jsonable(experiment.to_dict())}, log=log)
    p = Pipeline(workdir, experiment, data_dir, split_dir, exclude, log=log)
    start = time.perf_counter()
    log(f"eval.reproduce: config {config}, workdir {os.path.abspath(workdir)}")

    split, finished = experiment.split, set()
    if data_dir is None:   # the embedded data must exist before its split can be checked
        stages = stage_list(p, split, segmenter_init, flownet_init)
        p.run_stage(1, len(stages) + 1, *stages[0])
        finished.add(stages[0][0])
    split = resolve_split(experiment, p.data_dir, data_dir is None, split_dir, log=log)
    stages = stage_list(p, split, segmenter_init, flownet_init)
    total = len(stages) + 1
    if stop_after is not None and stop_after not in [s[0] for s in stages]:
        raise ConfigError(f"--stop_after: no stage {stop_after!r} (stages: {' '.join(s[0] for s in stages)})")
    for index, (name, description, fn, training) in enumerate(stages, start=1):
        if name == "figures":   # the figures read results.json
            _write_json(p.workdir / "results.json", collect_results(p, split))
        if name not in finished:
            p.run_stage(index, total, name, description, fn, training)
        if name == stop_after:
            log(f"stopped after {name} (--stop_after); run the same command again to continue")
            return collect_results(p, split)

    log(f"==== [{total}/{total}] report")
    results = collect_results(p, split)
    _write_json(p.workdir / "results.json", results)
    report_path = report_lib.write_report(p.workdir, results)
    elapsed = time.perf_counter() - start
    if p.skipped:
        log(f"skipped {len(p.skipped)} finished stage(s): {' '.join(p.skipped)}")
    log(f"done in {elapsed:.1f} s. Report: {os.path.abspath(report_path)}")
    log(f"results: {os.path.abspath(p.workdir / 'results.json')}, figures: {os.path.abspath(p.workdir / 'figures')}")
    return results


def main(argv):
    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.workdir:
        raise ConfigError("--workdir: required (e.g. --workdir=runs/demo)")
    reproduce(FLAGS.workdir, FLAGS.config, FLAGS.data_dir, FLAGS.split_dir, FLAGS.exclude_file,
              FLAGS.segmenter_init, FLAGS.flownet_init, FLAGS.stop_after)


if __name__ == "__main__":
    cli.run(main)
