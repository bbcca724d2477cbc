"""Pretrain the flow net F on pairs with known flow: `python -m flownet2s.pretrain --root_dir=D`.

FlowNet 2.0's released weights were trained on FlyingChairs (then FlyingThings3D) with end-point
error supervision; they cannot be downloaded here, so this does what they were made from, on the
FlyingChairs-style pairs of flownet2s.synthetic_flow, generated on the fly. Fine-tuning on faces
(§4.2, flownet2s.train --init_stage) then starts from a net whose flow and Conv6 features know
motion instead of from random weights.

Loss (FlowNet §3, FlowNet 2.0 Caffe `train.prototxt`): at each of predict_flow6 .. predict_flow2,
the mean end-point error between the raw prediction and the ground truth divided by 20 (FlowNet's
flow scale) and average-pooled to that scale (flownet2-pytorch `MultiScale`), weighted
0.32, 0.08, 0.02, 0.01, 0.005. Adam at a constant 1e-4 (FlowNet 2.0's S_long starts there). The
net starts as FlowNet's did (MSRA weights; here also bilinear flow upsamplings, see below).

What CPU budgets buy (measured on the shared 2-core CPU, load 7-11, width 0.375): input 128, batch 4,
100 steps (~90 s of process CPU, 0.7-0.9 steps/s wall) take the AEE on held-out pairs from 10.7 to
6.9 px and on face pairs from 8.4 to 5.0, i.e. to the zero-flow level (6.84, 4.95): the net learns
the size of motions, not yet their direction. 800 steps at input 64 (batch 8, lr 1e-3) get ~4 %
below zero flow, and lr 1e-3 starts to spike there: FlowNetS' early plateau, which FlowNet leaves
after thousands of steps at 1e-4. Real gains need a GPU run of that length.

Reported: average end-point error (AEE, input pixels, the flow upsampled to the input as
DeepFeatureFlow resizes it) on held-out generated pairs (a fixed validation seed, never a training
one) before and after, the zero-flow AEE of the same pairs, and the same on synthetic face pairs
cropped as prepare_300vw crops them (deeplab_face.data.synthetic_flow_gt; non-occluded pixels).

Resumable (`<root_dir>/ckpt`: F, optimizer, step; the "before" numbers are kept in
`pretrain_before.json`). When done, writes the stage the other trainings write (`config.json` =
build_flownet arguments, `final.weights.h5`, `hparams.json`, `DONE`), so `flownet2s.load_flownet`
loads it. `--strategy` (deeplab_face.distribute): `--batch_size` is the global batch, split across
the replicas (each replica's loss weighted by its share of the examples, gradients summed); only the
chief measures the AEE and writes the stage.
"""
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

from deeplab_face import atomic, cli, distribute  # noqa: E402
from deeplab_face.errors import CheckpointError, ConfigError  # noqa: E402
from deeplab_face.stage import clear_done, finish_stage  # noqa: E402
from deeplab_face.training import check_finite, log_scalars, replica_share, scalar_summary  # noqa: E402
from deeplab_face.models.layers import resize_align_corners  # noqa: E402
from flownet2s import defaults  # noqa: E402
from flownet2s.dff import RESIZE  # noqa: E402
from flownet2s.model import (DEFAULT_NORMALIZATION, FLOW_SCALE, FLOWNET2_S_WIDTH, INPUT_MULTIPLE,  # noqa: E402
                             MULTISCALE_LEVELS, NORMALIZATIONS, build_flownet, scale_head_layer_names)
from flownet2s import synthetic_flow  # noqa: E402
from flownet2s.synthetic_flow import MAX_MOTION, make_pairs, pair_stream  # noqa: E402

# FlowNet's multi-scale loss weights, predict_flow6 .. predict_flow2 (module docstring).
FLOW_LOSS_WEIGHTS = (0.32, 0.08, 0.02, 0.01, 0.005)
VALIDATION_SEED = 20200613       # held-out generated pairs: the same for every run and --seed
FACE_VALIDATION_SEED = 20200614  # held-out synthetic face videos (make_synthetic uses 1000*seed+i)
BEFORE = "pretrain_before.json"
EVAL_BATCH = 8


def msra_initialization(flow_net, seed):
    """FlowNet's start: MSRA (He) weights and zero biases (the Caffe nets' `msra` filler; its ports
    use kaiming_normal). Keras' default Glorot shrinks the activations about 2x per LeakyReLU layer,
    so conv6_1 starts ~1e-4 and the coarse scales, which carry most of the loss weight, barely learn
    (measured: std 0.09 at conv1 -> 1.5e-4 at conv6_1 with Glorot, 0.2 -> 0.02 with MSRA).
    The scale head keeps its identity start; the flow upsamplings are set by bilinear_flow_upsampling."""
    generator = keras.random.SeedGenerator(seed)
    skip = set(scale_head_layer_names(flow_net))
    for layer in flow_net.layers:
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)) or layer.name in skip:
            continue
        weights = layer.get_weights()
        weights[0] = keras.ops.convert_to_numpy(keras.initializers.HeNormal(seed=generator)(weights[0].shape))
        weights[1:] = [np.zeros_like(w) for w in weights[1:]]
        layer.set_weights(weights)


def bilinear_flow_upsampling(flow_net):
    """Starts every `upsample_flowNtoM` (4x4 stride-2 deconvolution, 2 -> 2 channels) as bilinear
    2x upsampling of each flow channel, as FCN starts its deconvolutions: a coarse prediction then
    reaches the finest output from the first step, instead of through random kernels. Flows are in
    input pixels at every scale (/20), so no value scaling is needed."""
    taps = np.array([0.25, 0.75, 0.75, 0.25], np.float32)
    kernel = np.zeros((4, 4, 2, 2), np.float32)
    for channel in range(2):
        kernel[:, :, channel, channel] = np.outer(taps, taps)
    for layer in flow_net.layers:
        if layer.name.startswith("upsample_flow") and layer.weights:
            layer.set_weights([kernel])


def level_targets(flow, input_size):
    """Ground truth (s, s, 2) in input pixels -> FlowNet's targets, predict_flow6 .. 2 order:
    flow / 20 average-pooled to stride 2^level."""
    flow = np.asarray(flow, np.float32) / np.float32(FLOW_SCALE)
    return tuple(cv2.resize(flow, (input_size >> level, input_size >> level), interpolation=cv2.INTER_AREA)
                 for level in MULTISCALE_LEVELS)


def multiscale_loss(outputs, targets, weights=FLOW_LOSS_WEIGHTS):
    """sum_l w_l * mean end-point error at predict_flow_l (both in flow / 20 units)."""
    total = 0.0
    for level, target, weight in zip(MULTISCALE_LEVELS, targets, weights):
        diff = outputs[f"predict_flow{level}"] - target
        total += weight * tf.reduce_mean(tf.sqrt(tf.reduce_sum(tf.square(diff), axis=-1) + 1e-12))
    return total


def flow_variables(flow_net):
    """FlowNetS' trainable variables: no loss reaches the scale field here."""
    skip = set(scale_head_layer_names(flow_net))
    return [v for layer in flow_net.layers if layer.name not in skip for v in layer.trainable_variables]


def make_train_step(flow_net, optimizer, weights=FLOW_LOSS_WEIGHTS, strategy=None):
    """One compiled Adam step on (key, current, targets); returns (loss, training AEE at
    predict_flow2 in input pixels). `flow_net` is built with multiscale=True. Under `strategy`
    (default: the current one) the inputs are distributed batches (distribute.distribute_dataset)."""
    strategy = strategy or tf.distribute.get_strategy()
    variables = flow_variables(flow_net)

    def replica_step(key, current, targets):
        share = replica_share(tf.shape(key)[0])   # every mean is over examples x equal-size maps
        with tf.GradientTape() as tape:
            outputs = flow_net([key, current], training=True)
            loss = multiscale_loss(outputs, targets, weights) * share
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))   # summed
        epe = tf.reduce_mean(tf.norm(outputs["predict_flow2"] - targets[-1], axis=-1)) * FLOW_SCALE
        return loss, epe * share

    @tf.function
    def train_step(key, current, targets):
        return tuple(strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                     for value in strategy.run(replica_step, args=(key, current, targets)))

    return train_step


def stack_targets(flows, input_size):
    """level_targets of a batch of flows (N, s, s, 2): a tuple of (N, ...) arrays, predict_flow6 first."""
    return tuple(np.stack(level) for level in zip(*[level_targets(f, input_size) for f in flows]))


def _dataset(input_size, batch_size, seed, max_motion, skip_pairs=0):
    """Batches (key, current, (target6, ..., target2)) of freshly generated pairs. `skip_pairs`: the
    stream's first pairs are generated and dropped, so a resumed training sees exactly the pairs an
    uninterrupted one would (about 5 ms a pair at 64 px)."""
    def examples():
        for index, pair in enumerate(pair_stream(input_size, seed, max_motion=max_motion)):
            if index < skip_pairs:
                continue
            yield (pair["key"].astype(np.float32), pair["current"].astype(np.float32),
                   level_targets(pair["flow"], input_size))

    image = tf.TensorSpec((input_size, input_size, 3), tf.float32)
    targets = tuple(tf.TensorSpec((input_size >> level, input_size >> level, 2), tf.float32)
                    for level in MULTISCALE_LEVELS)
    ds = tf.data.Dataset.from_generator(examples, output_signature=(image, image, targets))
    return ds.batch(batch_size).prefetch(2)   # generation overlaps the training step


def average_epe(flow_net, pairs, use_valid=False):
    """AEE in input pixels of `flow_net` on stacked `pairs` (key, current, flow[, valid]): the
    stride-4 flow resized to the input (align-corners, as DeepFeatureFlow resizes it); over all
    pixels (dense ground truth, FlyingChairs' AEE) or, with use_valid, the non-occluded ones."""
    size = pairs["flow"].shape[1:3]
    total = count = 0.0
    for start in range(0, len(pairs["flow"]), EVAL_BATCH):
        batch = slice(start, start + EVAL_BATCH)
        out = flow_net([pairs["key"][batch].astype(np.float32),
                        pairs["current"][batch].astype(np.float32)], training=False)
        flow = keras.ops.convert_to_numpy(resize_align_corners(out["flow"], size, method=RESIZE))
        epe = np.linalg.norm(flow - pairs["flow"][batch], axis=-1)
        weight = pairs["valid"][batch] if use_valid else np.ones_like(epe, bool)
        total += float(epe[weight].sum())
        count += float(weight.sum())
    return total / max(count, 1.0)


def zero_epe(pairs, use_valid=False):
    """AEE of predicting no motion: the mean ground-truth magnitude."""
    magnitude = np.linalg.norm(pairs["flow"], axis=-1)
    return float(magnitude[pairs["valid"]].mean() if use_valid else magnitude.mean())


def _check(width, input_size, steps, batch_size, learning_rate, checkpoint_every, val_pairs,
           face_pairs, face_crop_size, normalization):
    if not (width > 0):
        raise ConfigError(f"--width={width}: must be positive")
    if input_size < INPUT_MULTIPLE or input_size % INPUT_MULTIPLE:
        raise ConfigError(f"--input_size={input_size}: must be a positive multiple of {INPUT_MULTIPLE}")
    for flag, value in (("steps", steps), ("batch_size", batch_size), ("val_pairs", val_pairs)):
        if value < 1:
            raise ConfigError(f"--{flag}={value}: must be at least 1")
    if not (learning_rate > 0):
        raise ConfigError(f"--learning_rate={learning_rate}: must be positive")
    if checkpoint_every < 0 or face_pairs < 0:
        raise ConfigError(f"--checkpoint_every={checkpoint_every} / --face_pairs={face_pairs}: "
                          f"must not be negative")
    if face_pairs and face_crop_size < INPUT_MULTIPLE // 4:
        raise ConfigError(f"--face_crop_size={face_crop_size}: too small")
    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"--normalization: {normalization!r} not in {sorted(NORMALIZATIONS)}")


def _build_pretraining(root_dir, strategy, build_args, learning_rate, width, seed):
    """F (multi-scale outputs), its Adam optimizer and the resumable checkpoint's (step, manager,
    restored), made under `strategy`; a fresh run starts from FlowNet's initialisation."""
    with strategy.scope():
        flow_net = build_flownet(**build_args, multiscale=True)
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
        optimizer.build(flow_variables(flow_net))
        try:
            step, manager, restored = distribute.resumable_checkpoint(root_dir, strategy, model=flow_net,
                                                                      optimizer=optimizer)
        except (ValueError, tf.errors.OpError) as e:
            raise CheckpointError(f"{os.path.join(root_dir, 'ckpt')}: does not fit --width={width} "
                                  f"({str(e).splitlines()[0]})") from None
        if not restored:
            msra_initialization(flow_net, seed)
            bilinear_flow_upsampling(flow_net)
    return flow_net, optimizer, step, manager, restored


def _validation_before(flow_net, root_dir, restored, input_size, val_pairs, face_pairs, face_crop_size,
                       face_frame_size, max_motion, log):
    """The held-out pairs (generated, faces or None) and the untrained net's AEE on them, measured
    once and kept in BEFORE so that a resumed run still reports them."""
    val = make_pairs(val_pairs, input_size, VALIDATION_SEED, max_motion=max_motion)
    faces = synthetic_flow.face_pairs(face_pairs, input_size, FACE_VALIDATION_SEED, face_crop_size,
                                      face_frame_size) if face_pairs else None
    before_path = os.path.join(root_dir, BEFORE)
    before = atomic.read_json(before_path, advice="delete it and the ckpt/ folder beside it to "
                              "restart the pretraining") if restored else None
    if before is None:
        before = {"val_epe_before": average_epe(flow_net, val),
                  "face_epe_before": average_epe(flow_net, faces, True) if faces else None}
        atomic.write_json(before_path, before)
    log(f"pretrain: AEE before {before['val_epe_before']:.3f} px on {val_pairs} generated pairs "
        f"(zero flow {zero_epe(val):.3f})")
    return val, faces, before


def _run_steps(train_step, data, step, steps, manager, writer, progbar, learning_rate, checkpoint_every):
    """Steps until `steps`, checkpointing every `checkpoint_every` and at the end; returns the last
    loss and the seconds the steps took (the final save excluded)."""
    loss = float("nan")
    started = time.perf_counter()
    while int(step.numpy()) < steps:
        key, current, targets = next(data)
        loss, epe = (float(v) for v in train_step(key, current, targets))
        step.assign_add(1)
        current_step = int(step.numpy())
        log_scalars(writer, current_step, loss=loss, train_epe=epe, learning_rate=learning_rate)
        progbar.update(current_step, [("loss", loss), ("epe", epe)])
        check_finite(loss, learning_rate, current_step)
        if checkpoint_every and current_step % checkpoint_every == 0:
            manager.save(checkpoint_number=current_step)
    seconds = time.perf_counter() - started
    manager.save(checkpoint_number=int(step.numpy()))
    return loss, seconds


def _validation_after(flow_net, val, faces, before, writer, log, final_step):
    """The AEE after training next to `before` and zero flow (pretrain's result keys), written to
    TensorBoard and logged."""
    results = dict(val_epe_before=before["val_epe_before"], val_epe_after=average_epe(flow_net, val),
                   val_epe_zero=zero_epe(val), face_epe_before=before["face_epe_before"],
                   face_epe_after=average_epe(flow_net, faces, True) if faces else None,
                   face_epe_zero=zero_epe(faces, True) if faces else None)
    with writer.as_default():
        for name in ("val_epe_after", "face_epe_after"):
            if results[name] is not None:
                scalar_summary(name, results[name], step=final_step)
    writer.flush()
    log(f"pretrain: AEE after {results['val_epe_after']:.3f} px (before {results['val_epe_before']:.3f})"
        + (f"; faces {results['face_epe_after']:.3f} (before {results['face_epe_before']:.3f}, "
           f"zero flow {results['face_epe_zero']:.3f})" if faces else ""))
    return results


def pretrain(root_dir, width=FLOWNET2_S_WIDTH, input_size=defaults.PRETRAIN_INPUT_SIZE, steps=defaults.PRETRAIN_STEPS,
             batch_size=defaults.PRETRAIN_BATCH_SIZE, learning_rate=defaults.PRETRAIN_LEARNING_RATE, seed=0,
             checkpoint_every=defaults.PRETRAIN_CHECKPOINT_EVERY, val_pairs=defaults.PRETRAIN_VAL_PAIRS,
             face_pairs=defaults.PRETRAIN_FACE_PAIRS,
             face_crop_size=129, face_frame_size=256, normalization=DEFAULT_NORMALIZATION,
             max_motion=MAX_MOTION, log=print, verbose=1, strategy="default"):
    """Pretrains F into `root_dir` (resuming from `root_dir/ckpt`); returns its numbers:

    dict step, resumed_from_step, loss (last step), seconds and steps_per_second (this run's
    training loop), val_epe_before, val_epe_after, val_epe_zero (AEE on `val_pairs` held-out
    generated pairs at `input_size`), face_epe_before, face_epe_after, face_epe_zero (AEE on
    `face_pairs` synthetic face pairs cropped to `face_crop_size` and resized to `input_size`,
    non-occluded pixels; None when face_pairs is 0). strategy: deeplab_face.distribute; on a
    non-chief worker only step, resumed_from_step and loss.
    """
    _check(width, input_size, steps, batch_size, learning_rate, checkpoint_every, val_pairs,
           face_pairs, face_crop_size, normalization)
    atomic.check_output_dir(root_dir, "--root_dir")   # before any work: a bad folder fails at once
    strategy = distribute.strategy_of(strategy)
    chief, out_dir = distribute.is_chief(strategy), distribute.write_dir(root_dir, strategy)
    keras.utils.set_random_seed(seed)
    build_args = dict(width=float(width), feature_channels=256, input_size=int(input_size),
                      scale_head="dff", normalization=normalization)
    flow_net, optimizer, step, manager, restored = _build_pretraining(root_dir, strategy, build_args,
                                                                      learning_rate, width, seed)
    start_step = int(step.numpy())
    if start_step < steps and chief:
        clear_done(root_dir)
    if chief:   # the AEE before training (the workers' F is the chief's)
        val, faces, before = _validation_before(flow_net, root_dir, restored, input_size, val_pairs,
                                                face_pairs, face_crop_size, face_frame_size, max_motion, log)

    train_step = make_train_step(flow_net, optimizer, strategy=strategy)
    writer = tf.summary.create_file_writer(os.path.join(out_dir, "tensorboard"))
    # A resumed run continues the same pair stream at its step: bit-identical to an uninterrupted run.
    data = iter(distribute.distribute_dataset(strategy, _dataset(
        input_size, batch_size, [seed, 0], max_motion, skip_pairs=start_step * batch_size)))
    progbar = keras.utils.Progbar(steps, verbose=verbose)
    loss, seconds = _run_steps(train_step, data, step, steps, manager, writer, progbar, learning_rate,
                               checkpoint_every)
    final_step = int(step.numpy())
    if not chief:
        writer.flush()
        distribute.remove_scratch(root_dir, strategy)
        return dict(step=final_step, resumed_from_step=start_step, loss=loss)
    results = dict(step=final_step, resumed_from_step=start_step, loss=loss, seconds=seconds,
                   steps_per_second=(final_step - start_step) / seconds if final_step > start_step
                   else None,
                   **_validation_after(flow_net, val, faces, before, writer, log, final_step))
    hparams = dict(steps=steps, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                   val_pairs=val_pairs, face_pairs=face_pairs, face_crop_size=face_crop_size,
                   face_frame_size=face_frame_size, max_motion=max_motion,
                   loss_weights=list(FLOW_LOSS_WEIGHTS), data="flownet2s.synthetic_flow",
                   strategy=distribute.strategy_name(strategy), replicas=strategy.num_replicas_in_sync)
    atomic.write_json(os.path.join(root_dir, "hparams.json"), hparams, indent=2)
    # The multi-scale outputs add no layers: final.weights.h5 loads into build_flownet(**config).
    finish_stage(root_dir, flow_net, build_args, done_text=json.dumps(atomic.jsonable(results)))
    return results


FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("root_dir", None, "Stage directory: ckpt/, tensorboard/, config.json, "
                        "final.weights.h5, DONE. Re-running resumes from ckpt/.")
    flags.DEFINE_float("width", FLOWNET2_S_WIDTH, "FlowNetS width: 0.375 = FlowNet2-s, 1.0 = FlowNet2-S.",
                       lower_bound=0.01, upper_bound=4.0)
    flags.DEFINE_integer("input_size", defaults.PRETRAIN_INPUT_SIZE,
                         "Side of the generated pairs = flow-net input (multiple of 64).",
                         lower_bound=INPUT_MULTIPLE)
    flags.register_validator("input_size", lambda v: v % INPUT_MULTIPLE == 0,
                             f"--input_size must be a multiple of {INPUT_MULTIPLE}")
    flags.DEFINE_integer("steps", defaults.PRETRAIN_STEPS, "Training steps.", lower_bound=1)
    flags.DEFINE_integer("batch_size", defaults.PRETRAIN_BATCH_SIZE,
                         "Pairs per step: the global batch, split across the "
                         "replicas under --strategy.", lower_bound=1)
    flags.DEFINE_float("learning_rate", defaults.PRETRAIN_LEARNING_RATE,
                       "Adam learning rate (constant; FlowNet 2.0: 1e-4).",
                       lower_bound=1e-12)
    flags.DEFINE_integer("seed", 0, "Seed of initialisation and of the generated training pairs.", lower_bound=0)
    flags.DEFINE_integer("checkpoint_every", defaults.PRETRAIN_CHECKPOINT_EVERY,
                         "Save a resumable checkpoint every so many steps "
                         "(0: only at the end).", lower_bound=0)
    flags.DEFINE_integer("val_pairs", defaults.PRETRAIN_VAL_PAIRS,
                         "Held-out generated pairs for the AEE before/after.", lower_bound=1)
    flags.DEFINE_integer("face_pairs", defaults.PRETRAIN_FACE_PAIRS,
                         "Held-out synthetic face pairs for a face AEE (0: none).",
                         lower_bound=0)
    flags.DEFINE_integer("face_crop_size", 129, "Crop side S of the face pairs (as prepare_300vw).",
                         lower_bound=INPUT_MULTIPLE // 4)
    flags.DEFINE_enum("normalization", DEFAULT_NORMALIZATION, sorted(NORMALIZATIONS),
                      "Flow-net input normalisation.")
    distribute.define_strategy_flag()
    flags.mark_flag_as_required("root_dir")


def main(argv):
    del argv
    strategy = distribute.make_strategy(FLAGS.strategy)   # first: multi_worker needs a fresh runtime
    results = pretrain(FLAGS.root_dir, width=FLAGS.width, input_size=FLAGS.input_size, steps=FLAGS.steps,
                       batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate, seed=FLAGS.seed,
                       checkpoint_every=FLAGS.checkpoint_every, val_pairs=FLAGS.val_pairs,
                       face_pairs=FLAGS.face_pairs, face_crop_size=FLAGS.face_crop_size,
                       normalization=FLAGS.normalization, strategy=strategy)
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
