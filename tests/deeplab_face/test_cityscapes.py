"""Cityscapes sequences: snippet rule F-19..F+10 and the vendored labelId -> trainId table."""
import cv2
import numpy as np
import pytest

from deeplab_face.data import cityscapes
from deeplab_face.errors import DataError

# reference/datasets.md §3 (from cityscapesScripts labels.py).
TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
             25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def test_label_table():
    table = cityscapes.LABEL_TO_TRAIN_ID
    assert table.shape == (256,) and table.dtype == np.uint8
    for label_id in range(256):
        assert table[label_id] == TRAIN_IDS.get(label_id, 255), label_id
    assert cityscapes.TRAIN_CLASS_NAMES[:3] == ("road", "sidewalk", "building")
    assert cityscapes.TRAIN_CLASS_NAMES[-1] == "bicycle" and len(cityscapes.TRAIN_CLASS_NAMES) == 19


def _snippet(root, split, city, sequence, annotated, frames):
    folder = root / "leftImg8bit_sequence" / split / city
    folder.mkdir(parents=True, exist_ok=True)
    for n in frames:
        image = np.full((8, 16, 3), n % 256, np.uint8)
        image[..., 0] = 255  # blue in BGR on disk -> the reader must return it in channel 2
        cv2.imwrite(str(folder / f"{city}_{sequence:06d}_{n:06d}_leftImg8bit.png"), image)
    gt = root / "gtFine" / split / city
    gt.mkdir(parents=True, exist_ok=True)
    label = np.array([[0, 1, 7, 9, 14, 26, 33, 255] * 2] * 8, np.uint8)  # void ids 0, 1, 9, 14, 255
    cv2.imwrite(str(gt / f"{city}_{sequence:06d}_{annotated:06d}_gtFine_labelIds.png"), label)


@pytest.fixture()
def root(tmp_path):
    _snippet(tmp_path, "val", "frankfurt", 0, 294, range(275, 305 + 1))  # one frame more than needed
    _snippet(tmp_path, "val", "aachen", 1, 19, range(0, 30))
    return tmp_path


def test_snippets_follow_the_rule(root):
    snippets = list(cityscapes.iter_snippets(root, "val"))
    assert [(s.city, s.sequence, s.frame) for s in snippets] == [("aachen", 1, 19), ("frankfurt", 0, 294)]
    aachen, frankfurt = snippets
    assert len(frankfurt.frame_paths) == 30
    assert frankfurt.frame_paths[0].name == "frankfurt_000000_000275_leftImg8bit.png"
    assert frankfurt.frame_paths[-1].name == "frankfurt_000000_000304_leftImg8bit.png"
    assert frankfurt.frame_paths[cityscapes.ANNOTATED_INDEX].name == "frankfurt_000000_000294_leftImg8bit.png"
    assert aachen.frame_paths[0].name.endswith("_000000_leftImg8bit.png")
    assert frankfurt.name == "frankfurt_000000_000294"
    frames, label = cityscapes.load_snippet(frankfurt)
    assert frames.shape == (30, 8, 16, 3)
    assert frames[19, 0, 0, 2] == 255 and frames[19, 0, 0, 0] == 294 % 256  # RGB, the 20th is F
    assert label.tolist()[0] == [255, 255, 0, 255, 255, 13, 18, 255] * 2
    assert [s.city for s in cityscapes.iter_snippets(root, "val", cities={"frankfurt"})] == ["frankfurt"]


def test_missing_frames_and_bad_names(root):
    (root / "leftImg8bit_sequence/val/aachen/aachen_000001_000029_leftImg8bit.png").unlink()
    with pytest.raises(DataError, match="aachen_000001_000029_leftImg8bit.png"):
        list(cityscapes.iter_snippets(root, "val"))
    with pytest.raises(DataError, match="gtFine"):
        list(cityscapes.iter_snippets(root, "train"))
    with pytest.raises(DataError):
        cityscapes.parse_gt_name("frankfurt_0_294_gtFine_labelIds.png")
    assert cityscapes.snippet_frame_numbers(19) == list(range(0, 30))
    with pytest.raises(ValueError):
        cityscapes.snippet_frame_numbers(18)
