"""Reading TF1 (Saver) checkpoints: the one reader of every TF1 import in the project.

The model-zoo / TF-slim import (checkpoint.py), DVSNet's segmentation net (dvsnet_checkpoint.py),
its FlowNets (flownet2s.checkpoint) and its decision network (rl_scheduler.dvsnet_import) each
map checkpoint names to their Keras variables their own way; the reading is here:

- `read_tf1_checkpoint`: resolve a prefix, file or directory, list the variables and drop what
  training saved beside the weights (global_step, optimiser slots, a learning-rate variable);
- `mismatches`: missing, unexpected and mis-shaped names between a name map and the checkpoint;
- `assign_exact`: check, read every value, then assign, all or nothing.

Every error is one CheckpointError line starting with the path (or the prefix read) and naming
the variables at fault: counts and the first few names of each kind.

This module imports TensorFlow on use (model modules do not).
"""
import os
import re

from deeplab_face.errors import CheckpointError

# Path components of what a TF1 training run saves beside the model's variables: the step, Adam's
# power accumulators, a learning-rate variable, optimiser and moving-average slots.
TRAINING_VARIABLE_PARTS = frozenset((
    "global_step", "beta1_power", "beta2_power", "learning_rate", "Momentum", "Adam", "Adam_1",
    "RMSProp", "RMSProp_1", "ExponentialMovingAverage", "Adagrad"))
_SHOW = 4  # names listed per category in an error line
_TF2_OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"  # present in tf.train.Checkpoint files only
_SHARD_SUFFIX = re.compile(r"\.(index|data-\d{5}-of-\d{5})$")


def leaf_layers(model):
    """Every non-model layer of `model`, nested models walked (what the name maps go through)."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


def is_training_variable(name):
    """True for a variable that training saved beside the weights (never a model weight)."""
    return any(part in TRAINING_VARIABLE_PARTS for part in name.split("/"))


def _resolve(path):
    """A checkpoint prefix from a prefix, a file of one (`.index`, `.data-*`), a TF1 V1 file
    (slim's 2016 ImageNet `vgg_16.ckpt`, say), or a directory holding exactly one of these."""
    import tensorflow as tf
    gfile = tf.io.gfile
    if gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest:
            return latest
        prefixes = [p[: -len(".index")] for p in gfile.glob(os.path.join(path, "*.index"))]
        prefixes = prefixes or gfile.glob(os.path.join(path, "*.ckpt"))  # V1 single files
        if len(prefixes) != 1:
            found = ", ".join(os.path.basename(p) for p in sorted(prefixes)[:_SHOW]) or "none"
            raise CheckpointError(f"{path}: expected one TF1 checkpoint in this directory "
                                  f"(*.index or *.ckpt), found {len(prefixes)} ({found})")
        return prefixes[0]
    suffix = _SHARD_SUFFIX.search(path)
    if suffix and gfile.exists(path[: suffix.start()] + ".index"):
        return path[: suffix.start()]  # the user named one of the checkpoint's files
    v1_shards = gfile.glob(path + "-?????-of-?????")
    if not (gfile.exists(path) or gfile.exists(path + ".index") or v1_shards):
        raise CheckpointError(f"{path}: not a readable TF1 checkpoint (no such file, directory "
                              "or checkpoint prefix)")
    return path


def _reason(error, path):
    """TF's first message line without the path it repeats (the caller's message names it)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text.replace(f"Unable to open table file {path}: ", "").split(": perhaps")[0]


def read_tf1_checkpoint(path):
    """(prefix, {name: shape}, reader) of a TF1 checkpoint, without what training saved beside
    the weights (`is_training_variable`).

    Raises CheckpointError (one line naming `path`) for a path that does not exist, a file that
    is not a TF1 checkpoint, or a TF2 object-based checkpoint (a training `ckpt/` directory).
    """
    import tensorflow as tf
    prefix = _resolve(path)
    try:
        reader = tf.train.load_checkpoint(prefix)
    except Exception as e:  # DataLossError (not a checkpoint), NotFoundError, ValueError ...
        reason = _reason(e, prefix)
        if prefix.endswith((".h5", ".keras")):
            reason += "; a Keras weights file: load a finished stage with load_segmenter"
        raise CheckpointError(f"{path}: not a readable TF1 checkpoint ({reason})") from None
    names = reader.get_variable_to_shape_map()
    if _TF2_OBJECT_GRAPH in names:
        raise CheckpointError(f"{prefix}: a TF2 object-based checkpoint (tf.train.Checkpoint, "
                              "e.g. a stage's ckpt/), not a TF1 Saver checkpoint")
    return prefix, {n: tuple(s) for n, s in names.items() if not is_training_variable(n)}, reader


def _summary(label, names):
    names = sorted(names)
    if not names:
        return None
    shown = ", ".join(names[:_SHOW]) + (", ..." if len(names) > _SHOW else "")
    return f"{len(names)} {label} ({shown})"


def read_values(prefix, reader, names):
    """{name: array}, read before anything is assigned so that a failure loads nothing."""
    values = {}
    for name in names:
        try:
            values[name] = reader.get_tensor(name)
        except Exception as e:  # DataLossError / NotFoundError: a truncated or missing data file
            raise CheckpointError(f"{prefix}: cannot read {name} ({_reason(e, prefix)})") from None
    return values


def mismatches(variables, available):
    """(one-line problem summaries, missing names, mis-shaped descriptions) between the model's
    {name: variable} and the checkpoint's {name: shape}."""
    missing = set(variables) - set(available)
    unexpected = set(available) - set(variables)
    misshaped = [f"{n} {list(available[n])}!={list(variables[n].shape)}"
                 for n in sorted(set(variables) & set(available))
                 if tuple(available[n]) != tuple(variables[n].shape)]
    problems = [p for p in (_summary("missing", missing), _summary("unexpected", unexpected),
                            _summary("mis-shaped", misshaped)) if p]
    return problems, missing, misshaped


def assign_exact(prefix, shapes, reader, variables, available, what):
    """Assign `variables` ({checkpoint name: Keras variable}) from a TF1 checkpoint whose usable names
    are `available` ({name: shape}), all or nothing: any missing, unexpected or mis-shaped name
    raises one CheckpointError line naming the checkpoint and `what` it was meant for."""
    problems, _, _ = mismatches(variables, available)
    if problems:
        raise CheckpointError(f"{prefix}: does not match {what}: " + "; ".join(problems))
    values = read_values(prefix, reader, sorted(variables))
    for name, variable in variables.items():
        variable.assign(values[name])
    return dict(loaded=len(variables), skipped=len(shapes) - len(available), checkpoint=prefix)
