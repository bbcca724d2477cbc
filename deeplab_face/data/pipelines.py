"""tf.data builders over prepared data (docs/interfaces.md, `deeplab_face.data.pipelines`).

All randomness is seeded: shuffles take `seed`, per-example choices (flip, scale, gap) use stateless
ops keyed by (seed, example index), so one seed gives one stream of batches. A training resumed at
step n asks for the same stream with `skip_batches=n`: the serialized records of the first n batches
are read and dropped before anything is decoded, so the resumed run sees exactly the batches an
uninterrupted run would (reading, not decoding: seconds for the tiny preset, about a minute per
10^5 skipped 513-px frames).
"""
import contextlib
import pathlib

import numpy as np
import tensorflow as tf

from deeplab_face.data.tfrecords import (MANIFEST, decode_example, parse_example, read_examples,
                                         read_manifest, read_records)
from deeplab_face.data.masks import IGNORE_LABEL
from deeplab_face.errors import ConfigError, DataError

PAD_PIXEL = 127.5        # DeepLab pads images with the mean pixel when scale jitter shrinks them
MIN_SCALE, MAX_SCALE = 0.5, 2.0  # DeepLab's scale-jitter range


def _as_ids(video_ids, manifest):
    if video_ids is None:
        return sorted(manifest["videos"])
    if isinstance(video_ids, (str, int)):
        video_ids = [video_ids]
    return [str(v) for v in video_ids]


def video_files(prepared_dir, video_ids=None):
    """(size, [TFRecord path], [frames]) for the videos, checked: listed, present, first record sound."""
    prepared_dir = pathlib.Path(prepared_dir)
    manifest = read_manifest(prepared_dir)
    size = manifest["size"]
    paths, frames = [], []
    for video_id in _as_ids(video_ids, manifest):
        entry = manifest["videos"].get(video_id)
        if entry is None:
            raise DataError(f"{prepared_dir / MANIFEST}: no video '{video_id}'")
        path = prepared_dir / entry["file"]
        if not path.is_file():
            raise DataError(f"{path}: missing (listed in {MANIFEST})")
        for record in read_records(path):  # decode the first record: catches garbage files early
            example = decode_example(record, path)
            if example["image"].shape != (size, size, 3):
                raise DataError(f"{path}: frames are {example['image'].shape[:2]}, "
                                f"{MANIFEST} says size {size}")
            break
        else:
            raise DataError(f"{path}: no examples")
        paths.append(str(path))
        frames.append(entry["frames"])
    if not paths:
        raise DataError(f"{prepared_dir / MANIFEST}: no videos selected")
    return size, paths, frames


def _file_order(paths, seed, repeat):
    """The files in a seeded order (reshuffled each epoch), and how many to interleave at once."""
    files = tf.data.Dataset.from_tensor_slices(paths)
    files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        files = files.repeat()
    return files, min(len(paths), 8)


def scale_and_crop(image, label, seed, size, min_scale=MIN_SCALE, max_scale=MAX_SCALE):
    """Random scale (bilinear image, nearest label), pad back to at least S (mean pixel, ignore
    label), random S×S crop. `seed` is a stateless seed (2,) int32/64."""
    scale_seed, y_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    scale = tf.random.stateless_uniform([], scale_seed, min_scale, max_scale)
    side = tf.cast(tf.round(scale * size), tf.int32)
    image = tf.image.resize(image, [side, side], "bilinear")
    label = tf.image.resize(label[..., None], [side, side], "nearest")[..., 0]
    padded = tf.maximum(side, size)
    pad = [[0, padded - side], [0, padded - side]]
    image = tf.pad(image - PAD_PIXEL, pad + [[0, 0]]) + PAD_PIXEL
    label = tf.pad(label, pad, constant_values=IGNORE_LABEL)
    y0 = tf.random.stateless_uniform([], y_seed, 0, padded - size + 1, dtype=tf.int32)
    x0 = tf.random.stateless_uniform([], x_seed, 0, padded - size + 1, dtype=tf.int32)
    return image[y0:y0 + size, x0:x0 + size], label[y0:y0 + size, x0:x0 + size]


def augment_example(image, label, seed, size, min_scale=MIN_SCALE, max_scale=MAX_SCALE):
    """Horizontal flip (face classes are left/right symmetric, so labels flip as they are) and
    scale jitter. image float32 (S,S,3), label uint8 (S,S) -> same shapes."""
    flip_seed, scale_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
    label = tf.cond(flip, lambda: tf.reverse(label, [1]), lambda: label)
    image, label = scale_and_crop(image, label, scale_seed, size, min_scale, max_scale)
    return tf.ensure_shape(image, [size, size, 3]), tf.ensure_shape(label, [size, size])


def segmentation_dataset(prepared_dir, video_ids, batch_size, seed, augment=True, repeat=True,
                         shuffle_buffer=512, min_scale=MIN_SCALE, max_scale=MAX_SCALE, skip_batches=0):
    """(image float32 (B,S,S,3) in [0,255], label int32 (B,S,S)) batches of single frames.

    skip_batches: start at that batch of the seed's stream (a resumed training; module docstring)."""
    size, paths, _ = video_files(prepared_dir, video_ids)
    files, cycle = _file_order(paths, seed, repeat)
    records = files.interleave(tf.data.TFRecordDataset, cycle_length=cycle,
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)

    def parse(index, record):
        ex = parse_example(record, size)
        image, label = tf.cast(ex["image"], tf.float32), ex["label"]
        if augment:
            example_seed = tf.stack([tf.cast(seed, tf.int64), index])
            image, label = augment_example(image, label, example_seed, size, min_scale, max_scale)
        return image, tf.cast(label, tf.int32)

    records = records.enumerate().skip(int(skip_batches) * batch_size)
    ds = records.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=repeat).prefetch(tf.data.AUTOTUNE)



def pair_dataset(prepared_dir, video_ids, batch_size, seed, min_gap=1, max_gap=30, repeat=True,
                 shuffle_buffer=256, skip_batches=0):
    """Key–current pairs from one video: dict `key_image`, `current_image` (float32 [0,255]),
    `current_label` (int32), `gap` (int32, current frame number − key frame number).

    The gap is drawn uniformly from [min_gap, max_gap] (seeded), or up to the video's last frame
    near its end; in consecutive frames the current frame is the key frame + gap.
    skip_batches: start at that batch of the seed's stream (a resumed training; module docstring)."""
    if min_gap < 1 or max_gap < min_gap:
        raise ConfigError(f"--min_gap={min_gap} --max_gap={max_gap}: need 1 <= min_gap <= max_gap")
    size, paths, frames = video_files(prepared_dir, video_ids)
    if max(frames) <= min_gap:
        raise DataError(f"{pathlib.Path(prepared_dir) / MANIFEST}: no selected video has more than "
                        f"min_gap={min_gap} frames, so no pair can be drawn")
    span = max_gap + 1
    files, cycle = _file_order(paths, seed, repeat)

    def windows(path):  # every key frame with the max_gap frames that follow it (fewer at the end)
        return tf.data.TFRecordDataset(path).window(span, shift=1).flat_map(lambda w: w.batch(span))

    windowed = files.interleave(windows, cycle_length=cycle, num_parallel_calls=tf.data.AUTOTUNE,
                                deterministic=True)
    windowed = windowed.filter(lambda w: tf.shape(w)[0] > min_gap)

    def choose(index, window):
        longest = tf.minimum(tf.shape(window)[0] - 1, max_gap)
        gap = tf.random.stateless_uniform([], tf.stack([tf.cast(seed, tf.int64), index]),
                                          min_gap, longest + 1, dtype=tf.int32)
        return window[0], window[gap]

    pairs = windowed.enumerate().map(choose, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    pairs = pairs.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    pairs = pairs.skip(int(skip_batches) * batch_size)

    def parse(key_record, current_record):
        key, current = parse_example(key_record, size), parse_example(current_record, size)
        return {"key_image": tf.cast(key["image"], tf.float32),
                "current_image": tf.cast(current["image"], tf.float32),
                "current_label": tf.cast(current["label"], tf.int32),
                "gap": tf.cast(current["frame"] - key["frame"], tf.int32)}

    ds = pairs.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=repeat).prefetch(tf.data.AUTOTUNE)


@contextlib.contextmanager
def naming_corrupt_files(prepared_dir, video_ids=None):
    """Turns a tf.data DataLossError met while iterating the videos' TFRecords into a DataError that
    names the corrupt (e.g. truncated) file: the files are scanned once to find it."""
    try:
        yield
    except tf.errors.DataLossError as e:
        _, paths, _ = video_files(prepared_dir, video_ids)
        for path in paths:
            for _ in read_records(path):   # raises the DataError naming the file
                pass
        reason = e.message.splitlines()[0] if e.message else type(e).__name__
        raise DataError(f"{prepared_dir}: a TFRecord of videos {' '.join(map(str, video_ids or []))} is corrupt "
                        f"({reason})") from None


def checked_batches(dataset, prepared_dir, video_ids):
    """Iterates `dataset` (built from those videos' TFRecords); a corrupt file is a DataError naming it."""
    iterator = iter(dataset)
    while True:
        with naming_corrupt_files(prepared_dir, video_ids):
            try:
                batch = next(iterator)
            except StopIteration:
                return
        yield batch


def video_frames(prepared_dir, video_id):
    """One video's frames in order: dict `image` uint8 (S,S,3), `label` uint8 (S,S), `frame` int64."""
    size, paths, _ = video_files(prepared_dir, [video_id])

    def parse(record):
        ex = parse_example(record, size)
        return {"image": ex["image"], "label": ex["label"], "frame": ex["frame"]}

    return tf.data.TFRecordDataset(paths[0]).map(parse, num_parallel_calls=tf.data.AUTOTUNE,
                                                 deterministic=True)


def load_video(prepared_dir, video_id, start=0, count=None):
    """Frames start..start+count-1 (0-based positions) of one video as numpy:
    (images uint8 (T,S,S,3), labels uint8 (T,S,S))."""
    size, paths, frames = video_files(prepared_dir, [video_id])
    stop = frames[0] if count is None else min(frames[0], start + count)
    images = np.zeros((max(stop - start, 0), size, size, 3), np.uint8)
    labels = np.zeros((max(stop - start, 0), size, size), np.uint8)
    seen = 0
    for position, example in enumerate(read_examples(paths[0])):
        seen = position + 1
        if position >= stop:
            break
        if position >= start:
            images[position - start], labels[position - start] = example["image"], example["label"]
    if seen < stop:
        raise DataError(f"{paths[0]}: has {seen} examples, {MANIFEST} says {frames[0]}")
    return images, labels
