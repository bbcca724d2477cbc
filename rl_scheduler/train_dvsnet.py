"""Train DVSNet's decision network on face videos (paper §4.2 baseline (1); dvsnet.md):
`python -m rl_scheduler.train_dvsnet`.

As DVSNet trains it (train/train.py, gentestcase.py): X = FlowNet2-s `conv6_1` of a
(key, current) pair with 0 <= current - key <= max_gap, target = the confidence
score in percent, i.e. the share of pixels where the propagated prediction equals
N's own prediction on the current frame (no ground truth). MSE loss, Adam at
2e-3 decaying x0.99 per epoch, batch 32; the best epoch by validation mean
absolute error is kept. Pairs come from the shared per-video caches.

Writes `<root>/tensorboard`, `<root>/ckpt` (resumable per epoch), `best.weights.h5`,
and finally `config.json`, `final.weights.h5` (the best epoch), `DONE`.
"""
import json
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

from deeplab_face import cli  # noqa: E402
from deeplab_face.errors import ConfigError  # noqa: E402
from rl_scheduler import config  # noqa: E402
from rl_scheduler.cache import load_dff, load_video_caches  # noqa: E402
from rl_scheduler.dvsnet_decision import build_decision_network  # noqa: E402
import rl_scheduler.train as rl_scheduler_train  # noqa: E402
from rl_scheduler.train import (  # noqa: E402
    checked_stage_flags, define_stage_flags, scalar_summary, write_json)

VAL_MAX_GAP = 9  # imagesval_10_list: key 0-9 frames before the current frame


def sample_pairs(num_frames, max_gap, count, rng):
    """(k, i) pairs with 0 <= i - k <= max_gap; all of them, or `count` drawn without replacement."""
    pairs = [(i - g, i) for i in range(num_frames) for g in range(max_gap + 1) if i - g >= 0]
    if count is not None and count < len(pairs):
        pairs = [pairs[j] for j in sorted(rng.choice(len(pairs), count, replace=False))]
    return pairs


def pair_dataset(caches, max_gap, pairs_per_video, rng, deviation_tap="conv6_1"):
    """(X (n, h, w, c) float32, y (n,) float32 percent) from the caches (computed once, batched)."""
    xs, ys = [], []
    for cache in caches:
        pairs = sample_pairs(cache.num_frames, max_gap, pairs_per_video, rng)
        cache.prefetch_pairs(pairs)
        for k, i in pairs:
            entry = cache.pair(k, i)
            xs.append(getattr(entry, deviation_tap)[0])
            ys.append(100.0 * entry.agreement)   # DVSNet's target is in percent
    return np.stack(xs).astype(np.float32), np.asarray(ys, np.float32)


def train_decision_network(root_dir, train_data, val_data, epochs=config.DVSNET_EPOCHS,
                           batch_size=config.DVSNET_BATCH_SIZE, learning_rate=config.DVSNET_LEARNING_RATE,
                           lr_decay=config.DVSNET_LR_DECAY, seed=0, deviation_size=None,
                           deviation_tap="conv6_1", verbose=1, extra_config=None):
    """MSE regression of the confidence score; keeps the best epoch by validation MAE."""
    x_train, y_train = train_data
    x_val, y_val = val_data
    if len(x_train) == 0 or len(x_val) == 0:
        raise ConfigError("--train_videos/--val_videos: no decision-network pairs to train or validate on")
    keras.utils.set_random_seed(seed)
    os.makedirs(root_dir, exist_ok=True)
    build_args = dict(deviation_shape=list(x_train.shape[1:]),
                      deviation_size=list(deviation_size) if deviation_size else None)
    model = build_decision_network(**build_args)
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    schedule = keras.optimizers.schedules.ExponentialDecay(
        learning_rate, decay_steps=steps_per_epoch, decay_rate=lr_decay, staircase=True)  # x0.99 per epoch
    optimizer = keras.optimizers.Adam(schedule)
    optimizer.build(model.trainable_variables)
    epoch = tf.Variable(0, dtype=tf.int64)
    best_mae = tf.Variable(np.inf, dtype=tf.float64)
    ckpt = tf.train.Checkpoint(step=epoch, model=model, optimizer=optimizer, best_mae=best_mae)
    manager = tf.train.CheckpointManager(ckpt, os.path.join(root_dir, "ckpt"), max_to_keep=2)
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).expect_partial()

    @tf.function(reduce_retracing=True)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True)[:, 0] - y))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function(reduce_retracing=True)
    def predict(x):
        return model(x, training=False)[:, 0]

    best_path = os.path.join(root_dir, "best.weights.h5")
    writer = tf.summary.create_file_writer(os.path.join(root_dir, "tensorboard"))
    bar = keras.utils.Progbar(epochs, verbose=verbose, stateful_metrics=["loss", "val_mae"])
    bar.update(int(epoch.numpy()))
    while int(epoch.numpy()) < epochs:
        current = int(epoch.numpy())
        order = np.random.default_rng([seed, current]).permutation(len(x_train))
        losses = [float(train_step(x_train[b], y_train[b]))
                  for b in (order[s:s + batch_size] for s in range(0, len(order), batch_size))]
        predicted = np.concatenate([predict(x_val[s:s + 256]).numpy() for s in range(0, len(x_val), 256)])
        val_mae = float(np.mean(np.abs(predicted - y_val)))
        if val_mae < float(best_mae.numpy()):
            best_mae.assign(val_mae)
            model.save_weights(best_path)
        with writer.as_default():
            scalar_summary("loss", np.mean(losses), current + 1)
            scalar_summary("val_mae", val_mae, current + 1)
        epoch.assign_add(1)
        manager.save(checkpoint_number=current + 1)
        bar.update(current + 1, [("loss", np.mean(losses)), ("val_mae", val_mae)])
    writer.flush()
    if os.path.exists(best_path):
        model.load_weights(best_path)
    model.save_weights(os.path.join(root_dir, "final.weights.h5"))
    write_json(os.path.join(root_dir, "config.json"),
                dict(build_args, deviation_tap=deviation_tap,
                     training=dict(extra_config or {}, epochs=epochs, batch_size=batch_size,
                                   learning_rate=learning_rate, lr_decay=lr_decay, seed=seed)))
    with open(os.path.join(root_dir, "DONE"), "w") as f:
        f.write("done\n")
    return dict(best_val_mae=float(best_mae.numpy()), train_pairs=int(len(x_train)),
                val_pairs=int(len(x_val)),
                target_mean=float(np.mean(y_train)))


def train_eval(root_dir, prepared_dir, segmenter_dir, flownet_dir, train_videos, val_videos,
               max_gap=config.DVSNET_MAX_GAP, epochs=config.DVSNET_EPOCHS,
               batch_size=config.DVSNET_BATCH_SIZE,
               learning_rate=config.DVSNET_LEARNING_RATE, seed=0, pairs_per_video=1000,
               val_pairs_per_video=500, deviation_size=None, flow_resolution="full", cache_batch_size=8,
               max_frames_in_memory=config.MAX_FRAMES_IN_MEMORY, verbose=1):
    """The stage function (docs/interfaces.md). Without val_videos, 10% of the training pairs validate."""
    if not train_videos:
        raise ConfigError("--train_videos: at least one video is needed")
    rng = np.random.default_rng(seed)
    dff = load_dff(segmenter_dir, flownet_dir, flow_resolution=flow_resolution)
    options = dict(batch_size=cache_batch_size, keep_masks=False, keep_taps=("conv6_1",),
                   max_frames_in_memory=max_frames_in_memory)   # lazy frames; None: all in memory
    train_caches = load_video_caches(dff, prepared_dir, [str(v) for v in train_videos], **options)
    train_data = pair_dataset(train_caches, max_gap, pairs_per_video, rng)
    if val_videos:
        val_caches = load_video_caches(dff, prepared_dir, [str(v) for v in val_videos], **options)
        val_data = pair_dataset(val_caches, min(VAL_MAX_GAP, max_gap), val_pairs_per_video, rng)
    else:
        order = rng.permutation(len(train_data[0]))
        held = max(1, len(order) // 10)
        val_data = tuple(a[order[:held]] for a in train_data)
        train_data = tuple(a[order[held:]] for a in train_data)
    extra = dict(prepared_dir=prepared_dir, segmenter_dir=segmenter_dir, flownet_dir=flownet_dir,
                 train_videos=list(map(str, train_videos)), val_videos=list(map(str, val_videos or ())),
                 max_gap=max_gap, pairs_per_video=pairs_per_video, flow_resolution=flow_resolution)
    return train_decision_network(root_dir, train_data, val_data, epochs=epochs, batch_size=batch_size,
                                  learning_rate=learning_rate, seed=seed, deviation_size=deviation_size,
                                  verbose=verbose, extra_config=extra)


FLAGS = flags.FLAGS


def define_flags():
    """Flags of the command (defined on demand, so that other modules can import this one)."""
    define_stage_flags("Output directory of this stage.", "Training video ids.",
                       "Validation video ids (empty: 10% of the training pairs).")
    flags.adopt_module_key_flags(rl_scheduler_train)  # listed by this command's --help
    flags.DEFINE_integer("max_gap", config.DVSNET_MAX_GAP,
                         "Largest current - key distance of a training pair.")
    flags.DEFINE_integer("epochs", config.DVSNET_EPOCHS, "Training epochs.")
    flags.DEFINE_integer("batch_size", config.DVSNET_BATCH_SIZE, "Batch size.")
    flags.DEFINE_float("learning_rate", config.DVSNET_LEARNING_RATE, "Adam learning rate (x0.99 per epoch).")
    flags.DEFINE_integer("seed", 0, "Random seed.")
    flags.DEFINE_integer("pairs_per_video", 1000, "Training pairs drawn per video (0: all).")
    flags.DEFINE_integer("val_pairs_per_video", 500, "Validation pairs drawn per video (0: all).")
    flags.DEFINE_list("deviation_size", [],
                      "Resize conv6_1 to h,w first (DVSNet regions: 4,8; empty: native).")


def main(argv):
    del argv
    size = checked_stage_flags()
    result = train_eval(
        FLAGS.root_dir, FLAGS.prepared_dir, FLAGS.segmenter_dir, FLAGS.flownet_dir, FLAGS.train_videos,
        FLAGS.val_videos, max_gap=FLAGS.max_gap, epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
        learning_rate=FLAGS.learning_rate, seed=FLAGS.seed, pairs_per_video=FLAGS.pairs_per_video or None,
        val_pairs_per_video=FLAGS.val_pairs_per_video or None, deviation_size=size,
        flow_resolution=FLAGS.flow_resolution, cache_batch_size=FLAGS.cache_batch_size,
        max_frames_in_memory=FLAGS.max_frames_in_memory or None)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
