"""A finished training stage on disk: `config.json` + `final.weights.h5` + `DONE`.

Every training command (segmenter, flow net, policy, DVSNet decision net) ends
with `finish_stage`, and every loader starts with `read_stage_config` and ends
with `load_stage_weights`, so the layout and its error messages are defined once
(docs/interfaces.md, "Stage outputs").
"""
import json
import os

from deeplab_face.errors import CheckpointError

CONFIG = "config.json"
WEIGHTS = "final.weights.h5"
DONE = "DONE"


def is_done(stage_dir):
    return os.path.exists(os.path.join(stage_dir, DONE))


def read_stage_config(stage_dir, what="stage"):
    """The stage's config.json as a dict; CheckpointError if the stage is incomplete."""
    config_path = os.path.join(stage_dir, CONFIG)
    for path in (config_path, os.path.join(stage_dir, WEIGHTS)):
        if not os.path.exists(path):
            raise CheckpointError(f"{path}: not found ({what} not trained yet?)")
    try:
        with open(config_path) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{config_path}: unreadable JSON ({e})") from None
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


def finish_stage(root_dir, model, config, done_text="finished\n"):
    """Write config.json and final.weights.h5, then DONE last (a crash leaves no DONE)."""
    os.makedirs(root_dir, exist_ok=True)
    with open(os.path.join(root_dir, CONFIG), "w") as f:
        json.dump(config, f, indent=2)
    model.save_weights(os.path.join(root_dir, WEIGHTS))
    with open(os.path.join(root_dir, DONE), "w") as f:
        f.write(done_text)


def clear_done(root_dir):
    """Training past a finished stage: it is unfinished again until finish_stage."""
    path = os.path.join(root_dir, DONE)
    if os.path.exists(path):
        os.remove(path)


def resumable_checkpoint(root_dir, **trackables):
    """(step variable, CheckpointManager, restored) for a training in `root_dir/ckpt`.

    The step counter lives in the checkpoint, so a run killed at any point (kill -9
    included) restarts from the last saved step. Restores the latest checkpoint if any.
    """
    import tensorflow as tf  # only trainings need it; loaders above stay TensorFlow-free

    os.makedirs(root_dir, exist_ok=True)
    step = tf.Variable(0, dtype=tf.int64, name="step")
    ckpt = tf.train.Checkpoint(step=step, **trackables)
    manager = tf.train.CheckpointManager(ckpt, os.path.join(root_dir, "ckpt"), max_to_keep=2)
    restored = bool(manager.latest_checkpoint)
    if restored:
        ckpt.restore(manager.latest_checkpoint).expect_partial()
    return step, manager, restored
