"""The 300VW-Mask crop box and the square, padded, resized face crop."""
import numpy as np
import pytest

from deeplab_face.data.crop import (IMAGE_PAD_VALUE, crop_face, face_box, matlab_round, square_box)
from deeplab_face.data.masks import landmarks_to_label
from tests.deeplab_face.test_masks import ASTRONAUT


def _matlab_recipe_1_based(points0, width, height, extend=0.3):
    """crop_face_and_seg.m literally, on 1-based points; returns the 1-based inclusive box."""
    def mround(v):  # MATLAB round: halves away from zero
        return int(np.sign(v) * np.floor(abs(v) + 0.5))
    x, y = points0[:, 0] + 1.0, points0[:, 1] + 1.0
    det = [x.min(), y.min(), x.max(), y.max()]
    crop_w, crop_h = mround(det[2] - det[0]), mround(det[3] - det[1])
    length = (crop_w + crop_h) / 2
    cen = [mround(det[0] + crop_w / 2), mround(det[1] + crop_h / 2)]
    half = mround((1 + extend) * length / 2)
    return (max(1, cen[0] - half), max(1, cen[1] - half), min(cen[0] + half, width),
            min(cen[1] + half, height))


def test_astronaut_box():
    # 0-based extent x 179..272, y 87..178: w=93, h=91, L=92, cx=floor(225.5+.5)=226,
    # cy=floor(132.5+.5)=133, half=floor(59.8+.5)=60 -> inclusive (166,73)-(286,193).
    assert face_box(ASTRONAUT, (512, 512, 3)) == (166, 73, 287, 194)
    # MATLAB, 1-based inclusive: the same box plus one.
    assert _matlab_recipe_1_based(ASTRONAUT, 512, 512) == (167, 74, 287, 194)
    # datasets.md quotes (166,72)-(286,192): Python's half-to-even round(132.5) = 132, not MATLAB's.
    assert round(132.5) == 132 and matlab_round(132.5) == 133 and matlab_round(2.5) == 3


def test_box_matches_matlab_recipe_on_random_faces():
    rng = np.random.default_rng(0)
    for _ in range(200):
        width, height = int(rng.integers(60, 300)), int(rng.integers(60, 300))
        centre = rng.uniform(0, [width, height])
        points = (centre + rng.normal(0, 1, (68, 2)) * rng.uniform(3, 40)).astype(np.float32)
        if rng.random() < 0.3:
            points = np.round(points * 2) / 2  # half-pixel values exercise the rounding
        try:
            box = face_box(points, (height, width))
        except ValueError:
            continue  # box entirely outside the image (MATLAB would fail too)
        x1, y1, x2, y2 = _matlab_recipe_1_based(points, width, height)
        assert box == (x1 - 1, y1 - 1, x2, y2)


def test_square_box_is_square_and_centred():
    x0, y0, x1, y1 = square_box(ASTRONAUT)
    assert x1 - x0 == y1 - y0 == 121


def _face_image():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    return image, landmarks_to_label(ASTRONAUT, 512, 512)


def test_crop_without_resize_is_the_box():
    image, label = _face_image()
    out_image, out_label, points = crop_face(image, label, ASTRONAUT, 121)
    assert np.array_equal(out_image, image[73:194, 166:287])
    assert np.array_equal(out_label, label[73:194, 166:287])
    np.testing.assert_allclose(points, ASTRONAUT - [166, 73], atol=1e-4)


def test_clipped_box_is_padded_not_stretched():
    image, label = _face_image()
    # Cut the frame so that the face's box sticks out at the top and the left by 40 and 25 pixels.
    cut_image, cut_label = image[113:, 191:], label[113:, 191:]
    cut_points = ASTRONAUT - np.float32([191, 113])
    assert face_box(cut_points, cut_image.shape) == (0, 0, 96, 81)
    out_image, out_label, points = crop_face(cut_image, cut_label, cut_points, 121)
    full_image, full_label, full_points = crop_face(image, label, ASTRONAUT, 121)
    # The part inside the frame is exactly where it was; the rest is grey image, background label.
    assert np.array_equal(out_image[40:, 25:], full_image[40:, 25:])
    assert np.array_equal(out_label[40:, 25:], full_label[40:, 25:])
    assert (out_image[:40] == IMAGE_PAD_VALUE).all() and (out_image[:, :25] == IMAGE_PAD_VALUE).all()
    assert (out_label[:40] == 0).all() and (out_label[:, :25] == 0).all()
    np.testing.assert_allclose(points, full_points, atol=1e-4)
    # Resized: still the same picture as the unclipped crop away from the pad border.
    small_cut = crop_face(cut_image, cut_label, cut_points, 65)
    small_full = crop_face(image, label, ASTRONAUT, 65)
    assert small_cut[0].shape == (65, 65, 3) and small_cut[1].shape == (65, 65)
    assert np.array_equal(small_cut[1][30:, 30:], small_full[1][30:, 30:])
    assert np.array_equal(small_cut[0][30:, 30:], small_full[0][30:, 30:])


def test_resize_keeps_labels_and_maps_points():
    image, label = _face_image()
    out_image, out_label, points = crop_face(image, label, ASTRONAUT, 65)
    assert out_image.dtype == np.uint8 and out_label.dtype == np.uint8
    assert set(np.unique(out_label)) <= {0, 1, 2, 3, 4} and len(np.unique(out_label)) == 5
    _, _, mapped = crop_face(None, label, ASTRONAUT, 65)
    scale = 65 / 121
    np.testing.assert_allclose(mapped, (ASTRONAUT - [166, 73] + 0.5) * scale - 0.5, atol=1e-4)
    # The box's centre pixel (226, 133) maps to the crop's centre pixel (S - 1) / 2.
    box_centre = (np.float32([226, 133]) - [166, 73] + 0.5) * scale - 0.5
    np.testing.assert_allclose(box_centre, [32, 32], atol=1e-6)
    # Points land on their own labels: the nose tip stays skin after the crop.
    nose = np.round(points[30]).astype(int)
    assert out_label[nose[1], nose[0]] == 1


def test_errors():
    with pytest.raises(ValueError):
        face_box(ASTRONAUT + 2000, (512, 512))
    with pytest.raises(ValueError):
        crop_face(None, None, ASTRONAUT, 65)
