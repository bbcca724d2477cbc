"""What the training commands share (a library: the commands import it, never each other).

- `resolve_videos`: the --train_videos / --val_videos lists of a prepared-data directory;
- `scalar_summary`: one TensorBoard scalar; `log_scalars`: a step's scalars;
- `check_finite`: the divergence check after each step;
- `pixel_cross_entropy`: the segmentation loss of N (deeplab_face.train) and F (flownet2s.train);
- `decayed_kernels`, `set_batch_norm_trainable`, `configure_batch_norm`: slim's weight decay and
  DeepLab's batch-norm settings on a Keras model (deeplab_face.train);
- `recalibrate_batch_norm`: precise batch-norm statistics for a finished N (the small presets' stage);
- `replica_share`: the factor that makes a replica's loss its share of the global-batch loss under
  a tf.distribute strategy (deeplab_face.distribute), exactly 1 on one device.
"""
import keras
import numpy as np
import tensorflow as tf

from deeplab_face.data import tfrecords
from deeplab_face.errors import ConfigError


def resolve_videos(prepared_dir, train_videos, val_videos):
    """Video id lists; empty train_videos = every manifest video not in val_videos."""
    videos = {str(k) for k in tfrecords.read_manifest(prepared_dir)["videos"]}
    val_videos = [str(v) for v in val_videos or ()]
    train_videos = [str(v) for v in train_videos or ()] or [v for v in sorted(videos)
                                                              if v not in val_videos]
    for flag, ids in (("--train_videos", train_videos), ("--val_videos", val_videos)):
        missing = [v for v in ids if v not in videos]
        if missing:
            raise ConfigError(f"{flag}: {missing} not in {prepared_dir}/manifest.json")
    if not train_videos:
        raise ConfigError(f"--train_videos: no training videos left in {prepared_dir}")
    return train_videos, val_videos


def scalar_summary(name, value, step):
    """One TensorBoard scalar on the default summary writer (shared by every training command)."""
    tf.summary.scalar(name, float(value), step=int(step))


def log_scalars(writer, step, **scalars):
    """One training step's scalars on `writer`, in the order given."""
    with writer.as_default():
        for name, value in scalars.items():
            scalar_summary(name, value, step=step)


def check_finite(loss, learning_rate, step):
    """A ConfigError naming --learning_rate when a step's loss is not finite."""
    if not np.isfinite(loss):
        raise ConfigError(f"--learning_rate={learning_rate}: loss diverged at step {step}")


def valid_pixels(labels, num_classes):
    """Mask of the pixels whose label is a class (IGNORE_LABEL 255 and any other id outside
    [0, num_classes) are left out)."""
    labels = tf.cast(labels, tf.int32)
    return tf.logical_and(labels >= 0, labels < num_classes)


def pixel_cross_entropy(logits, labels, num_classes):
    """Mean softmax cross-entropy over the `valid_pixels` of the batch."""
    labels = tf.cast(labels, tf.int32)
    valid = valid_pixels(labels, num_classes)
    safe = tf.where(valid, labels, tf.zeros_like(labels))
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe, logits=logits)
    weights = tf.cast(valid, losses.dtype)
    return tf.reduce_sum(losses * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


def replica_share(local_count):
    """local_count / (its sum over the replicas in sync), called inside `strategy.run`.

    A replica's loss is a mean over its own part of the global batch (pixels, examples); the
    strategy sums the replicas' gradients, so each replica's mean is weighted by its share of the
    global count: sum_r mean_r * n_r / N is then the global-batch mean, also when the batch does
    not split evenly (or a replica's crop is all ignore labels). The same idea as
    tf.nn.compute_average_loss(global_batch_size=...), for means over pixels. On one device the
    factor is n / n = 1.0 exactly, so the one-device loss and gradients stay bit-identical.
    """
    local = tf.cast(local_count, tf.float32)
    context = tf.distribute.get_replica_context()
    total = local
    if context is not None and context.num_replicas_in_sync > 1:
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, local)
    return local / tf.maximum(total, 1.0)


def replica_regularization(loss):
    """A regulariser computed identically on every replica, scaled so that the summed gradients
    count it once (tf.nn.scale_regularization_loss); unchanged on one device."""
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync if context is not None else 1
    return loss if replicas == 1 else loss / float(replicas)


def decayed_kernels(model):
    """Kernels that slim's weights_regularizer covers: conv / dense / pointwise, not depthwise or BN."""
    kernels = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not layer.trainable or isinstance(layer, keras.layers.DepthwiseConv2D):
            continue
        if isinstance(layer, keras.layers.SeparableConv2D):
            kernels.append(layer.pointwise_kernel)
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose,
                                keras.layers.Dense)):
            kernels.append(layer.kernel)
    return kernels


def batch_norm_layers(model):
    """Every BatchNormalization layer of `model`, nested models included."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization)]


def set_batch_norm_trainable(model, trainable):
    """Keras BN with trainable=False runs in inference mode: DeepLab's fine_tune_batch_norm=False."""
    for layer in batch_norm_layers(model):
        layer.trainable = trainable


def configure_batch_norm(model, fine_tune_batch_norm, bn_momentum):
    """Batch norm trained or frozen (per replica: deeplab_face.train's docstring), with `bn_momentum` if given."""
    set_batch_norm_trainable(model, fine_tune_batch_norm)
    if bn_momentum is not None:
        for layer in batch_norm_layers(model):
            layer.momentum = float(bn_momentum)


def recalibrate_batch_norm(segmenter_dir, out_dir, prepared_dir, video_ids, batches, batch_size=8, seed=0):
    """Precise BN (Wu & Johnson 2021): N of `segmenter_dir` with its batch-norm moving statistics
    replaced by their average over `batches` random batches of training frames; written as a stage dir
    (config.json, final.weights.h5, DONE) that later stages load in place of the trained one."""
    from deeplab_face.data.pipelines import load_video
    from deeplab_face.models.segmenter import load_segmenter
    from deeplab_face.stage import finish_stage, read_stage_config

    model = load_segmenter(segmenter_dir)
    norms = batch_norm_layers(model)
    for layer in norms:
        layer.momentum = 0.0    # a training-mode call then leaves exactly that batch's statistics
    forward = tf.function(lambda x: model(x, training=True))
    frames = np.concatenate([load_video(prepared_dir, v)[0] for v in video_ids])
    rng = np.random.default_rng(seed)
    sums = [[0.0, 0.0] for _ in norms]
    for _ in range(batches):
        forward(frames[rng.choice(len(frames), batch_size, replace=False)].astype(np.float32))
        for total, layer in zip(sums, norms):
            total[0] += layer.moving_mean.numpy()
            total[1] += layer.moving_variance.numpy()
    for (mean, variance), layer in zip(sums, norms):
        layer.moving_mean.assign(mean / batches)
        layer.moving_variance.assign(variance / batches)
    finish_stage(out_dir, model, read_stage_config(segmenter_dir, "segmenter"))
    return {"batch_norm_layers": len(norms), "batches": batches, "batch_size": batch_size,
            "source": segmenter_dir}
