"""DVSNet's decision network trained on (conv6_1, confidence score) pairs: the MSE regression loop that
rl_scheduler.train_dvsnet's stage function runs (its module doc gives DVSNet's settings, this project's
departures and the stage folder's files), resumable from its checkpoints, the best epoch by validation
MAE kept and folded into DVSNet's layout (rl_scheduler.dvsnet_decision.fold_standardisation).
"""
import math
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from deeplab_face import atomic, distribute
from deeplab_face.distribute import write_dir
from deeplab_face.errors import ConfigError
from deeplab_face.stage import checkpoint_manager, finish_stage, restore_latest, seed_states
from deeplab_face.training import scalar_summary
from rl_scheduler import config
from rl_scheduler.dvsnet_decision import build_decision_network, fold_standardisation
from rl_scheduler.dvsnet_pairs import regression_metrics
from rl_scheduler.replicas import mse_step
from rl_scheduler.training_stage import read_json, write_json


def _leaky(x):
    """DVSNet's LeakyReLU on the output, in numpy (the folded network's last op)."""
    return np.where(x < 0, config.LEAKY_ALPHA * x, x)


# Kept whole: the epoch loop and its closures (to_percent, predict_z, fit_calibration) share the standardisation.
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
