"""Frames of one prepared video read lazily, in blocks, with a bounded LRU (paper scale).

Training the scheduler on 300VW set B at 513 px would hold about 78 GB of frames
if every video were loaded whole. An episode only touches its own T-frame window
(§3.2 "Episode settings"), so `LazyVideoFrames` decodes aligned blocks of
`block_frames` frames on first use and keeps at most `max_frames_in_memory`
decoded frames (least recently used blocks go first). Its `images` / `labels`
are array-likes that `rl_scheduler.cache.VideoCache` indexes exactly like the
numpy arrays of the eager path (`len(x)`, `x[i]`, `x[int array]`, `x.shape`).
"""
import collections

import numpy as np

DEFAULT_BLOCK_FRAMES = 32
DEFAULT_MAX_FRAMES_IN_MEMORY = 1024   # ~0.8 GB of 513 px frames + labels per video


def read_window(prepared_dir, video_id, start, count):
    """(images uint8 (n,S,S,3), labels uint8 (n,S,S)) of frames start..start+count-1.

    Same content as `deeplab_face.data.pipelines.load_video(prepared_dir, video_id, start, count)`,
    but records before `start` are skipped undecoded (load_video decodes them all).
    """
    import tensorflow as tf  # tf.data reads the TFRecord file

    from deeplab_face.data.pipelines import video_files
    from deeplab_face.data.tfrecords import decode_example
    from deeplab_face.errors import DataError

    size, paths, frames = video_files(prepared_dir, [video_id])
    count = max(min(frames[0], start + count) - start, 0)
    images = np.zeros((count, size, size, 3), np.uint8)
    labels = np.zeros((count, size, size), np.uint8)
    seen = 0
    try:
        for record in tf.data.TFRecordDataset(str(paths[0])).skip(start).take(count):
            example = decode_example(record.numpy(), paths[0])
            images[seen], labels[seen] = example["image"], example["label"]
            seen += 1
    except tf.errors.OpError as e:
        raise DataError(f"{paths[0]}: unreadable TFRecord ({type(e).__name__})") from None
    if seen < count:
        raise DataError(f"{paths[0]}: has fewer examples than the manifest's {frames[0]}")
    return images, labels


class _FrameArray:
    """Read-only, numpy-like view of one field (images or labels) of a `LazyVideoFrames`."""

    def __init__(self, source, field):
        self.source = source
        self._field = field

    def __len__(self):
        return self.source.num_frames

    @property
    def shape(self):
        return (self.source.num_frames,) + self.source.frame_shape(self._field)

    def __getitem__(self, index):
        if isinstance(index, slice):
            index = np.arange(*index.indices(len(self)))
        if np.ndim(index) == 0:
            return self.source.take(np.asarray([int(index)]), self._field)[0]
        return self.source.take(np.asarray(index, np.int64).reshape(-1), self._field)


class LazyVideoFrames:
    """One prepared video's frames and labels, decoded on demand in blocks.

    Args:
      prepared_dir, video_id: the prepared data (manifest.json + TFRecords).
      block_frames: frames decoded per read (aligned blocks).
      max_frames_in_memory: most decoded frames kept; at least one block is always kept.
      reader: `(start, count) -> (images, labels)`; default `read_window` on the prepared data.
      num_frames: frames of the video (default: from the manifest).
    Attributes `images`, `labels` (array-likes for `VideoCache`), `resident_frames`, `reads`.
    """

    def __init__(self, prepared_dir=None, video_id=None, block_frames=DEFAULT_BLOCK_FRAMES,
                 max_frames_in_memory=DEFAULT_MAX_FRAMES_IN_MEMORY, reader=None, num_frames=None):
        if reader is None:
            from deeplab_face.data.pipelines import video_files

            _, _, frames = video_files(prepared_dir, [video_id])
            num_frames = frames[0] if num_frames is None else num_frames
            reader = lambda start, count: read_window(prepared_dir, video_id, start, count)  # noqa: E731
        if num_frames is None:
            raise ValueError("LazyVideoFrames: num_frames is needed with a custom reader")
        self.num_frames = int(num_frames)
        self.block_frames = max(int(block_frames), 1)
        self.max_frames_in_memory = max(int(max_frames_in_memory), self.block_frames)
        self._reader = reader
        self._blocks = collections.OrderedDict()   # block index -> {"images": ..., "labels": ...}
        self.reads = 0                             # blocks decoded so far (re-reads included)
        self.peak_resident_frames = 0
        self.images = _FrameArray(self, "images")
        self.labels = _FrameArray(self, "labels")

    def __len__(self):
        return self.num_frames

    @property
    def resident_frames(self):
        return sum(len(block["images"]) for block in self._blocks.values())

    def frame_shape(self, field):
        return self._block(0)[field].shape[1:]

    def take(self, indices, field):
        """Frames `indices` of `field` stacked in a new array (blocks read as needed)."""
        if len(indices) and (indices.min() < 0 or indices.max() >= self.num_frames):
            raise IndexError(f"frame index out of range 0..{self.num_frames - 1}")
        out = None
        for b in np.unique(indices // self.block_frames):
            data = self._block(int(b))[field]
            rows = np.nonzero(indices // self.block_frames == b)[0]
            if out is None:
                out = np.empty((len(indices),) + data.shape[1:], data.dtype)
            out[rows] = data[indices[rows] - int(b) * self.block_frames]
        if out is None:
            out = np.empty((0,) + self.frame_shape(field), np.uint8)
        return out

    def _block(self, b):
        block = self._blocks.get(b)
        if block is not None:
            self._blocks.move_to_end(b)
            return block
        start = b * self.block_frames
        images, labels = self._reader(start, min(self.block_frames, self.num_frames - start))
        block = {"images": np.asarray(images, np.uint8), "labels": np.asarray(labels, np.uint8)}
        self._blocks[b] = block
        self.reads += 1
        # evict least recently used blocks beyond the budget (the new one stays)
        while len(self._blocks) > 1 and self.resident_frames > self.max_frames_in_memory:
            self._blocks.popitem(last=False)
        self.peak_resident_frames = max(self.peak_resident_frames, self.resident_frames)
        return block
