"""tf.distribute for the trainings (issue 11): one flag, one factory, one chief rule.

Every training command takes `--strategy=default|mirrored|multi_worker` (`define_strategy_flag`) and
builds its models, optimizer and checkpoint under `strategy.scope()`:
- `default`: TensorFlow's default strategy (one device; the trainings' behaviour before this module);
- `mirrored`: `tf.distribute.MirroredStrategy` over the local devices (GPUs, or the logical CPU devices
  the tests configure); the global batch is split across replicas, gradients are all-reduced;
- `multi_worker`: `tf.distribute.MultiWorkerMirroredStrategy`, the cluster read from `TF_CONFIG`
  (https://www.tensorflow.org/guide/distributed_training: {"cluster": {"worker": [...]}, "task":
  {"type": "worker", "index": i}}). Every worker runs the same command; only the chief writes
  checkpoints, TensorBoard and `DONE` (`is_chief`), the others write to a scratch folder of their own
  that is removed at the end, as TensorFlow's multi-worker guide does.
"""
import json
import os
import shutil

from deeplab_face.errors import ConfigError

STRATEGIES = ("default", "mirrored", "multi_worker")


def define_strategy_flag(flags_module=None):
    """`--strategy` on an absl command."""
    from absl import flags

    (flags_module or flags).DEFINE_enum(
        "strategy", "default", STRATEGIES,
        "tf.distribute strategy: default (one device), mirrored (every local GPU / logical device), "
        "multi_worker (the cluster in TF_CONFIG; run the same command on every worker).")


def make_strategy(name="default"):
    """The tf.distribute strategy called `name` (one of STRATEGIES)."""
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        # MirroredStrategy() alone takes the GPUs or else one CPU; without GPUs, take every logical
        # CPU device (the tests split the CPU in two, tf.config.set_logical_device_configuration).
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi_worker":
        raw = os.environ.get("TF_CONFIG")
        if not raw:
            raise ConfigError("--strategy=multi_worker: TF_CONFIG is not set (it names the cluster and this "
                              "worker's index; see WORKSPACE.md, 'Several machines')")
        try:
            json.loads(raw)
        except ValueError as e:
            raise ConfigError(f"--strategy=multi_worker: TF_CONFIG is not JSON ({e})") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"--strategy={name!r}: choose one of {', '.join(STRATEGIES)}")


def strategy_of(strategy):
    """A strategy given by name (STRATEGIES) or as a tf.distribute.Strategy: the strategy.
    (A command makes it first: multi_worker must be created before TensorFlow runs any op.)"""
    return make_strategy(strategy) if isinstance(strategy, str) else strategy


def strategy_name(strategy):
    """The STRATEGIES name of a strategy (for hparams.json)."""
    if _task_type(strategy) is not None:
        return "multi_worker"
    return "default" if type(strategy).__name__.startswith("_Default") else "mirrored"


def distribute_dataset(strategy, dataset):
    """`dataset` of global batches -> what `strategy.run` takes: each global batch split across the
    replicas (experimental_distribute_dataset). On one device the dataset itself (nothing to split).
    Workers shard by DATA: each reads the whole stream and keeps its replicas' share of every global
    batch, so the batches are the one-device run's (by FILE, a worker would read only some videos)."""
    import tensorflow as tf

    if strategy.num_replicas_in_sync == 1 and _task_type(strategy) is None:
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def _task_type(strategy):
    """"worker" / "chief" on a multi-worker cluster, None on one machine."""
    return getattr(getattr(strategy, "cluster_resolver", None), "task_type", None)


def is_chief(strategy):
    """Whether this process writes the stage's files: always, except on a multi-worker cluster, where
    the chief is task "chief" or, without one, worker 0 (TensorFlow's convention)."""
    task_type = _task_type(strategy)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    resolver = strategy.cluster_resolver
    cluster = resolver.cluster_spec().as_dict() if hasattr(resolver, "cluster_spec") else {}
    return task_type == "worker" and int(resolver.task_id or 0) == 0 and "chief" not in cluster


def write_dir(root_dir, strategy):
    """Where this process writes: `root_dir` on the chief, a private scratch folder elsewhere (the
    collective ops need every worker to save, but only the chief's files are kept)."""
    if is_chief(strategy):
        return root_dir
    resolver = strategy.cluster_resolver
    return os.path.join(root_dir, ".workers", f"{resolver.task_type}_{resolver.task_id}")



def resumable_checkpoint(root_dir, strategy, **trackables):
    """`stage.resumable_checkpoint` under a strategy; call it in `strategy.scope()`.

    The chief saves and restores `root_dir/ckpt`. A non-chief worker restores the chief's latest
    checkpoint too (the workdir must be shared, as TensorFlow's multi-worker guide assumes) and saves
    into its own scratch folder (`write_dir`): saving takes every worker, keeping takes one. A
    worker that restored another step than the chief (no shared workdir) is a ConfigError.
    """
    from deeplab_face import stage

    if is_chief(strategy):
        step, manager, restored = stage.resumable_checkpoint(root_dir, **trackables)
    else:
        scratch = write_dir(root_dir, strategy)
        shutil.rmtree(scratch, ignore_errors=True)   # a killed run's leftovers: only the chief's count
        step, manager, _ = stage.resumable_checkpoint(scratch, **trackables)
        chief = stage.checkpoint_manager(manager.checkpoint, os.path.join(root_dir, "ckpt"))
        restored = stage.restore_latest(manager.checkpoint, chief)
    if _task_type(strategy) is not None:
        _check_same_step(strategy, step, root_dir)
    return step, manager, restored


def _check_same_step(strategy, step, root_dir):
    """Every worker restored the chief's step: n * sum(s^2) == (sum s)^2 only if all s are equal
    (float64: exact for any step count), computed alike on every worker, so all of them stop."""
    import tensorflow as tf

    def moments():
        value = tf.cast(tf.identity(step), tf.float64)
        return value, value * value, tf.ones_like(value)

    total, squares, count = (float(strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None))
                             for v in strategy.run(moments))
    if count * squares != total * total:
        raise ConfigError(f"--strategy=multi_worker: the workers restored different steps from "
                          f"{os.path.join(root_dir, 'ckpt')} (this one: {int(step.numpy())}); every "
                          f"worker needs the same --workdir on a shared file system (WORKSPACE.md, "
                          f"'Several machines')")


def remove_scratch(root_dir, strategy):
    """A non-chief worker's end: its scratch folder (and `.workers` once empty) goes."""
    if is_chief(strategy):
        return
    scratch = write_dir(root_dir, strategy)
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        os.rmdir(os.path.dirname(scratch))
    except OSError:   # another worker's scratch is still there
        pass
