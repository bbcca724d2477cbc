"""Landmarks -> label (300VW-Mask recipe) and 300VW-Mask label PNGs."""
import numpy as np
import pytest
from PIL import Image
from skimage.draw import polygon as skimage_polygon

from deeplab_face.data import masks
from deeplab_face.data.masks import (FACE_PALETTE, colorize, fill_polygon, landmarks_to_label,
                                     read_label_png, spline_segment)
from deeplab_face.errors import DataError

# The astronaut landmarks of reference/datasets.md §4 (dlib 68-point predictor, 0-based, iBUG order).
ASTRONAUT = np.array([int(v) for pair in """
179,104 179,116 180,127 181,139 185,151 191,160 200,169 209,176 221,178 232,177 243,171 253,164
260,154 265,144 268,132 270,120 272,108 186,94 192,88 200,87 208,89 216,92 236,93 244,91
252,91 260,92 265,98 225,103 225,111 225,119 225,127 214,131 219,132 224,134 229,133 234,132
195,101 200,98 207,98 212,104 206,104 199,104 238,105 244,101 250,101 255,104 250,107 244,106
201,140 209,139 218,139 223,141 229,140 237,140 245,141 237,151 229,155 222,156 216,155 208,150
204,141 217,143 223,144 229,143 243,142 229,150 223,150 217,150""".split() for v in pair.split(",")],
                     np.float32).reshape(68, 2)


def _at(label, x, y):
    return int(label[int(round(y)), int(round(x))])


def test_hand_checkable_regions():
    label = landmarks_to_label(ASTRONAUT, 512, 512)
    assert label.dtype == np.uint8 and label.shape == (512, 512)
    left_eye, right_eye = ASTRONAUT[36:42].mean(0), ASTRONAUT[42:48].mean(0)
    assert _at(label, *left_eye) == 2 and _at(label, *right_eye) == 2
    assert _at(label, *ASTRONAUT[30]) == 1                      # nose tip
    assert _at(label, 225, 117) == 1                            # nose bridge
    assert _at(label, 223, 142.5) == 3                          # upper lip: between 51 and 62
    assert _at(label, 222.5, 153) == 3                          # lower lip: between 66 and 57
    assert _at(label, 223, 147) == 4                            # open mouth: between 62 and 66
    assert _at(label, 0, 0) == 0 and _at(label, 511, 511) == 0  # image corners
    assert _at(label, 225, 70) == 0                             # forehead (above the brows)
    assert _at(label, 190, 130) == 1                            # cheek
    assert set(np.unique(label)) == {0, 1, 2, 3, 4}


def test_paint_order_inner_mouth_over_lips_over_skin():
    label = landmarks_to_label(ASTRONAUT, 512, 512)
    # The inner-mouth polygon lies inside the lip ring, which lies inside the skin polygon; all
    # three classes survive only with the paint order skin -> eyes -> outer mouth -> inner mouth.
    counts = np.bincount(label.ravel(), minlength=5)
    assert counts[4] > 40 and counts[3] > 100 and counts[2] > 60 and counts[1] > 4000


def test_spline_not_a_knot_reproduces_a_cubic_and_samples_every_hundredth():
    t = np.arange(5.0)
    points = np.stack([t ** 3 - 2 * t, 0.5 * t ** 2 + t], axis=1)
    samples = spline_segment(points, range(5))
    assert samples.shape == (401, 2)
    tt = np.linspace(0, 4, 401)
    # Not-a-knot interpolates a cubic exactly; a natural spline (zero end curvature) would not.
    np.testing.assert_allclose(samples, np.stack([tt ** 3 - 2 * tt, 0.5 * tt ** 2 + tt], 1), atol=1e-9)
    np.testing.assert_allclose(samples[::100], points)


def test_fill_polygon_is_pixel_centre_inside_test():
    rng = np.random.default_rng(0)
    for _ in range(50):
        poly = rng.uniform(-4, 36, (int(rng.integers(3, 10)), 2))
        ours = fill_polygon(np.zeros((32, 32), np.uint8), poly, 7)
        reference = np.zeros((32, 32), np.uint8)
        rr, cc = skimage_polygon(poly[:, 1], poly[:, 0], (32, 32))
        reference[rr, cc] = 7
        assert np.array_equal(ours, reference)
    # A square with edges through half pixels covers exactly the centres inside it.
    square = fill_polygon(np.zeros((6, 6), np.uint8), [(0.5, 0.5), (3.5, 0.5), (3.5, 3.5), (0.5, 3.5)], 1)
    assert square.sum() == 9 and square[1:4, 1:4].all()


def test_label_follows_translation():
    shifted = landmarks_to_label(ASTRONAUT + np.float32([7, -5]), 512, 512)
    base = landmarks_to_label(ASTRONAUT, 512, 512)
    assert np.array_equal(shifted[50:450, 50:450], base[55:455, 43:443])


def test_bad_points_shape():
    with pytest.raises(ValueError):
        landmarks_to_label(np.zeros((67, 2)), 8, 8)


def _label_image():
    label = np.zeros((6, 8), np.uint8)
    label[1, :] = 1
    label[2, :] = 2
    label[3, :] = 3
    label[4, :] = 4
    return label


def test_read_rgb_colour_label(tmp_path):
    label = _label_image()
    Image.fromarray(FACE_PALETTE[label]).save(tmp_path / "rgb.png")
    assert np.array_equal(read_label_png(tmp_path / "rgb.png"), label)
    rgba = np.concatenate([FACE_PALETTE[label], np.full(label.shape + (1,), 255, np.uint8)], -1)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert np.array_equal(read_label_png(tmp_path / "rgba.png"), label)


def test_read_index_labels(tmp_path):
    label = _label_image()
    label[5, 0] = 255  # ignore
    Image.fromarray(label, mode="L").save(tmp_path / "grey.png")
    assert np.array_equal(read_label_png(tmp_path / "grey.png"), label)
    palette = Image.fromarray(label, mode="L").convert("P")
    palette.putpalette(list(np.random.default_rng(1).integers(0, 256, 768)))  # colours irrelevant
    palette.save(tmp_path / "palette.png")
    assert np.array_equal(read_label_png(tmp_path / "palette.png"), label)
    Image.fromarray(np.repeat(label[..., None], 3, -1)).save(tmp_path / "grey_rgb.png")
    assert np.array_equal(read_label_png(tmp_path / "grey_rgb.png"), label)
    masks.write_label_png(tmp_path / "written.png", label)
    assert np.array_equal(read_label_png(tmp_path / "written.png"), label)


def test_bad_label_pngs(tmp_path):
    colours = FACE_PALETTE[_label_image()]
    colours[2, 3] = (255, 255, 0)  # yellow: not a class colour
    Image.fromarray(colours).save(tmp_path / "yellow.png")
    with pytest.raises(DataError, match="yellow.png"):
        read_label_png(tmp_path / "yellow.png")
    index = _label_image()
    index[0, 0] = 7
    Image.fromarray(index).save(tmp_path / "seven.png")
    with pytest.raises(DataError, match="seven.png"):
        read_label_png(tmp_path / "seven.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="junk.png"):
        read_label_png(tmp_path / "junk.png")


def test_colorize_and_overlay():
    label = _label_image()
    label[0, 0] = 255
    colours = colorize(label)
    assert colours.shape == (6, 8, 3) and colours.dtype == np.uint8
    assert tuple(colours[3, 0]) == (0, 255, 255) and tuple(colours[1, 0]) == (255, 0, 0)
    assert tuple(colours[0, 0]) == (255, 255, 255)
    image = np.full((6, 8, 3), 100, np.uint8)
    mixed = masks.overlay(image, label, alpha=0.5)
    assert tuple(mixed[0, 1]) == (100, 100, 100)        # background untouched
    assert tuple(mixed[1, 0]) == (178, 50, 50)          # half red
