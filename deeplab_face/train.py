"""Train the segmentation network N (§4.2, Table 1): `python -m deeplab_face.train`.

TF DeepLab's recipe (reference/deeplab.md, training defaults): momentum-0.9 SGD with the "poly"
learning rate lr_0 * (1 - step / steps) ** power, L2 weight decay on conv kernels (slim's
`l2_regularizer`: weight_decay * sum(w^2) / 2; depthwise kernels and batch norm are not decayed),
softmax cross-entropy on logits upsampled to the crop, averaged over the pixels whose label is not
255. Batch norm is fine-tuned only with a batch of at least 12 (DeepLab's advice), or when the
model starts from scratch (no --init_checkpoint), where frozen initial statistics would not train.
Frozen batch norm is Keras's `trainable=False` (inference-mode statistics), which also freezes
gamma/beta; slim's `is_training=False` batch norm would still train them (a small deviation).
From scratch, DeepLab's batch-norm decay (0.9997, 0.997, 0.95 per family) makes the moving
statistics converge only after ~10^4 steps, so a short run would evaluate with its initial
statistics; `bn_momentum` (default: 0.99 from scratch, the family's own value when fine-tuning a
checkpoint) sets the decay used during training. It is not a weight: checkpoints stay compatible.

Resumable: `<workdir>/ckpt` holds model, optimizer and the step counter (kill -9 safe: a restart
restores the latest checkpoint and continues from its step). When done, writes `hparams.json`, then
`config.json` (build_segmenter arguments), `final.weights.h5` and `DONE` (stage.finish_stage).

`--strategy` (deeplab_face.distribute): `--batch_size` is the global batch, split across the
replicas; the loss is the global batch's pixel mean (training.replica_share) and the strategy sums
the gradients, so a step equals the one-device step on the same batch when batch norm is frozen
(inference mode, the default when fine-tuning a checkpoint with a batch below 12). Fine-tuned batch
norm differs: Keras 3's BatchNormalization normalises each replica's part of the batch with that
part's own statistics, and each replica updates its own copy of the moving statistics (the chief's
first replica's are the ones saved). Its `synchronized=True` (global-batch statistics) is not used:
its all-reduces, traced in each replica's gradient, were issued in different orders by the two
replicas and failed (measured: "Shape mismatch in the collective instance").
"""
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

from deeplab_face import atomic, cli, distribute  # noqa: E402
from deeplab_face.stage import clear_done, finish_stage  # noqa: E402
from deeplab_face.data.masks import NUM_CLASSES  # noqa: E402
from deeplab_face.errors import ConfigError  # noqa: E402
from deeplab_face.prediction import dataset_miou, make_predictor, read_manifest  # noqa: E402
from deeplab_face import defaults  # noqa: E402
from deeplab_face.defaults import LEARNING_POWER, MOMENTUM  # noqa: E402
from deeplab_face.training import (check_finite, configure_batch_norm, decayed_kernels,  # noqa: E402
                                   log_scalars, pixel_cross_entropy, replica_regularization,
                                   replica_share, resolve_videos, scalar_summary, valid_pixels)

BN_FINE_TUNE_MIN_BATCH = 12  # DeepLab: fine-tuning batch norm needs a batch >= 12
SCRATCH_BN_MOMENTUM = 0.99  # batch-norm decay for from-scratch runs (module docstring)


def poly_learning_rate(step, base, steps, power=LEARNING_POWER):
    """DeepLab's polynomial decay to 0 at `steps` (tf.compat.v1.train.polynomial_decay)."""
    progress = tf.minimum(tf.cast(step, tf.float32), float(steps)) / float(max(steps, 1))
    return base * (1.0 - progress) ** power


def _resize_to(crop_size, images, labels):
    """Prepared data at another size than the model's crop: bilinear frames, nearest labels."""
    images = tf.image.resize(images, (crop_size, crop_size), method="bilinear")
    labels = tf.image.resize(labels[..., None], (crop_size, crop_size), method="nearest")[..., 0]
    return images, labels


def training_dataset(prepared_dir, video_ids, batch_size, seed, crop_size, augment=True, skip_batches=0):
    from deeplab_face.data.pipelines import segmentation_dataset
    size, _ = read_manifest(prepared_dir)
    ds = segmentation_dataset(prepared_dir, video_ids, batch_size, seed, augment=augment, repeat=True,
                              skip_batches=skip_batches)
    if size != crop_size:
        ds = ds.map(lambda x, y: _resize_to(crop_size, x, y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds


def init_import_mode(reinit_logits, last_layers_contain_logits_only=True):
    """(load_tf1_checkpoint mode, restore_head) for TF DeepLab's initialisation flags.

    train.py there restores everything but the "last layers" when initialize_last_layer=False;
    model.get_extra_layer_scopes makes those the logits alone (last_layers_contain_logits_only)
    or the logits and the whole head (image_pooling, aspp, concat_projection, decoder).
    `reinit_logits` is `not initialize_last_layer`.
    """
    if not reinit_logits:
        return "all", True
    return "backbone", bool(last_layers_contain_logits_only)


def _names(names, shown=4):
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def _import_init_checkpoint(model, init_checkpoint, reinit_logits, last_layers_contain_logits_only):
    from deeplab_face.models import checkpoint
    mode, restore_head = init_import_mode(reinit_logits, last_layers_contain_logits_only)
    report = checkpoint.load_tf1_checkpoint(model, init_checkpoint, mode=mode,
                                            restore_head=restore_head)
    # Say what arrived, what starts fresh (e.g. the logits of a 21-class checkpoint) and what
    # the checkpoint could not confirm.
    lines = [f"init checkpoint {report['checkpoint']} (import mode {mode}): {report['loaded']} "
             f"variables loaded, head {report['head']}"
             + (f"; {report['note']}" if report.get("note") else "")]
    fresh = report["reinitialised"]
    if fresh:
        lines.append(f"  left at initialisation: {len(fresh)} ({_names(fresh)})")
    if report.get("head_differences"):
        lines.append(f"  head differs from the checkpoint's: {report['head_differences']}")
    if report.get("unverified"):
        assumed = ", ".join(f"{k}={v}" for k, v in report["unverified"].items())
        lines.append(f"  not verifiable from the checkpoint (its names and shapes do not show it "
                     f"and no graph is saved beside it): {assumed}")
    print("\n".join(lines))
    return report


def _build_training(root_dir, strategy, segmenter_args, head, fine_tune_batch_norm, bn_momentum,
                    learning_rate, momentum, init):
    """N, its SGD optimizer, the resumable checkpoint's (step, manager, restored) and, when a fresh
    run starts from init = (init_checkpoint, reinit_logits, last_layers_contain_logits_only), the
    import report (else None); all made under `strategy`."""
    import deeplab_face
    init_checkpoint, reinit_logits, last_layers_contain_logits_only = init
    with strategy.scope():
        model = deeplab_face.build_segmenter(*segmenter_args, **(head or {}))
        configure_batch_norm(model, fine_tune_batch_norm, bn_momentum)
        optimizer = keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum)
        optimizer.build(model.trainable_variables)
        checkpoint = distribute.resumable_checkpoint(root_dir, strategy, model=model,
                                                     optimizer=optimizer)
        init_report = None
        if not checkpoint[2] and init_checkpoint:   # not restored: a fresh run
            init_report = _import_init_checkpoint(model, init_checkpoint, reinit_logits,
                                                  last_layers_contain_logits_only)
    return model, optimizer, checkpoint, init_report


def _make_train_step(model, optimizer, step, strategy, num_classes, weight_decay, learning_rate,
                     steps, learning_power):
    """One compiled SGD step on a (distributed) batch at the poly learning rate of `step`, which it
    advances; returns (loss, total loss with weight decay, learning rate)."""
    logits_model = model.logits_model  # frames -> upsampled logits (the softmax's input)
    variables = model.trainable_variables
    kernels = decayed_kernels(model)

    def replica_step(images, labels):   # one replica's part of the global batch
        with tf.GradientTape() as tape:
            logits = logits_model(images, training=True)
            pixels = tf.reduce_sum(tf.cast(valid_pixels(labels, num_classes), tf.float32))
            loss = pixel_cross_entropy(logits, labels, num_classes) * replica_share(pixels)
            decay = weight_decay * tf.add_n([tf.nn.l2_loss(k) for k in kernels]) if kernels else 0.0
            total = loss + replica_regularization(decay)
        grads = tape.gradient(total, variables)
        optimizer.apply_gradients(zip(grads, variables))   # all-reduces (sums) the gradients
        return loss, total

    @tf.function
    def train_step(images, labels):
        lr = poly_learning_rate(step, learning_rate, steps, learning_power)
        optimizer.learning_rate.assign(lr)
        loss, total = (strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                       for value in strategy.run(replica_step, args=(images, labels)))
        step.assign_add(1)
        return loss, total, lr

    return train_step


def _make_validate(model, prepared_dir, val_videos, crop_size, num_classes, batch_size,
                   val_max_frames, writer, step):
    """validate() -> single-scale validation mIoU, predictions compared at the prepared labels'
    size, also written to TensorBoard at the current step."""
    size, _ = read_manifest(prepared_dir)
    predict = make_predictor(model, (1.0,), False, (size, size))

    def validate():
        miou, _, _ = dataset_miou(predict, prepared_dir, val_videos, crop_size, num_classes,
                                  batch_size, val_max_frames)
        with writer.as_default():
            scalar_summary("val_miou", miou, step=int(step.numpy()))
        return miou
    return validate


def _run_steps(train_step, data, step, steps, manager, saved_step, writer, progbar, learning_rate,
               checkpoint_every, eval_every, validate):
    """Steps until `steps`, checkpointing every `checkpoint_every` and at the end, validating every
    `eval_every` (validate: None without validation videos); returns the last (loss, total loss)
    and the last periodic validation mIoU (None if none ran)."""
    loss = total = float("nan")
    val_miou = None
    while int(step.numpy()) < steps:
        images, labels = next(data)
        loss_t, total_t, lr_t = train_step(images, labels)
        current = int(step.numpy())
        loss, total = float(loss_t), float(total_t)
        log_scalars(writer, current, loss=loss, total_loss=total, learning_rate=float(lr_t))
        progbar.update(current, [("loss", loss), ("lr", float(lr_t))])
        check_finite(total, learning_rate, current)
        if checkpoint_every and current % checkpoint_every == 0:
            manager.save(checkpoint_number=current)
            saved_step = current
        if eval_every and validate and current % eval_every == 0 and current < steps:
            val_miou = validate()
    if saved_step != int(step.numpy()):
        manager.save(checkpoint_number=int(step.numpy()))
    return loss, total, val_miou


def train_eval(root_dir, prepared_dir, train_videos, val_videos=(), backbone=defaults.BACKBONE,
               crop_size=defaults.CROP_SIZE, output_stride=defaults.OUTPUT_STRIDE, batch_size=defaults.BATCH_SIZE,
               steps=defaults.STEPS, learning_rate=defaults.LEARNING_RATE, weight_decay=defaults.WEIGHT_DECAY,
               init_checkpoint=None, reinit_logits=True, seed=0,
               checkpoint_every=defaults.CHECKPOINT_EVERY, learning_power=LEARNING_POWER, momentum=MOMENTUM,
               eval_every=0, num_classes=NUM_CLASSES, split="decoder", fine_tune_batch_norm=None,
               augment=True, val_max_frames=None, verbose=1, bn_momentum=None, head=None,
               last_layers_contain_logits_only=True, strategy="default"):
    """Trains N into `root_dir` (resuming from `root_dir/ckpt`); returns its final numbers.

    eval_every: validation mIoU every so many steps (0: only at the end; needs val_videos).
    fine_tune_batch_norm: None = batch_size >= 12 or no init_checkpoint (module docstring).
    head: DeepLab-V3+ head options (build_segmenter; config.json records them resolved).
    reinit_logits / last_layers_contain_logits_only: how init_checkpoint is imported
    (init_import_mode; reinit_logits is TF DeepLab's `not initialize_last_layer`).
    strategy: "default", "mirrored", "multi_worker" or a tf.distribute.Strategy (module docstring);
    batch_size is the global batch. Only the chief writes root_dir's files.
    """
    if steps < 1 or batch_size < 1:
        raise ConfigError(f"--steps={steps} / --batch_size={batch_size}: must be positive")
    strategy = distribute.strategy_of(strategy)
    chief, out_dir = distribute.is_chief(strategy), distribute.write_dir(root_dir, strategy)
    keras.utils.set_random_seed(seed)
    train_videos, val_videos = resolve_videos(prepared_dir, train_videos, val_videos)
    if fine_tune_batch_norm is None:
        fine_tune_batch_norm = batch_size >= BN_FINE_TUNE_MIN_BATCH or not init_checkpoint
    if bn_momentum is None and not init_checkpoint:
        bn_momentum = SCRATCH_BN_MOMENTUM
    model, optimizer, (step, manager, restored), init_report = _build_training(
        root_dir, strategy, (backbone, num_classes, crop_size, output_stride, split), head,
        fine_tune_batch_norm, bn_momentum, learning_rate, momentum,
        (init_checkpoint, reinit_logits, last_layers_contain_logits_only))
    start_step = int(step.numpy())
    if start_step < steps and chief:
        clear_done(root_dir)  # training on past a finished stage

    train_step = _make_train_step(model, optimizer, step, strategy, num_classes, weight_decay,
                                  learning_rate, steps, learning_power)
    writer = tf.summary.create_file_writer(os.path.join(out_dir, "tensorboard"))
    # A resumed run continues the same data stream at its step: bit-identical to an uninterrupted run.
    dataset = distribute.distribute_dataset(strategy, training_dataset(
        prepared_dir, train_videos, batch_size, seed, crop_size, augment=augment, skip_batches=start_step))
    progbar = keras.utils.Progbar(steps, verbose=verbose, stateful_metrics=["lr"])
    validate = None   # validation on the chief only: the workers' models are the chief's
    if val_videos and chief:
        validate = _make_validate(model, prepared_dir, val_videos, crop_size, num_classes, batch_size,
                                  val_max_frames, writer, step)
    from deeplab_face.data.pipelines import checked_batches
    data = checked_batches(dataset, prepared_dir, train_videos)   # a corrupt TFRecord: DataError naming it
    loss, total, val_miou = _run_steps(train_step, data, step, steps, manager,
                                       start_step if restored else None, writer, progbar, learning_rate,
                                       checkpoint_every, eval_every, validate)
    if validate:
        val_miou = validate()
    writer.flush()
    results = dict(step=int(step.numpy()), resumed_from_step=start_step, loss=loss,
                   total_loss=total, val_miou=val_miou)
    if not chief:
        distribute.remove_scratch(root_dir, strategy)
        return results
    _write_stage(root_dir, model, results, strategy, prepared_dir, dict(
        train_videos=train_videos, val_videos=val_videos, batch_size=batch_size, steps=steps,
        learning_rate=learning_rate, learning_power=learning_power, momentum=momentum,
        weight_decay=weight_decay, init_checkpoint=init_checkpoint, reinit_logits=reinit_logits,
        last_layers_contain_logits_only=last_layers_contain_logits_only,
        init_import=init_report and {k: init_report[k] for k in (
            "mode", "loaded", "head", "reinitialised", "head_differences", "unverified")},
        seed=seed, fine_tune_batch_norm=fine_tune_batch_norm, bn_momentum=bn_momentum, augment=augment))
    return results


def _write_stage(root_dir, model, results, strategy, prepared_dir, settings):
    """hparams.json (the run's `settings`, its strategy and data), then the finished stage."""
    hparams = dict(settings, strategy=distribute.strategy_name(strategy),
                   replicas=strategy.num_replicas_in_sync, prepared_dir=os.path.abspath(prepared_dir))
    atomic.write_json(os.path.join(root_dir, "hparams.json"), hparams, indent=2)
    finish_stage(root_dir, model, model.segmenter_args, done_text=json.dumps(atomic.jsonable(results)))


FLAGS = flags.FLAGS


# Kept whole: one flag per statement, in --help's order.
def define_flags():
    """Flags are defined only when run as a command, so that importing this module (as
    eval.reproduce does, next to other stage commands) cannot clash with their flag names."""
    flags.DEFINE_string("workdir", None, "Stage directory: ckpt/, tensorboard/, config.json, "
                        "final.weights.h5, DONE. Re-running resumes from ckpt/.")
    flags.DEFINE_string("prepared_dir", None, "Prepared TFRecords (python -m deeplab_face.prepare_300vw).")
    flags.DEFINE_list("train_videos", [], "Training video ids (default: all in the manifest minus "
                      "--val_videos).")
    flags.DEFINE_list("val_videos", [], "Validation video ids (validation mIoU in TensorBoard).")
    flags.DEFINE_enum("backbone", defaults.BACKBONE, ["xception_65", "resnet_v1_50_beta",
                      "mobilenet_v2", "fcn8s_vgg16", "deeplab_v2_vgg16"], "Network N.")
    flags.DEFINE_integer("output_stride", defaults.OUTPUT_STRIDE,
                         "Backbone output stride (8 or 16; VGG models: fixed 8).")
    flags.register_validator("output_stride", lambda v: v in (8, 16), "--output_stride must be 8 or 16")
    flags.DEFINE_integer("crop_size", defaults.CROP_SIZE, "Training crop S = 16k + 1 (prepared data is resized if "
                         "its size differs).", lower_bound=17)
    flags.DEFINE_string("split", "decoder", "feature_net/task_net split point: decoder or logits.")
    # DeepLab-V3+ head, TF DeepLab common.py's names (README "Model-zoo checkpoints" lists the
    # zoo's settings); the defaults build this project's N: ASPP + decoder.
    flags.DEFINE_list("atrous_rates", None, "ASPP atrous rates (default 6,12,18 at output stride "
                      "16, 12,24,36 at 8); empty (--atrous_rates=) = no atrous branches.")
    flags.DEFINE_string("decoder_output_stride", None, "Decoder output stride: 4 (default) or "
                        "none (no decoder, logits at the output stride).")
    flags.DEFINE_list("multi_grid", None, "Unit rates of the trunk's last block (default 1,2,4 "
                      "for resnet_v1_50_beta, 1,1,1 for xception_65; none for mobilenet_v2).")
    flags.DEFINE_boolean("aspp_with_batch_norm", True, "ASPP module with batch norm (false: no "
                         "ASPP module, one summed logits conv per atrous rate).")
    flags.DEFINE_boolean("aspp_with_separable_conv", True, "Separable atrous ASPP branches.")
    flags.DEFINE_boolean("decoder_use_separable_conv", True, "Separable decoder convolutions.")
    flags.DEFINE_integer("batch_size", defaults.BATCH_SIZE, "Frames per step: the global batch, split across the "
                         "replicas under --strategy.", lower_bound=1)
    flags.DEFINE_integer("steps", defaults.STEPS, "Training steps (the poly schedule reaches 0 here).", lower_bound=1)
    flags.DEFINE_float("learning_rate", defaults.LEARNING_RATE,
                       "Base learning rate of the poly schedule.", lower_bound=0.0)
    flags.DEFINE_float("learning_power", LEARNING_POWER, "Poly schedule power.", lower_bound=0.0)
    flags.DEFINE_float("momentum", MOMENTUM, "SGD momentum.", lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_float("weight_decay", defaults.WEIGHT_DECAY, "L2 weight decay on conv kernels (slim l2_regularizer).",
                       lower_bound=0.0)
    flags.DEFINE_string("init_checkpoint", None, "TF1 checkpoint (model zoo / slim ImageNet) to start from.")
    # TF DeepLab's names; the defaults keep this command's fine-tuning default (TF's are
    # true / false): every --init_checkpoint weight but the logits.
    flags.DEFINE_boolean("initialize_last_layer", False, "Also restore the logits from "
                         "--init_checkpoint (all-or-nothing import, same classes needed). "
                         "False: the trunk and the matching head are restored, the logits "
                         "start fresh (e.g. 21 PASCAL classes -> 5 face classes).")
    flags.DEFINE_boolean("last_layers_contain_logits_only", True, "With "
                         "--initialize_last_layer=false: the fresh last layers are the logits "
                         "only; false: the whole head (image_pooling, aspp, concat_projection, "
                         "decoder, logits) starts fresh and only the trunk is restored.")
    flags.DEFINE_enum("fine_tune_batch_norm", "auto", ["auto", "true", "false"],
                      "Train batch norm: auto = batch >= 12 or no --init_checkpoint.")
    flags.DEFINE_float("bn_momentum", None, "Batch-norm decay while training (default: "
                       f"{SCRATCH_BN_MOMENTUM} from scratch, the backbone's own with --init_checkpoint).",
                       lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_boolean("augment", True, "Random scale/flip augmentation of the training frames.")
    flags.DEFINE_integer("seed", 0, "Seed of initialisation, data order and augmentation.", lower_bound=0)
    flags.DEFINE_integer("checkpoint_every", defaults.CHECKPOINT_EVERY,
                         "Save a resumable checkpoint every so many steps "
                         "(0: only at the end).", lower_bound=0)
    flags.DEFINE_integer("eval_every", 0, "Validation mIoU every so many steps (0: only at the end).",
                         lower_bound=0)
    flags.DEFINE_integer("val_max_frames", None, "At most this many frames per validation video.",
                         lower_bound=1)
    distribute.define_strategy_flag()
    flags.mark_flags_as_required(["workdir", "prepared_dir"])

def head_flags():
    """build_segmenter head options from the command line (absent list flags: the defaults)."""
    head = {k: FLAGS[k].value for k in ("aspp_with_batch_norm", "aspp_with_separable_conv",
                                        "decoder_use_separable_conv")}
    for key in ("atrous_rates", "multi_grid"):
        if FLAGS[key].value is not None:
            head[key] = FLAGS[key].value
    stride = FLAGS.decoder_output_stride
    if stride is not None:
        if stride.strip().lower() in ("", "none"):
            head["decoder_output_stride"] = None
        elif stride.strip().isdigit():
            head["decoder_output_stride"] = int(stride)
        else:
            raise ConfigError(f"--decoder_output_stride: {stride!r} is neither 4 nor none")
    return head


def main(argv):
    del argv
    strategy = distribute.make_strategy(FLAGS.strategy)   # first: multi_worker needs a fresh runtime
    results = train_eval(
        FLAGS.workdir, FLAGS.prepared_dir, FLAGS.train_videos, FLAGS.val_videos,
        backbone=FLAGS.backbone, crop_size=FLAGS.crop_size, output_stride=FLAGS.output_stride,
        batch_size=FLAGS.batch_size, steps=FLAGS.steps, learning_rate=FLAGS.learning_rate,
        weight_decay=FLAGS.weight_decay, init_checkpoint=FLAGS.init_checkpoint,
        reinit_logits=not FLAGS.initialize_last_layer,
        last_layers_contain_logits_only=FLAGS.last_layers_contain_logits_only, head=head_flags(),
        seed=FLAGS.seed, checkpoint_every=FLAGS.checkpoint_every,
        learning_power=FLAGS.learning_power, momentum=FLAGS.momentum, eval_every=FLAGS.eval_every,
        split=FLAGS.split, augment=FLAGS.augment, val_max_frames=FLAGS.val_max_frames,
        fine_tune_batch_norm={"auto": None, "true": True, "false": False}[FLAGS.fine_tune_batch_norm],
        bn_momentum=FLAGS.bn_momentum, strategy=strategy)
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
