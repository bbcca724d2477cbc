"""300VW on disk (reference/datasets.md §1) and the 300VW-Mask release layout.

300VW: `<root>/<NNN>/vid.avi` + `<root>/<NNN>/annot/%06d.pts`. Ids are the folder names, kept as
strings ("001"). Frames are paired with annotations by number: the n-th decoded frame (1-based, as
ffmpeg's `%06d.png` extraction counts) goes with `annot/%06d.pts` % n, so `000001.pts` is frame 1.
When the video and the annotations disagree in length the shorter wins and one warning names the
video and both counts (300VW itself has as many frames as `.pts` files; pair, do not assert).

Split files (`read_split`): either plain video-id lists (ids separated by white space or commas,
`#` comments) or 300VW-Mask `data_splits/split_2/{A,B,C}.txt` lines
`/images_orig/xxx_yyyyyy.jpg /labels_orig/xxx_yyyyyy.png` (id xxx, frame yyyyyy). Without a
split file the documented default is the official 300VW challenge split, `OFFICIAL_SPLITS`.

Exclusion lists (`read_exclusions`): one entry per line, `#` starts a comment, blank lines ignored:
    VID                 the whole video
    VID FRAME           one frame (1-based, as in the .pts names)
    VID FIRST-LAST      frames FIRST..LAST inclusive
(300VW-Mask drops frames with bad landmarks, listed in 300VW's `ReadMe.txt` / `extra.zip`.)

300VW-Mask release (`iter_mask_release`): `<root>/images_orig/{vid}_{frame:06d}.jpg` and
`<root>/labels_orig/{vid}_{frame:06d}.png` (RGB colour or index labels, see `masks.read_label_png`).

Frames come out RGB uint8 (OpenCV decodes BGR; converted once, here).
"""
import dataclasses
import pathlib
import re

import cv2
from absl import logging

from deeplab_face.data.masks import read_label_png
from deeplab_face.data.pts import read_pts
from deeplab_face.errors import DataError

VIDEO_FILE = "vid.avi"
ANNOTATION_DIR = "annot"

# The official 300VW challenge split (D-X-Y/landmark-detection, ids confirmed in its issue #72).
OFFICIAL_SPLITS = {
    "train": tuple("001 002 003 004 007 009 010 011 013 015 016 017 018 019 020 022 025 027 028 029 "
                   "031 033 034 035 037 039 041 043 044 046 047 048 049 053 057 059 112 113 115 119 "
                   "120 123 138 143 144 160 204 205 223 225".split()),
    "test1": tuple("114 124 125 126 150 158 401 402 505 506 507 508 509 510 511 514 515 518 519 520 "
                   "521 522 524 525 537 538 540 541 546 547 548".split()),
    "test2": tuple("203 208 211 212 213 214 218 224 403 404 405 406 407 408 409 412 550 551 553".split()),
    "test3": tuple("410 411 516 517 526 528 529 530 531 533 557 558 559 562".split()),
}

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*$")
_MASK_NAME = re.compile(r"^(?P<video>.+)_(?P<frame>\d+)\.(?:jpg|jpeg|png)$", re.IGNORECASE)


def _text_lines(path, what):
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read {what} ({e})") from None
    for number, raw in enumerate(re.split(r"\r\n|\r|\n", text), start=1):
        line = raw.split("#", 1)[0].strip()
        if line:
            yield number, line


# -- split files --------------------------------------------------------------------------------
def read_split_frames(path):
    """{video id: sorted 1-based frames, or None for a whole-video entry} of a split file."""
    path = pathlib.Path(path)
    videos = {}
    for number, line in _text_lines(path, "split file"):
        tokens = line.replace(",", " ").split()
        if any("/" in t or _MASK_NAME.match(t) for t in tokens):
            for token in tokens:  # a 300VW-Mask line: image path and label path of one frame
                match = _MASK_NAME.match(token.rsplit("/", 1)[-1])
                if not match:
                    raise DataError(f"{path}: line {number}: expected /images_orig/VID_FRAME.jpg "
                                    f"/labels_orig/VID_FRAME.png, got {token!r}")
                frames = videos.setdefault(match["video"], [])
                if frames is not None:
                    frames.append(int(match["frame"]))
        else:
            for token in tokens:
                if not _ID.match(token):
                    raise DataError(f"{path}: line {number}: not a video id: {token!r}")
                videos[token] = None
    if not videos:
        raise DataError(f"{path}: split file lists no videos")
    return {v: (sorted(set(f)) if f is not None else None) for v, f in videos.items()}


def read_split(path):
    """Video ids (in order of first appearance) of a plain id list or a 300VW-Mask split_2 file."""
    return list(read_split_frames(path))


def _resolve_split(split):
    """A split given as None, a name in OFFICIAL_SPLITS, a split-file path, or an iterable of ids."""
    if split is None:
        return None
    if isinstance(split, str) and split in OFFICIAL_SPLITS:
        return set(OFFICIAL_SPLITS[split])
    if isinstance(split, (str, pathlib.Path)):
        return set(read_split(split))
    return {str(v) for v in split}


# -- exclusion lists ----------------------------------------------------------------------------
@dataclasses.dataclass
class Exclusions:
    """Whole videos and single frames to leave out (see the module docstring for the file format)."""
    videos: set = dataclasses.field(default_factory=set)
    frames: dict = dataclasses.field(default_factory=dict)  # video id -> set of 1-based frames

    def excludes(self, video_id, frame=None):
        if video_id in self.videos:
            return True
        return frame is not None and frame in self.frames.get(video_id, ())


def read_exclusions(path):
    """Parses an exclusion list file into `Exclusions`."""
    path = pathlib.Path(path)
    result = Exclusions()
    for number, line in _text_lines(path, "exclusion list"):
        tokens = line.split()
        if len(tokens) > 2 or not _ID.match(tokens[0]):
            raise DataError(f"{path}: line {number}: expected 'VID', 'VID FRAME' or 'VID FIRST-LAST', "
                            f"got {line!r}")
        if len(tokens) == 1:
            result.videos.add(tokens[0])
            continue
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", tokens[1])
        if not match:
            raise DataError(f"{path}: line {number}: frame must be N or FIRST-LAST, got {tokens[1]!r}")
        first = int(match[1])
        last = int(match[2]) if match[2] else first
        if first < 1 or last < first:
            raise DataError(f"{path}: line {number}: bad frame range {tokens[1]!r} (frames start at 1)")
        result.frames.setdefault(tokens[0], set()).update(range(first, last + 1))
    return result


def _resolve_exclusions(exclude):
    """None, an `Exclusions`, a path to an exclusion list, or an iterable of video ids."""
    if exclude is None or isinstance(exclude, Exclusions):
        return exclude or Exclusions()
    if isinstance(exclude, (str, pathlib.Path)):
        return read_exclusions(exclude)
    return Exclusions(videos={str(v) for v in exclude})


# -- 300VW videos -------------------------------------------------------------------------------
def list_videos(root, split=None, exclude=None):
    """Sorted ids of the video folders under `root` (those holding `vid.avi`).

    `split`: None (all), a name in `OFFICIAL_SPLITS`, a split-file path or an iterable of ids; ids
    of the split that are not under `root` are left out (the caller can compare). `exclude`: see
    `_resolve_exclusions`; only whole-video entries remove a video here.
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: 300VW data directory not found")
    wanted = _resolve_split(split)
    exclusions = _resolve_exclusions(exclude)
    ids = sorted(p.name for p in root.iterdir() if (p / VIDEO_FILE).is_file())
    return [v for v in ids if (wanted is None or v in wanted) and v not in exclusions.videos]


def annotation_files(root, video_id):
    """{1-based frame number: .pts path} of one video."""
    annot = pathlib.Path(root) / str(video_id) / ANNOTATION_DIR
    if not annot.is_dir():
        raise DataError(f"{annot}: annotation folder not found")
    files = {}
    for path in annot.iterdir():
        if path.suffix.lower() != ".pts":
            continue
        if not path.stem.isdigit() or int(path.stem) < 1:
            raise DataError(f"{path}: .pts names must be 1-based frame numbers like 000001.pts")
        files[int(path.stem)] = path
    if not files:
        raise DataError(f"{annot}: no .pts files")
    return files


def open_video(path):
    """An opened cv2.VideoCapture, or DataError naming the file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"{path}: video file not found")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise DataError(f"{path}: OpenCV cannot open this video (unreadable or unsupported codec)")
    return capture


def video_info(root, video_id):
    """{"fps", "width", "height", "frames"} as the container reports them (frames may be approximate)."""
    path = pathlib.Path(root) / str(video_id) / VIDEO_FILE
    capture = open_video(path)
    try:
        return {"fps": float(capture.get(cv2.CAP_PROP_FPS)),
                "width": int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                "height": int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                "frames": int(capture.get(cv2.CAP_PROP_FRAME_COUNT))}
    finally:
        capture.release()


def iter_video(root, video_id, exclude=None):
    """Lazily yields (video_id, frame number (1-based), RGB uint8 (H, W, 3), points float32 (68, 2)).

    Decodes `vid.avi` once, front to back, and reads each frame's `.pts` when it is reached.
    Frames without a `.pts` inside the annotated range, and excluded frames, are skipped. When the
    video has more or fewer frames than the last annotated number, the shorter length is used and
    one warning names the video and both counts.
    """
    video_id = str(video_id)
    video_path = pathlib.Path(root) / video_id / VIDEO_FILE
    exclusions = _resolve_exclusions(exclude)
    pts_files = annotation_files(root, video_id)
    annotated = max(pts_files)
    missing = annotated - len(pts_files)
    if missing:
        logging.warning("300VW video %s: %d of frames 1..%d have no .pts file; those frames are skipped",
                        video_id, missing, annotated)
    if exclusions.excludes(video_id):
        return
    capture = open_video(video_path)
    try:
        frame_number = 0
        while frame_number < annotated:
            ok, bgr = capture.read()
            if not ok:
                break
            frame_number += 1
            if frame_number not in pts_files or exclusions.excludes(video_id, frame_number):
                continue
            points = read_pts(pts_files[frame_number])
            yield video_id, frame_number, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), points
        if frame_number == 0:
            raise DataError(f"{video_path}: no decodable frames")
        decoded = frame_number
        if frame_number == annotated:
            while capture.grab():  # count the frames beyond the annotations, for the warning
                decoded += 1
        if decoded != annotated:
            logging.warning("300VW video %s: %s has %d frames but %s has %d .pts (up to %06d.pts); "
                            "using the first %d frames", video_id, video_path, decoded,
                            video_path.parent / ANNOTATION_DIR, len(pts_files), annotated,
                            min(decoded, annotated))
    finally:
        capture.release()


# -- the 300VW-Mask release ----------------------------------------------------------------------
def _mask_release_files(folder, suffixes):
    files = {}
    if not folder.is_dir():
        raise DataError(f"{folder}: 300VW-Mask folder not found")
    for path in folder.iterdir():
        match = _MASK_NAME.match(path.name)
        if match and path.suffix.lower() in suffixes:
            files[(match["video"], int(match["frame"]))] = path
    return files


def list_mask_release_videos(root):
    """Sorted video ids present in a 300VW-Mask release (`images_orig/`)."""
    return sorted({v for v, _ in _mask_release_files(pathlib.Path(root) / "images_orig",
                                                      (".jpg", ".jpeg", ".png"))})


def iter_mask_release(root, video_id, exclude=None):
    """Yields (video_id, frame (1-based), RGB uint8 (H, W, 3), label uint8 (H, W)) in frame order.

    Frames with an image but no label (or the reverse) are skipped with one warning.
    """
    root, video_id = pathlib.Path(root), str(video_id)
    exclusions = _resolve_exclusions(exclude)
    image_files = _mask_release_files(root / "images_orig", (".jpg", ".jpeg", ".png"))
    images = {f: p for (v, f), p in image_files.items() if v == video_id}
    labels = {f: p for (v, f), p in _mask_release_files(root / "labels_orig", (".png",)).items()
              if v == video_id}
    if not images:
        raise DataError(f"{root / 'images_orig'}: no images of video {video_id}")
    unpaired = set(images) ^ set(labels)
    if unpaired:
        logging.warning("300VW-Mask video %s: %d images and %d labels; %d frames without a partner "
                        "are skipped", video_id, len(images), len(labels), len(unpaired))
    for frame in sorted(set(images) & set(labels)):
        if exclusions.excludes(video_id, frame):
            continue
        bgr = cv2.imread(str(images[frame]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DataError(f"{images[frame]}: cannot read image")
        label = read_label_png(labels[frame])
        if label.shape != bgr.shape[:2]:
            raise DataError(f"{labels[frame]}: label size {label.shape} differs from its image "
                            f"{bgr.shape[:2]}")
        yield video_id, frame, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), label

