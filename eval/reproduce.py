"""The main job: the whole paper pipeline in one command (DESIGN.md "Commands").

    python -m eval.reproduce --workdir=W [--config=tiny|smoke|paper] [--data_dir=D]

Stages, in order (eval.stages): data -> prepare -> segmenter (N) -> table1 (N's scale sets) ->
flownet_pretrain (F learns motion from generated pairs with known flow) -> flownet (F fine-tuned as §4.2) ->
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
from eval.stages import stage_list

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Work directory: data/, prepared/, checkpoints/, figures/, report.md, "
                    "results.json (WORKSPACE.md). Re-using it resumes the run.")
flags.DEFINE_enum("config", "tiny", sorted(presets.PRESETS), "Experiment preset (eval/presets.py): tiny = "
                  "embedded data, ~30 min on a 2-core CPU (README, Results); smoke = CI check; paper = the "
                  "paper's settings.")
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
