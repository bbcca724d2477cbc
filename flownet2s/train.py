"""Fine-tune the flow net F on key-current pairs (§4.2): `python -m flownet2s.train`.

"As suggested in DFF": N's feature_net and task_net are frozen; F (with its scale-field head)
is trained end to end through the propagation, loss = pixel cross-entropy of
task_net(warp(feature_net(I_k), F(I_k, I_i)) * S) against the current frame's label (or, with
--pseudo_labels, against N's own prediction on I_i, where labels are missing). Pairs are 1-30
frames apart (reconstructed from §4.2 / paper.md §1). Adam, constant learning rate
(reconstructed: the paper gives no schedule).

F starts from random weights, a TF1 checkpoint (--init_checkpoint) or a flow pretraining stage
(--init_stage, flownet2s.pretrain: FlowNet's supervised start on pairs with known flow).

Resumable: `<workdir>/ckpt` holds F, the optimizer and the step. When done, writes `hparams.json`,
then `config.json` (build_flownet arguments + the DFF options it was trained with),
`final.weights.h5` and `DONE` (stage.finish_stage).

`--strategy` (deeplab_face.distribute): `--batch_size` is the global batch of pairs, split across
the replicas; the loss is the global batch's pixel mean and the strategy sums the gradients, so a
step equals the one-device step on the same batch (F has no batch norm; N's runs in inference mode).
"""
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

from deeplab_face import atomic, cli, distribute  # noqa: E402
from deeplab_face.stage import clear_done, finish_stage  # noqa: E402
from deeplab_face.errors import ConfigError  # noqa: E402
from deeplab_face.segmentation_metrics import confusion_matrix, mean_iou  # noqa: E402
from deeplab_face.training import (check_finite, log_scalars, pixel_cross_entropy,  # noqa: E402
                                   replica_share, resolve_videos, scalar_summary, valid_pixels)
from flownet2s import defaults  # noqa: E402
from flownet2s.dff import MAX_GAP, MIN_GAP, DeepFeatureFlow, flow_input_size  # noqa: E402
from flownet2s.model import (DEFAULT_NORMALIZATION, FLOWNET2_S_WIDTH, NORMALIZATIONS, build_flownet,  # noqa: E402
                             copy_flow_weights, load_flownet)



def finetune_logits(dff, key_image, current_image, training=True):
    """Logits (B, S, S, C) of the propagated current frame; gradients reach F only."""
    key_features = tf.stop_gradient(dff.feature_net(key_image, training=False))
    out = dff.flow_outputs(key_image, current_image, training=training)
    features = dff.warp_features(key_features, out["flow"], out["scale"])
    if dff.task_logits_net is not None:
        return dff.task_logits_net(features, training=False)
    return tf.math.log(tf.maximum(dff.task_net(features, training=False), 1e-8))


def make_train_step(dff, optimizer, num_classes, pseudo_labels=False, strategy=None):
    """One compiled optimisation step of F on a pair batch; returns the loss. Under `strategy`
    (default: the current one) the inputs are distributed batches (distribute.distribute_dataset)."""
    strategy = strategy or tf.distribute.get_strategy()
    variables = dff.flow_net.trainable_variables

    def replica_step(key_image, current_image, current_label):
        if pseudo_labels:  # N's own prediction on the current frame is the target
            current_label = tf.argmax(dff.segmenter(current_image, training=False), axis=-1)
        with tf.GradientTape() as tape:
            logits = finetune_logits(dff, key_image, current_image)
            pixels = tf.reduce_sum(tf.cast(valid_pixels(current_label, num_classes), tf.float32))
            # this replica's share of the global batch's pixel mean (training.replica_share)
            loss = pixel_cross_entropy(logits, current_label, num_classes) * replica_share(pixels)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))   # all-reduces (sums) the gradients
        return loss

    @tf.function
    def train_step(key_image, current_image, current_label):
        losses = strategy.run(replica_step, args=(key_image, current_image, current_label))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    return train_step


def _resize_pairs(crop_size):
    """Prepared data at another size than N's crop: bilinear frames, nearest labels."""
    def resize(batch):
        out = dict(batch)
        for name in ("key_image", "current_image"):
            out[name] = tf.image.resize(batch[name], (crop_size, crop_size), method="bilinear")
        out["current_label"] = tf.image.resize(batch["current_label"][..., None], (crop_size, crop_size),
                                               method="nearest")[..., 0]
        return out
    return resize


def pairs(prepared_dir, video_ids, batch_size, seed, crop_size, min_gap, max_gap, repeat=True, skip_batches=0):
    from deeplab_face.data.pipelines import pair_dataset
    from deeplab_face.data.tfrecords import read_manifest
    size = int(read_manifest(prepared_dir)["size"])
    ds = pair_dataset(prepared_dir, video_ids, batch_size, seed, min_gap=min_gap, max_gap=max_gap,
                      repeat=repeat, skip_batches=skip_batches)
    if size != crop_size:
        ds = ds.map(_resize_pairs(crop_size), num_parallel_calls=tf.data.AUTOTUNE)
    return ds


def validation_miou(dff, prepared_dir, video_ids, batch_size, num_classes, max_pairs, seed,
                    min_gap=MIN_GAP, max_gap=MAX_GAP):
    """mIoU (%) of propagated predictions on up to `max_pairs` validation pairs."""
    from deeplab_face.data.pipelines import checked_batches
    confusion = np.zeros((num_classes, num_classes), np.int64)
    seen = 0
    for batch in checked_batches(pairs(prepared_dir, video_ids, batch_size, seed, dff.crop_size, min_gap,
                                       max_gap, repeat=False), prepared_dir, video_ids):
        key_features = dff.key(batch["key_image"])["features"]
        probs = dff.propagate(batch["key_image"], key_features, batch["current_image"])["probs"]
        pred = np.argmax(keras.ops.convert_to_numpy(probs), axis=-1)
        confusion += confusion_matrix(pred, batch["current_label"].numpy(), num_classes)
        seen += len(pred)
        if seen >= max_pairs:
            break
    return 100.0 * mean_iou(confusion)


def init_from_stage(flow_net, stage_dir):
    """F's FlowNetS layers from a pretraining stage (its scale head stays at the identity start)."""
    pretrained = load_flownet(stage_dir)
    for name in ("width", "normalization"):
        theirs, ours = pretrained.flownet_args[name], flow_net.flownet_args[name]
        if theirs != ours:
            raise ConfigError(f"--init_stage={stage_dir}: {name} {theirs!r} does not match --{name}={ours!r}")
    return copy_flow_weights(pretrained, flow_net, what=f"--init_stage={stage_dir}")


def _build_finetuning(root_dir, strategy, segmenter_dir, width, flow_resolution, scale_head,
                      normalization, border, learning_rate, init_checkpoint, init_stage):
    """The DeepFeatureFlow of N (frozen) and F, F's build_flownet arguments, its Adam optimizer and
    the resumable checkpoint's step and manager, made under `strategy`. A fresh run starts F from
    init_checkpoint or init_stage when given."""
    from deeplab_face import load_segmenter
    with strategy.scope():
        segmenter = load_segmenter(segmenter_dir)
        for layer in (segmenter.feature_net, segmenter.task_net):
            layer.trainable = False   # §4.2: N_feat and N_task frozen
        crop_size = int(segmenter.input_shape[1])
        build_args = dict(width=float(width), feature_channels=int(segmenter.feature_net.output_shape[-1]),
                          input_size=flow_input_size(crop_size, flow_resolution), scale_head=scale_head,
                          normalization=normalization)
        flow_net = build_flownet(**build_args)
        dff = DeepFeatureFlow(segmenter, flow_net, flow_resolution=flow_resolution, border=border)
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
        optimizer.build(flow_net.trainable_variables)
        step, manager, restored = distribute.resumable_checkpoint(root_dir, strategy, model=flow_net,
                                                                  optimizer=optimizer)
        if not restored and init_checkpoint:
            from flownet2s.checkpoint import load_tf1_checkpoint
            load_tf1_checkpoint(flow_net, init_checkpoint)
        if not restored and init_stage:
            init_from_stage(flow_net, init_stage)
    return dff, build_args, optimizer, step, manager


def _run_steps(train_step, data, step, steps, manager, writer, progbar, learning_rate, checkpoint_every):
    """Steps until `steps`, checkpointing every `checkpoint_every` and at the end; returns the
    last loss."""
    loss = float("nan")
    while int(step.numpy()) < steps:
        batch = next(data)
        loss = float(train_step(batch["key_image"], batch["current_image"], batch["current_label"]))
        step.assign_add(1)
        current = int(step.numpy())
        log_scalars(writer, current, loss=loss, learning_rate=learning_rate)
        progbar.update(current, [("loss", loss)])
        check_finite(loss, learning_rate, current)
        if checkpoint_every and current % checkpoint_every == 0:
            manager.save(checkpoint_number=current)
    manager.save(checkpoint_number=int(step.numpy()))
    return loss


def _logged_validation_miou(dff, writer, step, prepared_dir, val_videos, batch_size, num_classes,
                            val_pairs, seed, min_gap, max_gap):
    """validation_miou, also written to TensorBoard at `step`."""
    val_miou = validation_miou(dff, prepared_dir, val_videos, batch_size, num_classes, val_pairs,
                               seed, min_gap, max_gap)
    with writer.as_default():
        scalar_summary("val_miou", val_miou, step=step)
    return val_miou


def train_eval(root_dir, prepared_dir, segmenter_dir, train_videos, val_videos=(),
               width=FLOWNET2_S_WIDTH, steps=defaults.TRAIN_STEPS, batch_size=defaults.TRAIN_BATCH_SIZE,
               learning_rate=defaults.TRAIN_LEARNING_RATE,
               min_gap=MIN_GAP, max_gap=MAX_GAP, flow_resolution="full", init_checkpoint=None,
               seed=0, checkpoint_every=defaults.TRAIN_CHECKPOINT_EVERY, pseudo_labels=False,
               normalization=DEFAULT_NORMALIZATION,
               scale_head="dff", border="zeros", val_pairs=defaults.TRAIN_VAL_PAIRS, verbose=1, init_stage=None,
               strategy="default"):
    """Fine-tunes F into `root_dir` (resuming from `root_dir/ckpt`); returns its final numbers.

    init_stage: a finished flownet2s.pretrain stage whose FlowNetS weights start F (any input
    size: weights are size-free; its width and normalisation must match).
    strategy: "default", "mirrored", "multi_worker" or a tf.distribute.Strategy; batch_size is the
    global batch. Only the chief writes root_dir's files (deeplab_face.distribute).
    """
    if steps < 1 or batch_size < 1:
        raise ConfigError(f"--steps={steps} / --batch_size={batch_size}: must be positive")
    if init_checkpoint and init_stage:
        raise ConfigError("--init_checkpoint and --init_stage: give one starting point, not both")
    atomic.check_output_dir(root_dir, "--workdir")   # before any work: a bad folder fails at once
    strategy = distribute.strategy_of(strategy)
    chief, out_dir = distribute.is_chief(strategy), distribute.write_dir(root_dir, strategy)
    keras.utils.set_random_seed(seed)
    train_videos, val_videos = resolve_videos(prepared_dir, train_videos, val_videos)
    dff, build_args, optimizer, step, manager = _build_finetuning(
        root_dir, strategy, segmenter_dir, width, flow_resolution, scale_head, normalization, border,
        learning_rate, init_checkpoint, init_stage)
    crop_size, num_classes = dff.crop_size, int(dff.segmenter.output_shape[-1])
    start_step = int(step.numpy())
    if start_step < steps and chief:
        clear_done(root_dir)  # training on past a finished stage

    train_step = make_train_step(dff, optimizer, num_classes, pseudo_labels, strategy)
    writer = tf.summary.create_file_writer(os.path.join(out_dir, "tensorboard"))
    # A resumed run continues the same pair stream at its step: bit-identical to an uninterrupted run.
    from deeplab_face.data.pipelines import checked_batches
    data = checked_batches(distribute.distribute_dataset(strategy, pairs(
        prepared_dir, train_videos, batch_size, seed, crop_size, min_gap, max_gap, skip_batches=start_step)),
        prepared_dir, train_videos)
    progbar = keras.utils.Progbar(steps, verbose=verbose)
    loss = _run_steps(train_step, data, step, steps, manager, writer, progbar, learning_rate,
                      checkpoint_every)
    val_miou = None
    if val_videos and chief:   # the workers' F is the chief's
        val_miou = _logged_validation_miou(dff, writer, int(step.numpy()), prepared_dir, val_videos,
                                           batch_size, num_classes, val_pairs, seed, min_gap, max_gap)
    writer.flush()
    results = dict(step=int(step.numpy()), resumed_from_step=start_step, loss=loss, val_miou=val_miou)
    if not chief:
        distribute.remove_scratch(root_dir, strategy)
        return results

    hparams = dict(segmenter_dir=os.path.abspath(segmenter_dir), train_videos=train_videos,
                   val_videos=val_videos, steps=steps, batch_size=batch_size,
                   learning_rate=learning_rate, min_gap=min_gap, max_gap=max_gap,
                   init_checkpoint=init_checkpoint, seed=seed, pseudo_labels=pseudo_labels,
                   init_stage=os.path.abspath(init_stage) if init_stage else None,
                   strategy=distribute.strategy_name(strategy), replicas=strategy.num_replicas_in_sync,
                   prepared_dir=os.path.abspath(prepared_dir))
    atomic.write_json(os.path.join(root_dir, "hparams.json"), hparams, indent=2)
    config = dict(build_args, flow_resolution=flow_resolution, border=border)
    finish_stage(root_dir, dff.flow_net, config, done_text=json.dumps(atomic.jsonable(results)))
    return results


FLAGS = flags.FLAGS


def define_flags():
    """Defined only when run as a command (eval.reproduce imports several stage modules)."""
    flags.DEFINE_string("workdir", None, "Stage directory: ckpt/, tensorboard/, config.json, "
                        "final.weights.h5, DONE. Re-running resumes from ckpt/.")
    flags.DEFINE_string("prepared_dir", None, "Prepared TFRecords (python -m deeplab_face.prepare_300vw).")
    flags.DEFINE_string("segmenter_dir", None, "Finished segmentation stage (config.json + "
                        "final.weights.h5): N, frozen.")
    flags.DEFINE_list("train_videos", [], "Training video ids (default: all but --val_videos).")
    flags.DEFINE_list("val_videos", [], "Validation video ids (propagated mIoU at the end).")
    flags.DEFINE_float("width", FLOWNET2_S_WIDTH, "FlowNetS width: 0.375 = FlowNet2-s, 1.0 = FlowNet2-S.",
                       lower_bound=0.01, upper_bound=4.0)
    flags.DEFINE_integer("steps", defaults.TRAIN_STEPS, "Training steps.", lower_bound=1)
    flags.DEFINE_integer("batch_size", defaults.TRAIN_BATCH_SIZE, "Pairs per step: the global batch, split across the "
                         "replicas under --strategy.", lower_bound=1)
    flags.DEFINE_float("learning_rate", defaults.TRAIN_LEARNING_RATE, "Adam learning rate (constant).", lower_bound=0.0)
    flags.DEFINE_integer("min_gap", MIN_GAP, "Smallest key-current distance in frames.", lower_bound=1)
    flags.DEFINE_integer("max_gap", MAX_GAP, "Largest key-current distance in frames (§4.2: 30).",
                         lower_bound=1)
    flags.DEFINE_enum("flow_resolution", "full", ["full", "half"], "Flow-net input: largest multiple "
                      "of 64 <= S (full) or half of it (DFF).")
    flags.DEFINE_string("init_checkpoint", None, "TF1 FlowNet2-S (FlowNetS/...) or DVSNet "
                        "(FlowNets/...) checkpoint to start from.")
    flags.DEFINE_string("init_stage", None, "Finished flow pretraining stage (python -m "
                        "flownet2s.pretrain) to start F from; any input size.")
    flags.DEFINE_boolean("pseudo_labels", False, "Target = N's prediction on the current frame "
                         "instead of its label.")
    flags.DEFINE_enum("normalization", DEFAULT_NORMALIZATION, sorted(NORMALIZATIONS),
                      "Flow-net input normalisation (follow the weights' origin: scale_only for "
                      "flownet2-tf / DVSNet checkpoints).")
    flags.DEFINE_enum("scale_head", "dff", ["dff", "dvsnet"], "Scale-field head: 1x1 (DFF) or 3x3 "
                      "predict_scale (DVSNet).")
    flags.DEFINE_enum("border", "zeros", ["zeros", "clamp"], "Warp border: zeros (DFF) or clamp (DVSNet).")
    flags.DEFINE_integer("val_pairs", defaults.TRAIN_VAL_PAIRS,
                         "Validation pairs for the final propagated mIoU.", lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Seed of initialisation and pair sampling.", lower_bound=0)
    flags.DEFINE_integer("checkpoint_every", defaults.TRAIN_CHECKPOINT_EVERY,
                         "Save a resumable checkpoint every so many steps "
                         "(0: only at the end).", lower_bound=0)
    distribute.define_strategy_flag()
    flags.mark_flags_as_required(["workdir", "prepared_dir", "segmenter_dir"])
    flags.mark_flags_as_mutual_exclusive(["init_checkpoint", "init_stage"])
    flags.register_multi_flags_validator(
        ["min_gap", "max_gap"], lambda f: f["min_gap"] <= f["max_gap"],
        "--min_gap must not exceed --max_gap")


def main(argv):
    del argv
    strategy = distribute.make_strategy(FLAGS.strategy)   # first: multi_worker needs a fresh runtime
    results = train_eval(
        FLAGS.workdir, FLAGS.prepared_dir, FLAGS.segmenter_dir, FLAGS.train_videos, FLAGS.val_videos,
        width=FLAGS.width, steps=FLAGS.steps, batch_size=FLAGS.batch_size,
        learning_rate=FLAGS.learning_rate, min_gap=FLAGS.min_gap, max_gap=FLAGS.max_gap,
        flow_resolution=FLAGS.flow_resolution, init_checkpoint=FLAGS.init_checkpoint, seed=FLAGS.seed,
        checkpoint_every=FLAGS.checkpoint_every, pseudo_labels=FLAGS.pseudo_labels,
        normalization=FLAGS.normalization, scale_head=FLAGS.scale_head, border=FLAGS.border,
        val_pairs=FLAGS.val_pairs, init_stage=FLAGS.init_stage, strategy=strategy)
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
