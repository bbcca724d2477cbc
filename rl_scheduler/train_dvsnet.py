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

The training loop is the library `rl_scheduler.dvsnet_training.train_decision_network`; this command is
its stage function (pairs from the shared caches) and flags.
"""
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from deeplab_face import cli  # noqa: E402
from deeplab_face.distribute import define_strategy_flag  # noqa: E402
from deeplab_face.errors import ConfigError  # noqa: E402
from rl_scheduler import config, pair_tables  # noqa: E402
from flownet2s.dff import load_dff  # noqa: E402
from rl_scheduler.cache import load_video_caches  # noqa: E402
from rl_scheduler import training_stage  # noqa: E402
from rl_scheduler.dvsnet_training import train_decision_network  # noqa: E402
from rl_scheduler.training_stage import checked_stage_flags, define_stage_flags, register_size_validator  # noqa: E402

# the data side lives in dvsnet_pairs; re-exported here, where tests and callers import them
from rl_scheduler.dvsnet_pairs import (  # noqa: E402,F401
    GAP_BUCKETS, GAP_SAMPLINGS, VAL_MAX_GAP, pair_dataset, pearson, prefetch_in_key_blocks, regression_metrics,
    sample_pairs, spearman)


def train_eval(root_dir, prepared_dir, segmenter_dir, flownet_dir, train_videos, val_videos,
               max_gap=config.DVSNET_MAX_GAP, epochs=config.DVSNET_EPOCHS,
               batch_size=config.DVSNET_BATCH_SIZE,
               learning_rate=config.DVSNET_LEARNING_RATE, seed=0, pairs_per_video=config.DVSNET_PAIRS_PER_VIDEO,
               val_pairs_per_video=config.DVSNET_VAL_PAIRS_PER_VIDEO, deviation_size=None, flow_resolution="full",
               cache_batch_size=8,
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
    train_caches, by_id = _video_caches(dff, prepared_dir, train_ids, val_ids, options, pair_table_dir, log)
    train_data, val_data = _train_val_pairs(train_caches, by_id, val_ids, rng, max_gap, pairs_per_video,
                                            val_pairs_per_video, gap_sampling, val_max_gap)
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


def _video_caches(dff, prepared_dir, train_ids, val_ids, options, pair_table_dir, log):
    """(the training videos' caches, every video's cache by id): a video in both lists gets one cache; each
    reads its pair table from `pair_table_dir` when there."""
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
    return train_caches, by_id


def _train_val_pairs(train_caches, by_id, val_ids, rng, max_gap, pairs_per_video, val_pairs_per_video,
                     gap_sampling, val_max_gap):
    """(train_data, val_data) as (X, y, gaps): validation pairs from `val_ids`' caches, disjoint from the
    training pairs, or without val_ids 10% of the training pairs held out."""
    train_data = pair_dataset(train_caches, max_gap, pairs_per_video, rng, gap_sampling=gap_sampling)
    if not val_ids:
        order = rng.permutation(len(train_data[0]))
        held = max(1, len(order) // 10)
        return tuple(a[order[held:]] for a in train_data[:3]), tuple(a[order[:held]] for a in train_data[:3])
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
    return train_data[:3], val_data[:3]


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
    flags.DEFINE_integer("pairs_per_video", config.DVSNET_PAIRS_PER_VIDEO,
                         "Training pairs drawn per video (0: all).", lower_bound=0)
    flags.DEFINE_integer("val_pairs_per_video", config.DVSNET_VAL_PAIRS_PER_VIDEO,
                         "Validation pairs drawn per video (0: all).", lower_bound=0)
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
