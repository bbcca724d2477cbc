"""Face labels from 68 landmarks (the 300VW-Mask recipe) and 300VW-Mask's released label PNGs.

The recipe is mapleandfire/300VW-Mask `processing_scripts/do_segmentation.m` (Wang et al., "Face
Mask Extraction in Video Sequence", IJCV 2019), see reference/datasets.md §2: every boundary segment
is a cubic spline through its landmarks (x and y fitted separately against the point index, MATLAB
`spline` = not-a-knot = SciPy `CubicSpline`'s default), sampled every 0.01; the segments of a part
join into one closed polygon, and the polygons are painted skin -> eyes -> outer mouth -> inner
mouth, each overwriting the earlier ones. Classes (DESIGN.md): 0 background, 1 facial skin, 2 eyes,
3 outer mouth (lips), 4 inner mouth, 255 ignore.

Filling: MATLAB's `roipoly` marks the pixels whose centres lie inside the polygon; `fill_polygon`
does the same on the sub-pixel spline samples (pixel (row i, column j) has its centre at 0-based
(x=j, y=i)). Edges may differ from MATLAB by about 1 px (roipoly's own edge-pixel rules).
"""
import pathlib

import cv2
import numpy as np
from PIL import Image  # Pillow: a dependency of matplotlib and scikit-image; keeps palette indices
from scipy.interpolate import CubicSpline

from deeplab_face.errors import DataError

BACKGROUND, SKIN, EYES, OUTER_MOUTH, INNER_MOUTH = 0, 1, 2, 3, 4
NUM_CLASSES = 5
IGNORE_LABEL = 255
CLASS_NAMES = ("background", "facial skin", "eyes", "outer mouth", "inner mouth")

SPLINE_STEP = 0.01  # 300VW-Mask `interpolate_xx_yy.m`: 1 : 0.01 : n

# Polygons in paint order: (class, segments); each segment is a list of 0-based iBUG-68 indices
# (do_segmentation.m, whose ids are 1-based). A polygon is its segments' samples concatenated.
FACE_POLYGONS = (
    # Skin: jaw 0->16, right brow 26->22, left brow 21->17, closed (no forehead; the nose is skin).
    (SKIN, ([*range(0, 17)], [*range(26, 21, -1)], [*range(21, 16, -1)])),
    (EYES, ([36, 37, 38, 39], [39, 40, 41, 36])),
    (EYES, ([42, 43, 44, 45], [45, 46, 47, 42])),
    (OUTER_MOUTH, ([48, 49, 50, 51], [51, 52, 53, 54], [54, 55, 56, 57, 58, 59, 48])),
    (INNER_MOUTH, ([60, 61, 62, 63, 64], [64, 65, 66, 67, 60])),
)

# The 300VW-Mask script's RGB colours per class (black, red, green, cyan, blue); also the overlay
# palette. Row 255 (ignore) is drawn white by `colorize`.
FACE_PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 255, 255], [0, 0, 255]], np.uint8)
_IGNORE_COLOUR = np.array([255, 255, 255], np.uint8)


def spline_segment(points, indices, step=SPLINE_STEP):
    """Samples the not-a-knot cubic spline through `points[indices]` at parameter steps of `step`.

    The parameter is the point index within the segment (MATLAB: 1 : step : n). Returns float64 (m, 2).
    """
    part = np.asarray(points, np.float64)[list(indices)]
    n = len(part)
    t = np.arange(n, dtype=np.float64)
    samples = int(round((n - 1) / step)) + 1
    tt = np.linspace(0.0, n - 1.0, samples)
    # SciPy, like MATLAB, degrades not-a-knot to a line / parabola for 2 / 3 points.
    return CubicSpline(t, part, axis=0, bc_type="not-a-knot")(tt)


def face_polygons(points):
    """The filled outlines in paint order: list of (class id, float64 (m, 2) closed polygon)."""
    polygons = []
    for class_id, segments in FACE_POLYGONS:
        outline = np.concatenate([spline_segment(points, seg) for seg in segments])
        polygons.append((class_id, outline))
    return polygons


def _check_points(points):
    points = np.asarray(points, np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got shape {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError("landmarks must be finite")
    return points


def fill_polygon(label, polygon, value):
    """Sets `label` pixels whose centres lie inside the closed float polygon (even-odd rule), in place.

    Pixel (row i, column j) has its centre at (x=j, y=i). A scanline fill, exact for sub-pixel
    vertices: a centre on a left edge is inside, on a right edge outside, and each horizontal line
    counts an edge over the half-open range [y_low, y_high), so shared vertices are not doubled.
    Same semantics as MATLAB `roipoly` / `poly2mask` on pixel centres; `cv2.fillPoly` would instead
    also paint every pixel its edges touch (about half a pixel of outward bias).
    """
    height, width = label.shape
    start = np.asarray(polygon, np.float64)
    end = np.roll(start, -1, axis=0)
    y_low, y_high = np.minimum(start[:, 1], end[:, 1]), np.maximum(start[:, 1], end[:, 1])
    first_row = max(0, int(np.ceil(y_low.min())))
    last_row = min(height - 1, int(np.ceil(y_high.max())) - 1)
    if last_row < first_row:
        return label
    rows = np.arange(first_row, last_row + 1, dtype=np.float64)
    crosses = (y_low[:, None] <= rows[None, :]) & (rows[None, :] < y_high[:, None])
    edge, row = np.nonzero(crosses)
    x0, y0, x1, y1 = start[edge, 0], start[edge, 1], end[edge, 0], end[edge, 1]
    x = x0 + (rows[row] - y0) * (x1 - x0) / (y1 - y0)  # y1 != y0 wherever an edge crosses a row
    order = np.lexsort((x, row))
    row, x = row[order], x[order]
    # Crossings pair up within a row (closed polygon); fill centres j with x_in <= j < x_out.
    row_in, x_in, x_out = row[0::2], x[0::2], x[1::2]
    col_in = np.clip(np.ceil(x_in), 0, width).astype(np.int64)
    col_out = np.clip(np.ceil(x_out), 0, width).astype(np.int64)
    runs = np.zeros((len(rows), width + 1), np.int32)
    np.add.at(runs, (row_in, col_in), 1)
    np.add.at(runs, (row_in, col_out), -1)
    inside = (np.cumsum(runs, axis=1)[:, :width] % 2).astype(bool)
    label[first_row:last_row + 1][inside] = value
    return label


def landmarks_to_label(points, height, width):
    """uint8 (height, width) face label of 0-based (68, 2) (x, y) landmarks; 300VW-Mask recipe."""
    points = _check_points(points)
    label = np.zeros((int(height), int(width)), np.uint8)
    for class_id, outline in face_polygons(points):
        fill_polygon(label, outline, class_id)
    return label


def _decode_rgb_label(path, rgb):
    """Maps the script's colours to class ids; anything else is a DataError."""
    def pack(colours):  # one int32 per RGB triple
        colours = colours.astype(np.int32)
        return (colours[..., 0] << 16) | (colours[..., 1] << 8) | colours[..., 2]

    codes, lut_codes = pack(rgb), pack(FACE_PALETTE)
    label = np.full(codes.shape, IGNORE_LABEL, np.uint8)
    known = np.zeros(codes.shape, bool)
    for class_id, code in enumerate(lut_codes):
        hit = codes == code
        label[hit] = class_id
        known |= hit
    if not known.all():
        r, c = np.argwhere(~known)[0]
        raise DataError(f"{path}: colour {tuple(int(v) for v in rgb[r, c])} at (row {r}, col {c}) "
                        f"is not a face label colour (black/red/green/cyan/blue); "
                        f"{int((~known).sum())} such pixels")
    return label


def _check_index_label(path, label):
    valid = (label < NUM_CLASSES) | (label == IGNORE_LABEL)
    if not valid.all():
        r, c = np.argwhere(~valid)[0]
        raise DataError(f"{path}: value {int(label[r, c])} at (row {r}, col {c}) is not a face class "
                        f"id (0-{NUM_CLASSES - 1} or {IGNORE_LABEL}); {int((~valid).sum())} such pixels")
    return label.astype(np.uint8)


def read_label_png(path):
    """Reads a 300VW-Mask label PNG as uint8 (H, W) class ids.

    Accepts RGB(A) colour labels (black/red/green/cyan/blue -> 0/1/2/3/4, as `do_segmentation.m`
    writes them), and index labels (greyscale or palette PNGs, or RGB with R == G == B) holding
    0-4 and 255 (ignore). Anything else raises `DataError` naming the file.
    """
    path = pathlib.Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            array = np.asarray(image)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot read label image ({e})") from None
    if mode == "P" or array.ndim == 2:
        if array.dtype == bool:
            array = array.astype(np.uint8)
        if array.dtype.kind not in "ui":
            raise DataError(f"{path}: unsupported label image mode {mode!r}")
        return _check_index_label(path, array)
    if array.ndim == 3 and array.shape[2] in (3, 4) and array.dtype == np.uint8:
        rgb = array[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return _check_index_label(path, rgb[..., 0])  # grey RGB: an index image saved as RGB
        return _decode_rgb_label(path, rgb)
    raise DataError(f"{path}: unsupported label image mode {mode!r} with shape {array.shape}")


def write_label_png(path, label):
    """Writes a uint8 (H, W) label as a single-channel index PNG (ids 0-4, 255 ignore)."""
    path = pathlib.Path(path)
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be 2-D, got shape {label.shape}")
    if not cv2.imwrite(str(path), label.astype(np.uint8)):
        raise DataError(f"{path}: cannot write label PNG")


def colorize(label):
    """uint8 (H, W, 3) RGB picture of a label with `FACE_PALETTE` (ignore = white, unknown = grey)."""
    label = np.asarray(label)
    lut = np.full((256, 3), 128, np.uint8)
    lut[:NUM_CLASSES] = FACE_PALETTE
    lut[IGNORE_LABEL] = _IGNORE_COLOUR
    return lut[label.astype(np.uint8)]


def overlay(image, label, alpha=0.5):
    """Blends `colorize(label)` over an RGB uint8 image; background pixels stay untouched."""
    image = np.asarray(image, np.float32)
    colours = colorize(label).astype(np.float32)
    mix = np.where((np.asarray(label) != BACKGROUND)[..., None], alpha, 0.0)
    return np.clip(image * (1.0 - mix) + colours * mix + 0.5, 0, 255).astype(np.uint8)
