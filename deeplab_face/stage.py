"""A finished training stage on disk: `config.json` + `final.weights.h5` + `DONE`.

Every training command (segmenter, flow net, policy, DVSNet decision net) ends
with `finish_stage` (or writes its files through `deeplab_face.atomic` with `write_done` last),
and every loader starts with `read_stage_config` and ends with `load_stage_weights`, so the layout
and its error messages are defined once (docs/interfaces.md, "Stage outputs").

Also here: the resumable checkpoint every training uses (`resumable_checkpoint`,
`checkpoint_manager`), the workdir lock (`workdir_lock`) and the kill hook of the resume tests
(`kill_point`).
"""
import fnmatch
import logging
import os
import re
import signal
import socket

from deeplab_face import atomic
from deeplab_face.errors import CheckpointError, ConfigError, DataError, OutputError

CONFIG = "config.json"
WEIGHTS = "final.weights.h5"
DONE = "DONE"
LOCK = ".lock"
KILL_ENV = "DFVS_KILL_AT"   # resume tests: kill -9 this process at the named point (see kill_point)


def is_done(stage_dir):
    """DONE is there and so is everything it vouches for (config.json, final.weights.h5)."""
    return all(os.path.exists(os.path.join(stage_dir, name)) for name in (DONE, CONFIG, WEIGHTS))


def check_done(stage_dir, log=print):
    """True if the stage is done. A DONE whose config.json or final.weights.h5 is missing (a hand
    copy, a disk error) is removed with a warning, so the stage runs again (resuming its ckpt/)."""
    if not os.path.exists(os.path.join(stage_dir, DONE)):
        return False
    missing = [name for name in (CONFIG, WEIGHTS) if not os.path.exists(os.path.join(stage_dir, name))]
    if not missing:
        return True
    log(f"warning: {stage_dir}/DONE without {' and '.join(missing)}: the stage is not done and runs again")
    clear_done(stage_dir)
    return False


def read_stage_config(stage_dir, what="stage"):
    """The stage's config.json as a dict; CheckpointError if the stage is incomplete."""
    config_path = os.path.join(stage_dir, CONFIG)
    for path in (config_path, os.path.join(stage_dir, WEIGHTS)):
        if not os.path.exists(path):
            raise CheckpointError(f"{path}: not found ({what} not trained yet?)")
    try:
        config = atomic.read_json(config_path, missing_ok=False,
                                  advice=f"delete {os.path.join(stage_dir, DONE)} and run the stage again")
    except DataError as e:
        raise CheckpointError(str(e)) from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object")
    return config


def load_stage_weights(model, stage_dir):
    """`model.load_weights(final.weights.h5)` with a one-line CheckpointError on mismatch."""
    weights_path = os.path.join(stage_dir, WEIGHTS)
    try:
        model.load_weights(weights_path)
    except (ValueError, OSError, KeyError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{weights_path}: does not fit {os.path.join(stage_dir, CONFIG)} "
                              f"({first})") from None
    return model


def write_done(root_dir, text="finished\n"):
    """DONE, atomically; call it after every other file of the stage is in place."""
    kill_point(f"{os.path.basename(os.path.normpath(root_dir))}/before-DONE")
    atomic.write_text(os.path.join(root_dir, DONE), text)


def finish_stage(root_dir, model, config, done_text="finished\n"):
    """Write config.json and final.weights.h5, then DONE last (a crash leaves no DONE)."""
    atomic.check_output_dir(root_dir)
    atomic.write_json(os.path.join(root_dir, CONFIG), config, indent=2)
    atomic.save_weights(model, os.path.join(root_dir, WEIGHTS))
    write_done(root_dir, done_text)


def clear_done(root_dir):
    """Training past a finished stage: it is unfinished again until finish_stage."""
    path = os.path.join(root_dir, DONE)
    if os.path.exists(path):
        os.remove(path)


def kill_point(name):
    """The resume tests' fault injection: when $DFVS_KILL_AT matches `name` (a glob, e.g.
    `segmenter/ckpt-2`), this process kills itself with SIGKILL, as `kill -9` would."""
    target = os.environ.get(KILL_ENV)
    if target and fnmatch.fnmatchcase(name, target):
        logging.getLogger(__name__).warning("%s=%s: kill -9 at %s", KILL_ENV, target, name)
        os.kill(os.getpid(), signal.SIGKILL)


def checkpoint_manager(checkpoint, directory, max_to_keep=2):
    """A tf.train.CheckpointManager whose saves name their folder when the disk refuses them and
    pass the kill hook (`<stage>/ckpt-<n>`) once written."""
    import tensorflow as tf

    class Manager(tf.train.CheckpointManager):
        def save(self, checkpoint_number=None, **kwargs):
            try:
                path = super().save(checkpoint_number=checkpoint_number, **kwargs)
            except (tf.errors.ResourceExhaustedError, tf.errors.PermissionDeniedError, OSError) as e:
                reason = (getattr(e, "message", None) or str(e)).splitlines()[0]
                raise OutputError(f"{self.directory}: cannot save a checkpoint ({reason}); free some space "
                                  "or fix the folder and run the same command again: it resumes from the "
                                  "last saved checkpoint") from None
            stage = os.path.basename(os.path.dirname(os.path.normpath(self.directory)))
            kill_point(f"{stage}/{os.path.basename(path)}")
            return path

    return Manager(checkpoint, directory, max_to_keep=max_to_keep)


def restore_latest(checkpoint, manager):
    """Restores the manager's latest checkpoint (True) or does nothing (False, none saved yet). An
    unreadable checkpoint is a CheckpointError naming it and what to delete."""
    import tensorflow as tf

    latest = manager.latest_checkpoint
    if not latest:   # no state file, or an unreadable one beside saved checkpoints: take the newest
        numbers = sorted(int(m.group(1)) for m in (re.fullmatch(r"ckpt-(\d+)\.index", name)
                                                  for name in os.listdir(manager.directory)) if m) \
            if os.path.isdir(manager.directory) else []
        if not numbers:
            return False
        latest = os.path.join(manager.directory, f"ckpt-{numbers[-1]}")
        print(f"warning: {os.path.join(manager.directory, 'checkpoint')}: missing or unreadable; resuming "
              f"from {latest}", flush=True)
    try:
        checkpoint.restore(latest).expect_partial()
    except (tf.errors.OpError, ValueError, IndexError, OSError) as e:
        reason = (getattr(e, "message", None) or str(e) or type(e).__name__).splitlines()[0]
        folder = os.path.dirname(latest)
        raise CheckpointError(f"{latest}: unreadable, or does not fit the model ({reason}); delete {latest}.* and the "
                              f"'checkpoint' file in {folder} to resume from an older one, or the whole "
                              f"{folder} to restart this stage") from None
    return True


def seed_states(*models):
    """The tf.Variables holding the state of the models' Keras seed generators (dropout and other
    random layers). tf.train.Checkpoint does not track them through the model, so a training saves
    them beside it (`seed_states=...`): a resumed run then draws the same dropout masks."""
    states = []
    for model in models:
        for layer in model._flatten_layers(include_self=True, recursive=True):
            for generator in getattr(layer, "_seed_generators", []):
                state = generator.state
                states.append(getattr(state, "value", state))
    return states


def resumable_checkpoint(root_dir, **trackables):
    """(step variable, CheckpointManager, restored) for a training in `root_dir/ckpt`.

    The step counter lives in the checkpoint, so a run killed at any point (kill -9
    included) restarts from the last saved step; so do the models' seed generators (dropout).
    Restores the latest checkpoint if any.
    """
    import tensorflow as tf  # only trainings need it; loaders above stay TensorFlow-free

    atomic.check_output_dir(root_dir)
    step = tf.Variable(0, dtype=tf.int64, name="step")
    models = [t for t in trackables.values() if hasattr(t, "_flatten_layers")]
    randomness = {"seed_states": seed_states(*models)} if seed_states(*models) else {}
    ckpt = tf.train.Checkpoint(step=step, **trackables, **randomness)
    manager = checkpoint_manager(ckpt, os.path.join(root_dir, "ckpt"))
    restored = restore_latest(ckpt, manager)
    return step, manager, restored


class WorkdirLock:
    """An exclusive lock on a work folder for the life of this process: `<folder>/.lock` holds the
    holder's pid and host and is locked with flock, which the kernel drops when the holder dies
    (so a stale lock, from a killed run, is noticed and taken over)."""

    def __init__(self, folder, flag="--workdir"):
        self.folder, self.flag = os.fspath(folder), flag
        self.path = os.path.join(self.folder, LOCK)
        self._file = None

    def acquire(self, log=print):
        import fcntl

        atomic.check_output_dir(self.folder, self.flag)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ConfigError(f"{self.flag}: {self.folder} is in use by {holder}; wait for it to finish "
                              f"(or stop it), or use another {self.flag}") from None
        handle.seek(0)
        stale = handle.read().strip()
        if stale:
            log(f"note: {self.path}: lock of {stale} is stale (that process is gone); taking it over")
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._file = handle
        return self

    def release(self):
        if self._file is not None:
            import fcntl

            self._file.seek(0)
            self._file.truncate()
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def workdir_lock(folder, flag="--workdir", log=print):
    """Takes (and returns) the WorkdirLock of `folder`; released at `release()` or process exit."""
    return WorkdirLock(folder, flag).acquire(log=log)
