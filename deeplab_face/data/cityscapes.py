"""Cityscapes video snippets (reference/datasets.md §3) for the Cityscapes side of the paper.

Layout::

    <root>/leftImg8bit_sequence/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png
    <root>/gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png

Each gtFine label F belongs to a 30-frame snippet (1.8 s at about 17 fps) in which it is the 20th
frame. Frame numbers are absolute (most F are 000019, but e.g. val frankfurt_000000_000294 exists),
so the snippet of F is F-19 .. F+10, with F taken from the gtFine name.

The labelId -> trainId table is vendored from mcordts/cityscapesScripts
(`cityscapesscripts/helpers/labels.py`, Copyright (c) 2016 Marius Cordts and contributors, MIT
License) instead of depending on that package and its heavy dependencies.
"""
import dataclasses
import pathlib
import re

import cv2
import numpy as np

from deeplab_face.errors import DataError

IGNORE_LABEL = 255
SNIPPET_LENGTH = 30
ANNOTATED_INDEX = 19  # 0-based position of the labelled frame in its snippet (the 20th frame)

# (name, labelId, trainId) from cityscapesScripts labels.py; 255 = ignored in training/evaluation.
# ("license plate", id -1, is not a pixel value and is left out.)
CITYSCAPES_LABELS = (
    ("unlabeled", 0, 255), ("ego vehicle", 1, 255), ("rectification border", 2, 255),
    ("out of roi", 3, 255), ("static", 4, 255), ("dynamic", 5, 255), ("ground", 6, 255),
    ("road", 7, 0), ("sidewalk", 8, 1), ("parking", 9, 255), ("rail track", 10, 255),
    ("building", 11, 2), ("wall", 12, 3), ("fence", 13, 4), ("guard rail", 14, 255),
    ("bridge", 15, 255), ("tunnel", 16, 255), ("pole", 17, 5), ("polegroup", 18, 255),
    ("traffic light", 19, 6), ("traffic sign", 20, 7), ("vegetation", 21, 8), ("terrain", 22, 9),
    ("sky", 23, 10), ("person", 24, 11), ("rider", 25, 12), ("car", 26, 13), ("truck", 27, 14),
    ("bus", 28, 15), ("caravan", 29, 255), ("trailer", 30, 255), ("train", 31, 16),
    ("motorcycle", 32, 17), ("bicycle", 33, 18),
)


def _label_to_train_id_table():
    table = np.full(256, IGNORE_LABEL, np.uint8)  # ids not in the list are void as well
    for _, label_id, train_id in CITYSCAPES_LABELS:
        table[label_id] = train_id
    return table


LABEL_TO_TRAIN_ID = _label_to_train_id_table()
NUM_CLASSES = 19
TRAIN_CLASS_NAMES = tuple(name for name, _, train_id in sorted(
    (c for c in CITYSCAPES_LABELS if c[2] != IGNORE_LABEL), key=lambda c: c[2]))

_GT_NAME = re.compile(r"^(?P<city>.+)_(?P<seq>\d{6})_(?P<frame>\d{6})_gtFine_labelIds\.png$")


def to_train_ids(label_ids):
    """Maps a uint8 labelId image to trainIds 0-18 (255 void) with the 256-entry table."""
    label_ids = np.asarray(label_ids)
    if label_ids.dtype != np.uint8:
        raise ValueError(f"labelIds must be uint8, got {label_ids.dtype}")
    return LABEL_TO_TRAIN_ID[label_ids]


def read_train_ids(path):
    """Reads a `_gtFine_labelIds.png` as uint8 (H, W) trainIds."""
    path = pathlib.Path(path)
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise DataError(f"{path}: cannot read Cityscapes label image")
    if label.ndim != 2 or label.dtype != np.uint8:
        raise DataError(f"{path}: expected a single-channel 8-bit labelIds PNG, got shape "
                        f"{label.shape} {label.dtype}")
    return to_train_ids(label)


def read_frame(path):
    """Reads one `_leftImg8bit.png` as RGB uint8 (H, W, 3)."""
    path = pathlib.Path(path)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"{path}: cannot read Cityscapes frame")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def snippet_frame_numbers(annotated_frame):
    """The absolute frame numbers F-19 .. F+10 of the snippet of annotated frame F."""
    first = annotated_frame - ANNOTATED_INDEX
    if first < 0:
        raise ValueError(f"annotated frame {annotated_frame} is too early for a 30-frame snippet")
    return list(range(first, first + SNIPPET_LENGTH))


def frame_path(root, split, city, sequence, frame):
    return (pathlib.Path(root) / "leftImg8bit_sequence" / split / city
            / f"{city}_{sequence:06d}_{frame:06d}_leftImg8bit.png")


@dataclasses.dataclass(frozen=True)
class Snippet:
    """One annotated frame and the 30 frames around it (`frame_paths[ANNOTATED_INDEX]` is labelled)."""
    split: str
    city: str
    sequence: int
    frame: int
    label_path: pathlib.Path
    frame_paths: tuple

    @property
    def name(self):
        return f"{self.city}_{self.sequence:06d}_{self.frame:06d}"


def parse_gt_name(path):
    """(city, sequence, frame) from a `{city}_{seq}_{frame}_gtFine_labelIds.png` name."""
    match = _GT_NAME.match(pathlib.Path(path).name)
    if not match:
        raise DataError(f"{path}: not a Cityscapes '<city>_<seq>_<frame>_gtFine_labelIds.png' name")
    return match["city"], int(match["seq"]), int(match["frame"])


def iter_snippets(root, split, cities=None, check_frames=True):
    """Yields a `Snippet` per gtFine label of `split` ("train", "val"), sorted by city, seq, frame.

    With `check_frames`, every one of the 30 frame files must exist (DataError names the first
    missing one): this checks the F-19 .. F+10 rule against the data actually on disk.
    """
    root = pathlib.Path(root)
    gt_dir = root / "gtFine" / split
    if not gt_dir.is_dir():
        raise DataError(f"{gt_dir}: Cityscapes gtFine split folder not found")
    if not (root / "leftImg8bit_sequence" / split).is_dir():
        raise DataError(f"{root / 'leftImg8bit_sequence' / split}: Cityscapes sequence folder not found")
    labels = sorted(gt_dir.glob("*/*_gtFine_labelIds.png"))
    if not labels:
        raise DataError(f"{gt_dir}: no *_gtFine_labelIds.png files")
    for label_path in labels:
        city, sequence, frame = parse_gt_name(label_path)
        if cities is not None and city not in cities:
            continue
        try:
            numbers = snippet_frame_numbers(frame)
        except ValueError as e:
            raise DataError(f"{label_path}: {e}") from None
        paths = tuple(frame_path(root, split, city, sequence, n) for n in numbers)
        if check_frames:
            for path in paths:
                if not path.is_file():
                    raise DataError(f"{path}: snippet frame missing (snippet of {label_path.name} "
                                    f"is frames {numbers[0]}..{numbers[-1]})")
        yield Snippet(split, city, sequence, frame, label_path, paths)


def load_snippet(snippet):
    """(frames uint8 (30, H, W, 3) RGB, trainIds uint8 (H, W) of frame ANNOTATED_INDEX)."""
    frames = np.stack([read_frame(p) for p in snippet.frame_paths])
    label = read_train_ids(snippet.label_path)
    if label.shape != frames.shape[1:3]:
        raise DataError(f"{snippet.label_path}: label size {label.shape} differs from its frames "
                        f"{frames.shape[1:3]}")
    return frames, label
