"""DVSNet's decision network trained on (conv6_1, confidence score) pairs: the MSE regression loop that
rl_scheduler.train_dvsnet's stage function runs (its module doc gives DVSNet's settings, this project's
departures and the stage folder's files), resumable from its checkpoints, the best epoch by validation
MAE kept and folded into DVSNet's layout (rl_scheduler.dvsnet_decision.fold_standardisation).
"""
import dataclasses
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
    _check_decision_args(x_train, x_val, epochs, batch_size, checkpoint_every, dropout_rate)
    start = time.time()
    strategy = distribute.strategy_of(strategy)
    chief_dir, root_dir = root_dir, write_dir(root_dir, strategy)   # a non-chief writes a scratch folder
    keras.utils.set_random_seed(seed)
    os.makedirs(root_dir, exist_ok=True)
    build_args = dict(deviation_shape=list(x_train.shape[1:]),
                      deviation_size=list(deviation_size) if deviation_size else None)
    scaling = _Standardisation.of(x_train, y_train, normalize_targets, normalize_inputs)
    pairs = _Pairs(scaling.inputs(x_train), (y_train - scaling.target_mean) / scaling.target_std,
                   scaling.inputs(x_val), y_val, float(np.mean(y_train)))
    calibrate = bool(calibrate_output and normalize_targets)
    training = _restored_training(strategy, build_args, dropout_rate, normalize_targets, learning_rate, lr_decay,
                                  math.ceil(len(x_train) / batch_size), os.path.join(root_dir, "ckpt"))
    history = _train_epochs(training, pairs, scaling, calibrate, root_dir, epochs, batch_size, seed,
                            checkpoint_every, verbose)
    final, (a, b) = _folded_network(training, build_args, scaling)
    predicted = np.asarray(final.predict_on_batch(np.asarray(val_data[0], np.float32)))[:, 0]
    metrics = regression_metrics(predicted, y_val, pairs.constant, val_data[2] if len(val_data) > 2 else None)
    result = _decision_result(metrics, history, x_train, x_val, y_train, y_val, predicted, time.time() - start)
    training_config = dict(extra_config or {}, epochs=epochs, batch_size=batch_size,
                           strategy=distribute.strategy_name(strategy), learning_rate=learning_rate,
                           lr_decay=lr_decay, seed=seed, normalize_targets=normalize_targets,
                           normalize_inputs=normalize_inputs, dropout_rate=dropout_rate, calibrate_output=calibrate,
                           target_standardisation=[scaling.target_mean, scaling.target_std],
                           output_calibration=[a, b] if calibrate else None,
                           input_scale_mean=scaling.input_scale_mean())
    finish_stage(root_dir, final,
                 dict(build_args, deviation_tap=deviation_tap, training=training_config,
                      metrics={k: v for k, v in result.items() if k != "seconds"}), done_text="done\n")
    if root_dir != chief_dir:   # a non-chief worker's files were only needed while it ran
        shutil.rmtree(root_dir, ignore_errors=True)
    if log is not None:
        log(_fit_line(metrics, len(x_train), len(x_val)))
    return result


def _check_decision_args(x_train, x_val, epochs, batch_size, checkpoint_every, dropout_rate):
    """ConfigError for no pairs or a setting out of range."""
    if len(x_train) == 0 or len(x_val) == 0:
        raise ConfigError("--train_videos/--val_videos: no decision-network pairs to train or validate on")
    if epochs < 1 or batch_size < 1 or checkpoint_every < 1:
        raise ConfigError("--epochs, --batch_size and --checkpoint_every must be >= 1")
    if not 0.0 <= dropout_rate < 1.0:
        raise ConfigError(f"--dropout_rate: must be in [0, 1), got {dropout_rate}")


@dataclasses.dataclass
class _Standardisation:
    """What the network trains on: z = (y - target_mean) / target_std from conv6_1 / input_scale (None:
    raw); folded into the saved weights at the end (fold_standardisation)."""
    target_mean: float
    target_std: float
    input_scale: object
    normalize_targets: bool

    @classmethod
    def of(cls, x_train, y_train, normalize_targets, normalize_inputs):
        target_mean, target_std = _target_standardisation(y_train, normalize_targets)
        return cls(target_mean, target_std, _input_scale(x_train) if normalize_inputs else None, normalize_targets)

    def inputs(self, x):
        return x if self.input_scale is None else x / self.input_scale

    def to_percent(self, z):
        y = np.asarray(z, np.float64) * self.target_std + self.target_mean
        return _leaky(y) if self.normalize_targets else y   # as the folded network computes it

    def input_scale_mean(self):
        return None if self.input_scale is None else float(np.mean(self.input_scale))


@dataclasses.dataclass
class _Pairs:
    """The pairs as the network sees them (scaled inputs, standardised training targets), the validation
    targets in percent, and the constant predictor (the training-target mean)."""
    x_train: np.ndarray
    z_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    constant: float


@dataclasses.dataclass
class _DecisionTraining:
    """The training network, its optimizer step and the checkpointed loop state (epoch, best_mae and the
    kept epoch's output calibration (a, b))."""
    model: keras.Model
    step: object
    epoch: tf.Variable
    best_mae: tf.Variable
    best_calibration: tf.Variable
    manager: tf.train.CheckpointManager


def _restored_training(strategy, build_args, dropout_rate, normalize_targets, learning_rate, lr_decay,
                       steps_per_epoch, ckpt_dir):
    """The network, Adam and the loop state built under the strategy's scope (variables mirrored, the
    optimizer bound to it), restored from `ckpt_dir`'s latest checkpoint."""
    with strategy.scope():
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
        manager = checkpoint_manager(ckpt, ckpt_dir)
        restore_latest(ckpt, manager)
    step = mse_step(strategy, model, optimizer, seeds)   # split over the replicas when several
    return _DecisionTraining(model, step, epoch, best_mae, best_calibration, manager)


def _train_epochs(training, pairs, scaling, calibrate, root_dir, epochs, batch_size, seed, checkpoint_every,
                  verbose):
    """The epochs left after the restored checkpoint, each appended to history.json -> the history."""
    predict_z = _batched_predictor(training.model)
    best_path = os.path.join(root_dir, "best.weights.h5")
    history_path = os.path.join(root_dir, "history.json")
    history = read_json(history_path, [])[:int(training.epoch.numpy())]
    writer = tf.summary.create_file_writer(os.path.join(root_dir, "tensorboard"))
    bar = keras.utils.Progbar(epochs, verbose=verbose, stateful_metrics=["loss", "val_mae", "val_pearson"])
    bar.update(int(training.epoch.numpy()))
    best_weights = None
    while int(training.epoch.numpy()) < epochs:
        current = int(training.epoch.numpy())
        order = np.random.default_rng([seed, current]).permutation(len(pairs.x_train))
        losses = [float(training.step(pairs.x_train[b], pairs.z_train[b]))
                  for b in (order[s:s + batch_size] for s in range(0, len(order), batch_size))]
        a, b = _fit_calibration(predict_z, pairs, calibrate)
        metrics = regression_metrics(scaling.to_percent(a * predict_z(pairs.x_val) + b), pairs.y_val, pairs.constant)
        # loss in percent^2 whatever the standardisation, comparable across runs
        stats = dict(epoch=current + 1, loss=float(np.mean(losses)) * scaling.target_std ** 2, **metrics)
        if calibrate:
            stats.update(calibration_scale=a, calibration_offset=b)
        if metrics["val_mae"] < float(training.best_mae.numpy()):
            training.best_mae.assign(metrics["val_mae"])
            training.best_calibration.assign([a, b])
            best_weights = training.model.get_weights()   # written with the next checkpoint
        _write_epoch_summaries(writer, stats, current + 1)
        history.append(stats)
        write_json(history_path, history)
        training.epoch.assign_add(1)
        if (current + 1) % checkpoint_every == 0 or current + 1 == epochs:
            if best_weights is not None:   # best.weights.h5 always matches the checkpoint's best_mae
                _save_weights_of(training.model, best_weights, best_path)
                best_weights = None
            training.manager.save(checkpoint_number=current + 1)
        bar.update(current + 1, [("loss", stats["loss"]), ("val_mae", stats["val_mae"]),
                                 ("val_pearson", stats["val_pearson"] or 0.0)])
    if os.path.exists(best_path):
        training.model.load_weights(best_path)
    return history


def _batched_predictor(model):
    """x -> the network's standardised output (float64), in inference mode, 256 pairs a call."""
    @tf.function(reduce_retracing=True)
    def predict(x):
        return model(x, training=False)[:, 0]

    def predict_z(x):
        return np.concatenate([predict(x[s:s + 256]).numpy() for s in range(0, len(x), 256)]).astype(np.float64)
    return predict_z


def _fit_calibration(predict_z, pairs, calibrate):
    """(a, b) with a * net(x) + b closest to the standardised training targets (least squares)."""
    if not calibrate:
        return 1.0, 0.0
    z = predict_z(pairs.x_train)
    if np.std(z) < 1e-8:
        return 1.0, 0.0
    a, b = np.linalg.lstsq(np.stack([z, np.ones_like(z)], 1), pairs.z_train.astype(np.float64), rcond=None)[0]
    return float(a), float(b)


def _write_epoch_summaries(writer, stats, epoch):
    """An epoch's history columns to TensorBoard, flushed."""
    with writer.as_default():
        for name, value in stats.items():
            if name != "epoch" and value is not None:
                scalar_summary(name, value, epoch)
    writer.flush()


def _folded_network(training, build_args, scaling):
    """(the saved network, the kept epoch's calibration (a, b)): DVSNet's layout (score LeakyReLU, any
    dropout), raw conv6_1 in, percent out: percent = target_std * (a * z + b) + target_mean."""
    a, b = (float(v) for v in training.best_calibration.numpy())
    final = fold_standardisation(training.model, build_decision_network(**build_args), scaling.input_scale,
                                 scaling.target_mean + scaling.target_std * b, scaling.target_std * a)
    return final, (a, b)


def _fit_line(metrics, train_pairs, val_pairs):
    """The log line of the kept network's validation fit."""
    return (f"dvsnet: val MAE {metrics['val_mae']:.2f} (constant {metrics['val_mae_constant']:.2f}), "
            f"Pearson {_fmt(metrics['val_pearson'])}, Spearman {_fmt(metrics['val_spearman'])}, "
            f"{train_pairs} train / {val_pairs} val pairs")


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
