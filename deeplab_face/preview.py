"""A preview sheet: a PNG grid of frames with their label overlays, one row per video.

    python -m deeplab_face.preview --data_dir=D --out=runs/demo/preview.png

`--data_dir` is either a 300VW-format tree (labels made from the landmarks with the 300VW-Mask
recipe) or a prepared directory (`manifest.json`; labels as stored).
"""
import pathlib

import cv2
import numpy as np
from absl import flags

from deeplab_face.data.masks import CLASS_NAMES, FACE_PALETTE, landmarks_to_label, overlay
from deeplab_face.errors import ConfigError, DataError


def _sample_positions(count, n):
    """n evenly spaced 0-based positions among `count` frames (all of them when fewer)."""
    if count <= n:
        return list(range(count))
    return sorted({int(round(k * (count - 1) / (n - 1))) for k in range(n)}) if n > 1 else [0]


def _raw_rows(data_dir, video_ids, frames_per_video):
    from deeplab_face.data import vw300
    for video_id in video_ids:
        count = len(list((data_dir / video_id / "annot").glob("*.pts")))
        wanted = set(_sample_positions(count, frames_per_video))
        row = []
        for position, (_, frame, rgb, points) in enumerate(vw300.iter_video(data_dir, video_id)):
            if position in wanted:
                label = landmarks_to_label(points, rgb.shape[0], rgb.shape[1])
                row.append((f"{video_id} #{frame}", rgb, label))
            if position >= max(wanted, default=-1):
                break
        yield row


def _prepared_rows(data_dir, video_ids, frames_per_video, manifest):
    from deeplab_face.data.pipelines import load_video
    for video_id in video_ids:
        count = manifest["videos"][video_id]["frames"]
        images, labels = load_video(data_dir, video_id)
        yield [(f"{video_id} [{k}]", images[k], labels[k]) for k in _sample_positions(count, frames_per_video)]


def _cell(caption, rgb, label, thumb):
    """The overlay letterboxed into a thumb×thumb square, with a caption."""
    picture = overlay(rgb, label, alpha=0.45)
    h, w = picture.shape[:2]
    scale = thumb / max(h, w)
    picture = cv2.resize(picture, (max(1, round(w * scale)), max(1, round(h * scale))),
                         interpolation=cv2.INTER_AREA)
    cell = np.zeros((thumb, thumb, 3), np.uint8)
    y0, x0 = (thumb - picture.shape[0]) // 2, (thumb - picture.shape[1]) // 2
    cell[y0:y0 + picture.shape[0], x0:x0 + picture.shape[1]] = picture
    cv2.putText(cell, caption, (3, thumb - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(cell, caption, (3, thumb - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1,
                cv2.LINE_AA)
    return cell


def _legend(width):
    strip = np.full((18, width, 3), 255, np.uint8)
    x = 4
    for colour, name in zip(FACE_PALETTE, CLASS_NAMES):
        cv2.rectangle(strip, (x, 4), (x + 10, 14), tuple(int(c) for c in colour), -1)
        cv2.rectangle(strip, (x, 4), (x + 10, 14), (90, 90, 90), 1)
        cv2.putText(strip, name, (x + 14, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
        x += 20 + 7 * len(name)
    return strip


def write_preview(data_dir, out, video_ids=None, frames_per_video=6, thumb=128):
    """Writes the sheet to `out` (PNG; folders created) and returns its path."""
    data_dir, out = pathlib.Path(data_dir), pathlib.Path(out)
    if frames_per_video < 1 or thumb < 32:
        raise ConfigError(f"--frames_per_video={frames_per_video} --thumb={thumb}: need >= 1 and >= 32")
    if (data_dir / "manifest.json").exists():
        from deeplab_face.data.tfrecords import read_manifest
        manifest = read_manifest(data_dir)
        ids = sorted(manifest["videos"]) if video_ids is None else [str(v) for v in video_ids]
        rows = _prepared_rows(data_dir, ids, frames_per_video, manifest)
    else:
        from deeplab_face.data import vw300
        ids = vw300.list_videos(data_dir) if video_ids is None else [str(v) for v in video_ids]
        rows = _raw_rows(data_dir, ids, frames_per_video)
    if not ids:
        raise DataError(f"{data_dir}: no videos to preview")
    width = thumb * frames_per_video
    sheet = []
    for row in rows:
        cells = [_cell(*item, thumb) for item in row]
        cells += [np.zeros((thumb, thumb, 3), np.uint8)] * (frames_per_video - len(cells))
        sheet.append(np.concatenate(cells, axis=1))
    sheet.append(_legend(width))
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(np.concatenate(sheet, axis=0), cv2.COLOR_RGB2BGR)):
        raise DataError(f"{out}: cannot write the preview PNG")
    return out


def define_flags():
    flags.DEFINE_string("data_dir", None, "A 300VW-format tree or a prepared directory (manifest.json).")
    flags.DEFINE_string("out", "runs/demo/preview.png", "Where to write the PNG sheet.")
    flags.DEFINE_list("videos", None, "Video ids to show (default: all).")
    flags.DEFINE_integer("frames_per_video", 6, "Frames per row, evenly spaced over each video.", lower_bound=1)
    flags.DEFINE_integer("thumb", 128, "Side of one cell in pixels.", lower_bound=8)


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    if not FLAGS.data_dir:
        raise ConfigError("--data_dir: required")
    path = write_preview(FLAGS.data_dir, FLAGS.out, FLAGS.videos, FLAGS.frames_per_video, FLAGS.thumb)
    print(f"wrote preview sheet {path}")


if __name__ == "__main__":
    from deeplab_face.cli import run
    define_flags()
    run(main)
