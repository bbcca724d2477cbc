"""Train DVSNet's decision network on face videos (paper §4.2 baseline (1); dvsnet.md):
`python -m rl_scheduler.train_dvsnet`.

As DVSNet trains it (train/train.py, gentestcase.py): X = FlowNet2-s `conv6_1` of a
(key, current) pair with 0 <= current - key <= max_gap, target = the confidence
score in percent, i.e. the share of pixels where the propagated prediction equals
N's own prediction on the current frame (no ground truth). MSE loss, Adam at
2e-3 decaying x0.99 per epoch, batch 32; the best epoch by validation mean
absolute error is kept. Pairs come from the shared per-video caches.

Departures from DVSNet's released settings (each an option; the defaults are what fits, measured
on the tiny preset's data: rl_scheduler/config.py "DVSNet training fixes"):
- `normalize_targets`: regress (y - mean) / std with a linear output instead of percent through
  the LeakyReLU; `normalize_inputs`: conv6_1 divided by its per-channel RMS;
  `calibrate_output`: the output's scale and offset refitted by least squares on the training
  pairs after each epoch. All three are folded into the saved weights
  (`dvsnet_decision.fold_standardisation`): the saved network is DVSNet's layout and outputs
  percent, as `DVSNetScheduler` compares it with its target.
- `gap_sampling="log_uniform"`, and a `max_gap` beyond DVSNet's 13 where the sweeps need it: they
  meet key distances up to the largest AKI, and the net only ranks distances it was trained on.
- `val_max_gap`: None validates on the training gap distribution (DVSNet's val list: 9).
- `dropout_rate` (DVSNet's 0.5 by default), `checkpoint_every`, `pair_table_dir` (the RL stages'
  pair tables, read when present).
DVSNet's own: `--nonormalize_targets --nonormalize_inputs --nocalibrate_output --gap_sampling=pairs
--val_max_gap=9` (max_gap 13, dropout 0.5, lr 2e-3 x0.99 per epoch, batch 32, 100 epochs).

Writes `<root>/tensorboard` (loss, val_mae, val_mae_constant, val_pearson, val_spearman),
`<root>/ckpt` (resumable every `checkpoint_every` epochs), `history.json` (one row per epoch),
`best.weights.h5` (the training network), and finally `config.json`, `final.weights.h5` (the best epoch,
folded: raw conv6_1 -> percent), `DONE`.

`--strategy` (deeplab_face.distribute): the network, Adam and the checkpoint are built under the
strategy's scope; each batch (the global batch) is split across the replicas, each replica's loss
is its squared errors over the GLOBAL batch size (so the replicas' losses sum to the batch mean) and
Keras all-reduces the gradients; only the chief writes the stage folder.
"""
import json
import math
import os
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

from deeplab_face import atomic, cli  # noqa: E402
from deeplab_face import distribute  # noqa: E402
from deeplab_face.distribute import define_strategy_flag, write_dir  # noqa: E402
from deeplab_face.stage import checkpoint_manager, finish_stage, restore_latest, seed_states  # noqa: E402
from deeplab_face.errors import ConfigError  # noqa: E402
from rl_scheduler import config, pair_tables  # noqa: E402
from flownet2s.dff import load_dff  # noqa: E402
from rl_scheduler.cache import load_video_caches  # noqa: E402
from rl_scheduler.dvsnet_decision import build_decision_network, fold_standardisation  # noqa: E402
from deeplab_face.training import scalar_summary  # noqa: E402
from rl_scheduler import training_stage  # noqa: E402
from rl_scheduler.training_stage import (checked_stage_flags, define_stage_flags, read_json,  # noqa: E402
                                         register_size_validator, write_json)
from rl_scheduler.replicas import mse_step  # noqa: E402

# the data side lives in dvsnet_pairs; re-exported here, where tests and callers import them
from rl_scheduler.dvsnet_pairs import (  # noqa: E402,F401
    GAP_BUCKETS, GAP_SAMPLINGS, VAL_MAX_GAP, pair_dataset, pearson, prefetch_in_key_blocks, regression_metrics,
    sample_pairs, spearman)


def _leaky(x):
    """DVSNet's LeakyReLU on the output, in numpy (the folded network's last op)."""
    return np.where(x < 0, config.LEAKY_ALPHA * x, x)


def train_decision_network(root_dir, train_data, val_data, epochs=config.DVSNET_EPOCHS,
                           batch_size=config.DVSNET_BATCH_SIZE, learning_rate=config.DVSNET_LEARNING_RATE,
                           lr_decay=config.DVSNET_LR_DECAY, seed=0, deviation_size=None,
                           deviation_tap="conv6_1", verbose=1, extra_config=None,
                           normalize_targets=config.DVSNET_NORMALIZE_TARGETS,
                           normalize_inputs=config.DVSNET_NORMALIZE_INPUTS,
                           dropout_rate=config.DVSNET_DROPOUT_RATE,
                           checkpoint_every=config.DVSNET_CHECKPOINT_EVERY,
                           calibrate_output=config.DVSNET_CALIBRATE_OUTPUT, strategy="default", log=None):
    """MSE regression of the confidence score; keeps the best epoch by validation MAE.

    strategy: a name of deeplab_face.distribute.STRATEGIES or a tf.distribute.Strategy (module doc).

    calibrate_output (with normalize_targets): after each epoch, the output's scale and offset are
    refitted by least squares on the training pairs (z ~ a * net(x) + b, closed form); validation,
    the kept epoch and the saved weights use the refitted output. Without normalize_targets (the
    percent output goes through DVSNet's LeakyReLU, not foldable) it is not applied.

    checkpoint_every: epochs between resumable checkpoints (with best.weights.h5); an interrupted
    run redoes at most that many epochs (a checkpoint costs ~0.9 s at S=129, an epoch of 1200 pairs
    ~1 s on 2 CPU cores).

    train_data / val_data: (X, y percent) or (X, y, gaps). Returns the metrics of the kept epoch
    (see `regression_metrics`; the constant predictor is the training-target mean).
    """
    x_train, y_train = np.asarray(train_data[0], np.float32), np.asarray(train_data[1], np.float32)
    x_val, y_val = np.asarray(val_data[0], np.float32), np.asarray(val_data[1], np.float32)
    val_gaps = val_data[2] if len(val_data) > 2 else None
    if len(x_train) == 0 or len(x_val) == 0:
        raise ConfigError("--train_videos/--val_videos: no decision-network pairs to train or validate on")
    if epochs < 1 or batch_size < 1 or checkpoint_every < 1:
        raise ConfigError("--epochs, --batch_size and --checkpoint_every must be >= 1")
    if not 0.0 <= dropout_rate < 1.0:
        raise ConfigError(f"--dropout_rate: must be in [0, 1), got {dropout_rate}")
    start = time.time()
    strategy = distribute.strategy_of(strategy)
    strategy_name = distribute.strategy_name(strategy)
    chief_dir, root_dir = root_dir, write_dir(root_dir, strategy)   # a non-chief writes a scratch folder
    keras.utils.set_random_seed(seed)
    os.makedirs(root_dir, exist_ok=True)
    build_args = dict(deviation_shape=list(x_train.shape[1:]),
                      deviation_size=list(deviation_size) if deviation_size else None)
    # The standardisations, folded into the saved weights at the end (fold_standardisation).
    target_mean, target_std = _target_standardisation(y_train, normalize_targets)
    input_scale = _input_scale(x_train) if normalize_inputs else None
    if input_scale is not None:
        x_train, x_val = x_train / input_scale, x_val / input_scale
    z_train = (y_train - target_mean) / target_std
    constant = float(np.mean(y_train))
    calibrate = bool(calibrate_output and normalize_targets)

    def to_percent(z):
        y = np.asarray(z, np.float64) * target_std + target_mean
        return _leaky(y) if normalize_targets else y   # as the folded network computes it

    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    with strategy.scope():   # variables (mirrored under a strategy) and the optimizer bound to it
        model = build_decision_network(**build_args, dropout_rate=dropout_rate,
                                       score_activation=not normalize_targets)
        schedule = keras.optimizers.schedules.ExponentialDecay(
            learning_rate, decay_steps=steps_per_epoch, decay_rate=lr_decay, staircase=True)  # x0.99 per epoch
        optimizer = keras.optimizers.Adam(schedule)
        optimizer.build(model.trainable_variables)
        epoch = tf.Variable(0, dtype=tf.int64)
        best_mae = tf.Variable(np.inf, dtype=tf.float64)
        best_calibration = tf.Variable([1.0, 0.0], dtype=tf.float64)   # (a, b) of the kept epoch
        seeds = seed_states(model)
        ckpt = tf.train.Checkpoint(step=epoch, model=model, optimizer=optimizer, best_mae=best_mae,
                                   best_calibration=best_calibration, seed_states=seeds)
        manager = checkpoint_manager(ckpt, os.path.join(root_dir, "ckpt"))
        restore_latest(ckpt, manager)

    step = mse_step(strategy, model, optimizer, seeds)   # split over the replicas when several

    @tf.function(reduce_retracing=True)
    def predict(x):
        return model(x, training=False)[:, 0]

    def predict_z(x):
        return np.concatenate([predict(x[s:s + 256]).numpy() for s in range(0, len(x), 256)]).astype(np.float64)

    def fit_calibration():
        """(a, b) with a * net(x) + b closest to the standardised training targets (least squares)."""
        if not calibrate:
            return 1.0, 0.0
        z = predict_z(x_train)
        if np.std(z) < 1e-8:
            return 1.0, 0.0
        a, b = np.linalg.lstsq(np.stack([z, np.ones_like(z)], 1), z_train.astype(np.float64), rcond=None)[0]
        return float(a), float(b)

    best_path = os.path.join(root_dir, "best.weights.h5")
    history_path = os.path.join(root_dir, "history.json")
    history = read_json(history_path, [])[:int(epoch.numpy())]
    writer = tf.summary.create_file_writer(os.path.join(root_dir, "tensorboard"))
    bar = keras.utils.Progbar(epochs, verbose=verbose, stateful_metrics=["loss", "val_mae", "val_pearson"])
    bar.update(int(epoch.numpy()))
    best_weights = None
    while int(epoch.numpy()) < epochs:
        current = int(epoch.numpy())
        order = np.random.default_rng([seed, current]).permutation(len(x_train))
        losses = [float(step(x_train[b], z_train[b]))
                  for b in (order[s:s + batch_size] for s in range(0, len(order), batch_size))]
        a, b = fit_calibration()
        metrics = regression_metrics(to_percent(a * predict_z(x_val) + b), y_val, constant)
        # loss in percent^2 whatever the standardisation, comparable across runs
        stats = dict(epoch=current + 1, loss=float(np.mean(losses)) * target_std ** 2, **metrics)
        if calibrate:
            stats.update(calibration_scale=a, calibration_offset=b)
        if metrics["val_mae"] < float(best_mae.numpy()):
            best_mae.assign(metrics["val_mae"])
            best_calibration.assign([a, b])
            best_weights = model.get_weights()   # written with the next checkpoint
        with writer.as_default():
            for name, value in stats.items():
                if name != "epoch" and value is not None:
                    scalar_summary(name, value, current + 1)
        writer.flush()
        history.append(stats)
        write_json(history_path, history)
        epoch.assign_add(1)
        if (current + 1) % checkpoint_every == 0 or current + 1 == epochs:
            if best_weights is not None:   # best.weights.h5 always matches the checkpoint's best_mae
                _save_weights_of(model, best_weights, best_path)
                best_weights = None
            manager.save(checkpoint_number=current + 1)
        bar.update(current + 1, [("loss", stats["loss"]), ("val_mae", stats["val_mae"]),
                                 ("val_pearson", stats["val_pearson"] or 0.0)])
    if os.path.exists(best_path):
        model.load_weights(best_path)
    # The saved network: DVSNet's layout (score LeakyReLU, any dropout), raw conv6_1 in, percent out:
    # percent = target_std * (a * z + b) + target_mean.
    a, b = (float(v) for v in best_calibration.numpy())
    final = fold_standardisation(model, build_decision_network(**build_args), input_scale,
                                 target_mean + target_std * b, target_std * a)
    predicted = np.asarray(final.predict_on_batch(np.asarray(val_data[0], np.float32)))[:, 0]
    metrics = regression_metrics(predicted, y_val, constant, val_gaps)
    result = _decision_result(metrics, history, x_train, x_val, y_train, y_val, predicted, time.time() - start)
    finish_stage(root_dir, final,
                 dict(build_args, deviation_tap=deviation_tap,
                      training=dict(extra_config or {}, epochs=epochs, batch_size=batch_size, strategy=strategy_name,
                                    learning_rate=learning_rate, lr_decay=lr_decay, seed=seed,
                                    normalize_targets=normalize_targets, normalize_inputs=normalize_inputs,
                                    dropout_rate=dropout_rate, calibrate_output=calibrate,
                                    target_standardisation=[target_mean, target_std],
                                    output_calibration=[a, b] if calibrate else None,
                                    input_scale_mean=None if input_scale is None else float(np.mean(input_scale))),
                      metrics={k: v for k, v in result.items() if k != "seconds"}), done_text="done\n")
    if root_dir != chief_dir:   # a non-chief worker's files were only needed while it ran
        shutil.rmtree(root_dir, ignore_errors=True)
    if log is not None:
        log(f"dvsnet: val MAE {metrics['val_mae']:.2f} (constant {metrics['val_mae_constant']:.2f}), "
            f"Pearson {_fmt(metrics['val_pearson'])}, Spearman {_fmt(metrics['val_spearman'])}, "
            f"{len(x_train)} train / {len(x_val)} val pairs")
    return result


def _target_standardisation(y_train, normalize_targets):
    """(mean, std) of the regressed targets: z = (y - mean) / std; (0, 1) without normalize_targets."""
    if not normalize_targets:
        return 0.0, 1.0
    return float(np.mean(y_train)), float(max(np.std(y_train), 1e-3))


def _input_scale(x_train):
    """conv6_1's per-channel RMS over the training pairs (normalize_inputs); dead channels keep 1."""
    rms = np.sqrt(np.mean(np.square(x_train.astype(np.float64)), axis=(0, 1, 2)))
    return np.where(rms > 1e-6, rms, 1.0).astype(np.float32)


def _save_weights_of(model, weights, path):
    """`weights` saved to `path` through `model`, whose own weights are put back afterwards."""
    model_weights = model.get_weights()
    model.set_weights(weights)
    atomic.save_weights(model, path)
    model.set_weights(model_weights)


def _decision_result(metrics, history, x_train, x_val, y_train, y_val, predicted, seconds):
    """train_decision_network's returned numbers: the folded network's validation metrics and the data's."""
    quantiles = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)
    return dict(
        best_val_mae=metrics["val_mae"], **metrics,
        best_epoch=int(np.argmin([h["val_mae"] for h in history]) + 1) if history else None,
        train_pairs=int(len(x_train)), val_pairs=int(len(x_val)),
        target_mean=float(np.mean(y_train)), target_std=float(np.std(y_train)),
        val_target_mean=float(np.mean(y_val)),
        # where the predicted confidence lies: the DVSNet sweep's targets should span it
        val_predicted_quantiles={f"{q:g}": float(np.quantile(predicted, q)) for q in quantiles},
        seconds=seconds)


def _fmt(value):
    return "n/a" if value is None else f"{value:.3f}"


def train_eval(root_dir, prepared_dir, segmenter_dir, flownet_dir, train_videos, val_videos,
               max_gap=config.DVSNET_MAX_GAP, epochs=config.DVSNET_EPOCHS,
               batch_size=config.DVSNET_BATCH_SIZE,
               learning_rate=config.DVSNET_LEARNING_RATE, seed=0, pairs_per_video=config.DVSNET_PAIRS_PER_VIDEO,
               val_pairs_per_video=config.DVSNET_VAL_PAIRS_PER_VIDEO, deviation_size=None, flow_resolution="full", cache_batch_size=8,
               max_frames_in_memory=config.MAX_FRAMES_IN_MEMORY, verbose=1,
               gap_sampling=config.DVSNET_GAP_SAMPLING, val_max_gap=None, lr_decay=config.DVSNET_LR_DECAY,
               normalize_targets=config.DVSNET_NORMALIZE_TARGETS,
               normalize_inputs=config.DVSNET_NORMALIZE_INPUTS,
               dropout_rate=config.DVSNET_DROPOUT_RATE, checkpoint_every=config.DVSNET_CHECKPOINT_EVERY,
               pair_table_dir=None, calibrate_output=config.DVSNET_CALIBRATE_OUTPUT, strategy="default",
               log=None):
    """The stage function (docs/interfaces.md). Without val_videos, 10% of the training pairs validate.

    val_max_gap: None = the training pairs' max_gap and gap_sampling (DVSNet's val list: 9, with
    "pairs" sampling). A video in both lists shares one cache; its validation pairs are drawn
    disjoint from its training pairs (a warning is logged: such a validation is optimistic).
    pair_table_dir: where the RL stages keep `<video>.npz` pair tables (rl_scheduler.train); a
    video's table, when there, is read (never written) so its pairs cost no FlowNet pass.
    strategy: deeplab_face.distribute's `--strategy` (a name) or a tf.distribute.Strategy.
    """
    if not train_videos:
        raise ConfigError("--train_videos: at least one video is needed")
    if max_gap < 1 or (val_max_gap is not None and val_max_gap < 1):
        raise ConfigError("--max_gap and --val_max_gap must be >= 1")
    start = time.time()
    rng = np.random.default_rng(seed)
    dff = load_dff(segmenter_dir, flownet_dir, flow_resolution=flow_resolution)
    options = dict(batch_size=cache_batch_size, keep_masks=False, keep_taps=("conv6_1",),
                   max_frames_in_memory=max_frames_in_memory)   # lazy frames; None: all in memory
    train_ids, val_ids = [str(v) for v in train_videos], [str(v) for v in val_videos or ()]
    train_caches = load_video_caches(dff, prepared_dir, train_ids, **options)
    by_id = dict(zip(train_ids, train_caches))
    new_val = [v for v in val_ids if v not in by_id]
    by_id.update(zip(new_val, load_video_caches(dff, prepared_dir, new_val, **options) if new_val else []))
    shared = [v for v in val_ids if v in train_ids]
    if shared and log is not None:
        log(f"dvsnet: validation video(s) {', '.join(shared)} also train (pairs disjoint, same frames): "
            "the validation MAE is optimistic")
    for video_id, cache in by_id.items():
        pair_tables.read_table(cache, pair_table_dir, video_id, log=log and (lambda line: log(f"dvsnet: {line}")))
    train_data = pair_dataset(train_caches, max_gap, pairs_per_video, rng, gap_sampling=gap_sampling)
    if val_ids:
        val_caches = [by_id[v] for v in val_ids]
        used = {id(c): p for c, p in zip(train_caches, train_data[3])}
        if val_max_gap is None:
            val_data = pair_dataset(val_caches, max_gap, val_pairs_per_video, rng, gap_sampling=gap_sampling,
                                    exclude=used)
        else:
            val_data = pair_dataset(val_caches, val_max_gap, val_pairs_per_video, rng, exclude=used)
        if len(val_data[0]) == 0:
            raise ConfigError(f"--val_videos={','.join(val_ids)}: no validation pair left (their pairs "
                              "all train: lower --pairs_per_video or name other videos)")
        val_data, train_data = val_data[:3], train_data[:3]
    else:
        order = rng.permutation(len(train_data[0]))
        held = max(1, len(order) // 10)
        val_data = tuple(a[order[:held]] for a in train_data[:3])
        train_data = tuple(a[order[held:]] for a in train_data[:3])
    pair_seconds = time.time() - start
    extra = dict(prepared_dir=prepared_dir, segmenter_dir=segmenter_dir, flownet_dir=flownet_dir,
                 train_videos=train_ids, val_videos=val_ids, max_gap=max_gap, gap_sampling=gap_sampling,
                 val_max_gap=val_max_gap, pairs_per_video=pairs_per_video,
                 val_pairs_per_video=val_pairs_per_video, flow_resolution=flow_resolution)
    result = train_decision_network(root_dir, train_data, val_data, epochs=epochs, batch_size=batch_size,
                                    learning_rate=learning_rate, lr_decay=lr_decay, seed=seed,
                                    deviation_size=deviation_size, verbose=verbose, extra_config=extra,
                                    normalize_targets=normalize_targets, normalize_inputs=normalize_inputs,
                                    dropout_rate=dropout_rate, checkpoint_every=checkpoint_every,
                                    calibrate_output=calibrate_output, strategy=strategy, log=log)
    result.update(pair_seconds=pair_seconds, seconds=time.time() - start)
    return result


FLAGS = flags.FLAGS


def define_flags():
    """Flags of the command (defined on demand, so that other modules can import this one)."""
    define_stage_flags("Output directory of this stage.", "Training video ids.",
                       "Validation video ids (empty: 10% of the training pairs).")
    flags.adopt_module_key_flags(training_stage)  # listed by this command's --help
    flags.DEFINE_integer("max_gap", config.DVSNET_MAX_GAP,
                         "Largest current - key distance of a training pair (DVSNet: 13; the sweeps meet "
                         "distances up to the largest AKI, so small presets use more).", lower_bound=1)
    flags.DEFINE_enum("gap_sampling", config.DVSNET_GAP_SAMPLING, list(GAP_SAMPLINGS),
                      "pairs: every pair with gap 0..max_gap equally likely (DVSNet); log_uniform: "
                      "gaps 1..max_gap with log(gap) uniform.")
    flags.DEFINE_integer("val_max_gap", None,
                         "Largest gap of a validation pair (DVSNet: 9); unset: as the training pairs.",
                         lower_bound=1)
    flags.DEFINE_integer("epochs", config.DVSNET_EPOCHS, "Training epochs.", lower_bound=1)
    flags.DEFINE_integer("batch_size", config.DVSNET_BATCH_SIZE, "Batch size.", lower_bound=1)
    flags.DEFINE_float("learning_rate", config.DVSNET_LEARNING_RATE, "Adam learning rate.", lower_bound=0.0)
    flags.DEFINE_float("lr_decay", config.DVSNET_LR_DECAY, "Learning-rate factor per epoch (DVSNet: 0.99).",
                       lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_boolean("normalize_targets", config.DVSNET_NORMALIZE_TARGETS,
                         "Regress the standardised score with a linear output, folded back to percent "
                         "in the saved weights (DVSNet: false, percent through a LeakyReLU).")
    flags.DEFINE_boolean("normalize_inputs", config.DVSNET_NORMALIZE_INPUTS,
                         "Divide conv6_1 by its per-channel RMS, folded into the saved conv kernel "
                         "(DVSNet: false).")
    flags.DEFINE_boolean("calibrate_output", config.DVSNET_CALIBRATE_OUTPUT,
                         "Refit the output's scale and offset by least squares on the training pairs "
                         "after each epoch (with --normalize_targets; DVSNet: false).")
    flags.DEFINE_float("dropout_rate", config.DVSNET_DROPOUT_RATE,
                       "Dropout after each hidden FC in training (DVSNet: 0.5).", lower_bound=0.0,
                       upper_bound=0.99)
    flags.DEFINE_integer("checkpoint_every", config.DVSNET_CHECKPOINT_EVERY,
                         "Epochs between resumable checkpoints.", lower_bound=1)
    flags.DEFINE_string("pair_table_dir", None,
                        "Read the RL stages' <video>.npz pair tables from here when present (never written).")
    flags.DEFINE_integer("seed", 0, "Random seed.", lower_bound=0)
    flags.DEFINE_integer("pairs_per_video", config.DVSNET_PAIRS_PER_VIDEO, "Training pairs drawn per video (0: all).", lower_bound=0)
    flags.DEFINE_integer("val_pairs_per_video", config.DVSNET_VAL_PAIRS_PER_VIDEO, "Validation pairs drawn per video (0: all).", lower_bound=0)
    flags.DEFINE_list("deviation_size", [],
                      "Resize conv6_1 to h,w first (DVSNet regions: 4,8; empty: native).")
    register_size_validator("deviation_size")
    define_strategy_flag()
    flags.adopt_module_key_flags(sys.modules[define_strategy_flag.__module__])   # --strategy in --help


def main(argv):
    del argv
    size = checked_stage_flags()
    result = train_eval(
        FLAGS.root_dir, FLAGS.prepared_dir, FLAGS.segmenter_dir, FLAGS.flownet_dir, FLAGS.train_videos,
        FLAGS.val_videos, max_gap=FLAGS.max_gap, epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
        learning_rate=FLAGS.learning_rate, seed=FLAGS.seed, pairs_per_video=FLAGS.pairs_per_video or None,
        val_pairs_per_video=FLAGS.val_pairs_per_video or None, deviation_size=size,
        flow_resolution=FLAGS.flow_resolution, cache_batch_size=FLAGS.cache_batch_size,
        max_frames_in_memory=FLAGS.max_frames_in_memory or None, gap_sampling=FLAGS.gap_sampling,
        val_max_gap=FLAGS.val_max_gap, lr_decay=FLAGS.lr_decay, normalize_targets=FLAGS.normalize_targets,
        normalize_inputs=FLAGS.normalize_inputs, dropout_rate=FLAGS.dropout_rate,
        checkpoint_every=FLAGS.checkpoint_every, pair_table_dir=FLAGS.pair_table_dir,
        calibrate_output=FLAGS.calibrate_output, strategy=FLAGS.strategy, log=print)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
