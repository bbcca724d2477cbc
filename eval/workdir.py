"""The workdir of `eval.reproduce` (WORKSPACE.md): its identity, its lock, its stage records.

- Identity (`W/config.json`): a workdir holds one experiment (preset, data tree, split lists). A run
  whose identity differs is refused, unless no stage of the earlier run ever finished: then nothing
  in the workdir depends on the old identity, so the corrected command simply takes it over (a run
  that failed at the start, e.g. on a wrong --data_dir, never locks its workdir).
- Lock (`W/.lock`, `deeplab_face.stage.WorkdirLock`): one run at a time; a second run is refused
  with the holder's pid; the lock of a killed run is stale and taken over.
- Stage records (`W/stages/<name>.json`): written atomically after the stage's own files; one that
  cannot be read is a half-done stage, which runs again with a warning.
- Readers of a finished workdir (eval.causal_split, eval.oracle_state): `require_finished` and
  `parse_target_akis`, their one error line each.
"""
import os
import pathlib
import shutil

from deeplab_face import atomic
from deeplab_face.errors import ConfigError, DataError

IDENTITY_KEYS = ("config", "data_dir", "split_dir")


def finished_stages(workdir):
    """Names of the stages with a record in `workdir/stages`."""
    folder = pathlib.Path(workdir) / "stages"
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def require_finished(workdir, stages=("segmenter", "flownet")):
    """W/checkpoints, or a ConfigError naming the first of `stages` that has not finished there."""
    checkpoints = os.path.join(workdir, "checkpoints")
    for stage in stages:
        if not os.path.exists(os.path.join(checkpoints, stage, "DONE")):
            raise ConfigError(f"--workdir: {os.path.join(checkpoints, stage)} is not a finished stage; run "
                              f"`python -m eval.reproduce --workdir={workdir}` first")
    return checkpoints


def finished_rl_stage(checkpoints):
    """(stage dir, its config.json) of the workdir's finished RL stage (the lowest KAR limit when there are
    several), or a ConfigError."""
    import glob

    found = sorted(d for d in glob.glob(os.path.join(checkpoints, "rl_eta*"))
                   if os.path.exists(os.path.join(d, "DONE")))
    if not found:
        raise ConfigError(f"--workdir: no finished RL stage (rl_eta*/DONE) in {checkpoints}")
    return found[0], atomic.read_json(os.path.join(found[0], "config.json"))


def load_finished_run(workdir, videos=None):
    """(checkpoints, dff, test caches with N on every frame, their video ids) of a finished workdir;
    `videos` defaults to results.json's test videos."""
    from eval.sweeps import stage_option
    from flownet2s.dff import load_dff
    from rl_scheduler.cache import load_video_caches

    checkpoints = require_finished(workdir)
    if not videos:
        videos = ((atomic.read_json(os.path.join(workdir, "results.json"), default={}).get("dataset") or {})
                  .get("test_videos"))
        if not videos:
            raise ConfigError(f"--workdir: {workdir}/results.json names no test videos (causal_split: give --videos)")
    flow_dir = os.path.join(checkpoints, "flownet")
    dff = load_dff(os.path.join(checkpoints, "segmenter"), flow_dir,
                   flow_resolution=stage_option(flow_dir, "flow_resolution", "full"))
    videos = [str(v) for v in videos]
    caches = load_video_caches(dff, os.path.join(workdir, "prepared"), videos, int(dff.segmenter.output_shape[-1]),
                               keep_masks=False)
    for cache in caches:
        cache.prefetch_keys(range(cache.num_frames))
    return checkpoints, dff, caches, videos


def parse_target_akis(values):
    """--target_akis (strings) as floats, or a ConfigError naming the flag."""
    try:
        return [float(t) for t in values]
    except ValueError:
        raise ConfigError(f"--target_akis: {','.join(map(str, values))} is not a list of numbers") from None


def check_identity(workdir, identity, log=print):
    """Refuses to mix presets, data trees or split lists in one workdir once a stage has finished;
    warns when the preset's settings changed since (finished stages keep the settings they ran
    with); then records `identity` as W/config.json."""
    path = pathlib.Path(workdir) / "config.json"
    try:
        before = atomic.read_json(path, None)
    except DataError as e:
        log(f"warning: {e}; it is written again")
        before = None
    if isinstance(before, dict):
        done = finished_stages(workdir)
        differs = [key for key in IDENTITY_KEYS if before.get(key) != identity[key]]
        if differs and not done:
            log(f"note: {workdir} was started with " + ", ".join(f"--{k}={before.get(k)}" for k in differs)
                + " but no stage of that run finished; it now holds this run")
            partial = pathlib.Path(workdir) / "prepared"
            if partial.is_dir():   # half-prepared crops of the other data: prepare would skip them
                shutil.rmtree(partial)
                log(f"note: removed {partial} (partly prepared by that run, from its data)")
        elif differs:
            key = differs[0]
            raise ConfigError(f"--workdir: {workdir} holds a run with --{key}={before.get(key)} (finished stages: "
                              f"{' '.join(done)}); use a new --workdir for --{key}={identity[key]}")
        else:
            preset = before.get("preset") or {}
            changed = sorted(k for k in identity["preset"] if preset.get(k) != identity["preset"][k])
            if changed:
                log(f"warning: preset settings changed since {workdir} was started ({', '.join(changed)}); "
                    "finished stages keep their old settings (delete their stages/<name>.json to redo them)")
    atomic.write_json(path, identity)


def read_stage_record(path, log=print):
    """The record {"result", "seconds", ...} of a finished stage, or None when there is none or it is
    unreadable (warned: the stage then runs again)."""
    try:
        record = atomic.read_json(path, None)
    except DataError as e:
        log(f"warning: {e}; the stage is not done and runs again")
        return None
    if record is not None and not (isinstance(record, dict) and "result" in record and "seconds" in record):
        log(f"warning: {path}: not a stage record; the stage is not done and runs again")
        return None
    return record


def write_stage_record(path, result, seconds, cpu_seconds):
    atomic.write_json(path, {"result": result, "seconds": seconds, "cpu_seconds": cpu_seconds})


def link_tensorboard(workdir, stage, stage_dir):
    """W/tensorboard/<stage> -> the stage's own event files, so one `tensorboard --logdir` shows all."""
    target = pathlib.Path(stage_dir) / "tensorboard"
    link = pathlib.Path(workdir) / "tensorboard" / stage
    if target.is_dir() and not os.path.lexists(link):
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(target, link.parent), link)
