"""Prepares a 300VW-format tree for training: face crops, labels, one TFRecord per video.

    python -m deeplab_face.prepare_300vw --data_dir=D --out_dir=P --size=513 [--videos=001,002]
        [--split_file=split.txt] [--exclude_file=exclude.txt]

Each video is decoded once: per frame, the label is made from the landmarks on the full frame
(300VW-Mask recipe), then image, label and points are cropped with the same face box and resized to
S×S (reference/datasets.md §2). Output (docs/interfaces.md "Prepared data"): `<out_dir>/<id>.tfrecord`
and `<out_dir>/manifest.json`. Resumable per video: a video is written to a temporary file and
renamed when complete, and the manifest is rewritten after every video, so a rerun skips the videos
already done (and redoes any whose file was deleted).
"""
import os
import pathlib

from absl import flags, logging

from deeplab_face.errors import ConfigError, DataError

MIN_SIZE = 17


def _pending_frames(data_dir, video_id):
    """Frame count estimate for the progress bar (the number of .pts files), 0 when unknown."""
    return len(list((pathlib.Path(data_dir) / video_id / "annot").glob("*.pts")))


def _box_misses_frame(points, shape):
    """True when the landmarks' crop box lies entirely outside the frame (landmarks far off)."""
    from deeplab_face.data.crop import square_box
    x0, y0, x1, y1 = square_box(points)
    return min(shape[1], x1) <= max(0, x0) or min(shape[0], y1) <= max(0, y0)


def _write_video(data_dir, video_id, path, size, progress, exclusions):
    """Writes one video's examples to `path`; returns the number of frames written. Frames whose
    landmarks lie outside the frame are skipped with one warning naming the first .pts file."""
    import tensorflow as tf

    from deeplab_face.data import vw300
    from deeplab_face.data.crop import crop_face
    from deeplab_face.data.masks import landmarks_to_label
    from deeplab_face.data.tfrecords import encode_example, writing_errors
    count, outside = 0, []
    with writing_errors(path), tf.io.TFRecordWriter(str(path)) as writer:
        for _, frame, rgb, points in vw300.iter_video(data_dir, video_id, exclusions):
            progress.add(1)
            if _box_misses_frame(points, rgb.shape):
                outside.append(frame)
                continue
            label = landmarks_to_label(points, rgb.shape[0], rgb.shape[1])
            image, label, crop_points = crop_face(rgb, label, points, size)
            writer.write(encode_example(image, label, video_id, frame, crop_points))
            count += 1
    if outside:
        first = pathlib.Path(data_dir) / video_id / vw300.ANNOTATION_DIR / f"{outside[0]:06d}.pts"
        logging.warning("prepare: video %s: %d frame(s) have landmarks outside the frame (first: %s); "
                        "skipped", video_id, len(outside), first)
    return count


def prepare(data_dir, out_dir, size=513, video_ids=None, exclude=None):
    """Prepares the videos `video_ids` (default: all in `data_dir`); returns the manifest dict.

    `exclude`: what `vw300` accepts: an exclusion-list path (`VID`, `VID FRAME`, `VID FIRST-LAST`
    lines; 300VW-Mask drops the frames with bad landmarks listed in 300VW's ReadMe), a
    `vw300.Exclusions`, an iterable of video ids, or None."""
    from deeplab_face.data import vw300
    from deeplab_face.data.tfrecords import MANIFEST, read_manifest, write_manifest
    data_dir, out_dir = pathlib.Path(data_dir), pathlib.Path(out_dir)
    if size < MIN_SIZE:
        raise ConfigError(f"--size={size}: must be at least {MIN_SIZE}")
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such data folder")
    if isinstance(video_ids, (str, int)):
        video_ids = [video_ids]
    if video_ids is not None:
        video_ids = [str(v) for v in video_ids]
    if isinstance(exclude, (str, pathlib.Path)):
        exclude = vw300.read_exclusions(exclude)  # parse the list once, not once per video
    ids = vw300.list_videos(data_dir, split=video_ids, exclude=exclude)
    if video_ids is not None:
        absent = [v for v in video_ids if not (data_dir / v / vw300.VIDEO_FILE).is_file()]
        if absent:
            raise DataError(f"{data_dir / absent[0]}: no {vw300.VIDEO_FILE} ({len(absent)} requested "
                            f"videos missing)")
    if not ids:
        raise DataError(f"{data_dir}: no videos to prepare (expected NNN/{vw300.VIDEO_FILE} with "
                        f"NNN/{vw300.ANNOTATION_DIR}/*.pts{'; --videos / --split_file select none' if video_ids is not None else ''})")
    from deeplab_face import atomic
    atomic.check_output_dir(out_dir, "--out_dir")
    if (out_dir / MANIFEST).exists():
        manifest = read_manifest(out_dir)
        if manifest["size"] != size:
            raise ConfigError(f"--size={size}: {out_dir / MANIFEST} was prepared at size {manifest['size']}")
    else:
        manifest = {"size": size, "videos": {}}
    done = [v for v in ids if v in manifest["videos"]
            and (out_dir / manifest["videos"][v]["file"]).is_file()]
    todo = [v for v in ids if v not in done]
    if done:
        logging.info("prepare: %d videos already done, skipping: %s", len(done), " ".join(done))
    import keras
    progress = keras.utils.Progbar(sum(_pending_frames(data_dir, v) for v in todo) or None,
                                   unit_name="frame")
    for video_id in todo:
        name = f"{video_id}.tfrecord"
        temporary = out_dir / (name + ".tmp")
        count = _write_video(data_dir, video_id, temporary, size, progress, exclude)
        if count == 0:
            temporary.unlink(missing_ok=True)
            logging.warning("prepare: video %s has no usable frames; left out", video_id)
            continue
        os.replace(temporary, out_dir / name)  # the file appears only when complete
        manifest["videos"][video_id] = {"frames": count, "file": name}
        write_manifest(out_dir, manifest)
    if not manifest["videos"]:
        raise DataError(f"{data_dir}: none of its {len(ids)} videos has a usable frame (see the warnings)")
    write_manifest(out_dir, manifest)
    print(f"\nprepared {len(todo)} videos ({len(done)} already done) in {out_dir}")
    return manifest


def define_flags():
    flags.DEFINE_string("data_dir", None, "300VW-format tree (NNN/vid.avi + NNN/annot/%06d.pts).")
    flags.DEFINE_string("out_dir", None, "Output folder for <id>.tfrecord files and manifest.json.")
    flags.DEFINE_integer("size", 513, "Crop side S (16k + 1: 513 as in the paper, 65/129 in tests).",
                         lower_bound=MIN_SIZE)
    flags.DEFINE_list("videos", None, "Video ids to prepare (default: all in --data_dir, or --split_file).")
    flags.DEFINE_string("split_file", None, "A split file (plain id list or 300VW-Mask split_2 lines) "
                        "selecting the videos.")
    flags.DEFINE_string("exclude_file", None, "Exclusion list: 'VID', 'VID FRAME' or 'VID FIRST-LAST' "
                        "per line (videos or frames to leave out).")
    flags.mark_flags_as_required(["data_dir", "out_dir"])


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    video_ids = FLAGS.videos
    if FLAGS.split_file:
        from deeplab_face.data import vw300
        split = vw300.read_split(FLAGS.split_file)
        available = set(vw300.list_videos(FLAGS.data_dir))
        video_ids = [v for v in split if v in available and (video_ids is None or v in video_ids)]
    prepare(FLAGS.data_dir, FLAGS.out_dir, FLAGS.size, video_ids, FLAGS.exclude_file)


if __name__ == "__main__":
    from deeplab_face.cli import run
    define_flags()
    run(main)
