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
        return tf.distribute.MirroredStrategy()
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


def is_chief(strategy):
    """Whether this process writes the stage's files: always, except on a multi-worker cluster, where
    the chief is task "chief" or, without one, worker 0 (TensorFlow's convention)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    cluster = resolver.cluster_spec().as_dict() if hasattr(resolver, "cluster_spec") else {}
    return task_type == "worker" and int(resolver.task_id or 0) == 0 and "chief" not in cluster


def write_dir(root_dir, strategy):
    """Where this process writes: `root_dir` on the chief, a private scratch folder elsewhere (the
    collective ops need every worker to save, but only the chief's files are kept)."""
    if is_chief(strategy):
        return root_dir
    resolver = strategy.cluster_resolver
    return os.path.join(root_dir, ".workers", f"{resolver.task_type}_{resolver.task_id}")
