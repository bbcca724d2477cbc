"""What the scheduler-training commands (rl_scheduler.train, rl_scheduler.train_dvsnet) share: the flags
of their inputs, outputs and caches, the h,w size flags, and the stage folder's JSON files."""
from absl import flags

from deeplab_face import atomic
from rl_scheduler import config

FLAGS = flags.FLAGS


def read_json(path, default):
    """`path`'s JSON, `default` when missing; a corrupt file is a DataError naming it."""
    return atomic.read_json(path, default, advice="delete it and the stage's ckpt/ folder to restart "
                            "the stage")


def write_json(path, value):
    atomic.write_json(path, value)


def define_stage_flags(root_help, train_help, val_help):
    """The flags every scheduler-training command shares: inputs, outputs and the caches."""
    flags.DEFINE_string("root_dir", None, root_help)
    flags.DEFINE_string("prepared_dir", None, "Prepared data (manifest.json + TFRecords).")
    flags.DEFINE_string("segmenter_dir", None, "Stage directory of the segmentation network N.")
    flags.DEFINE_string("flownet_dir", None, "Stage directory of the flow network F.")
    flags.DEFINE_list("train_videos", [], train_help)
    flags.DEFINE_list("val_videos", [], val_help)
    flags.DEFINE_enum("flow_resolution", "full", ["full", "half"], "Flow-net input resolution.")
    flags.DEFINE_integer("cache_batch_size", 8, "Frames per compiled call when filling the caches.",
                         lower_bound=1)
    flags.DEFINE_integer("max_frames_in_memory", config.MAX_FRAMES_IN_MEMORY,
                         "Decoded frames kept in memory over all videos (frames are read lazily "
                         "in blocks; 1.05 MB each at 513 px); 0: load every frame at once.", lower_bound=0)
    flags.mark_flags_as_required(["root_dir", "prepared_dir", "segmenter_dir", "flownet_dir"])


def _size_or_none(values):
    """A parsed h,w list flag: [h, w] of positive ints, None when empty; ValueError otherwise."""
    if not values:
        return None
    size = [int(v) for v in values]
    if len(size) != 2 or min(size) < 1:
        raise ValueError("expected two positive integers h,w")
    return size


def register_size_validator(name):
    """absl validator of an h,w list flag (empty allowed)."""
    def valid(values):
        try:
            _size_or_none(values)
        except ValueError:
            return False
        return True
    flags.register_validator(name, valid, f"--{name} must be two positive integers h,w (or empty)")


def checked_stage_flags():
    """Returns --deviation_size as [h, w] or None (absl has checked the stage flags already)."""
    atomic.check_output_dir(FLAGS.root_dir, "--root_dir")   # before any work: a bad folder fails at once
    return _size_or_none(FLAGS.deviation_size)
