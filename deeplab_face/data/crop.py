"""Face crops from 68 landmarks: 300VW-Mask `crop_face_and_seg.m`, then a resize to S x S.

The box recipe (reference/datasets.md §2), in MATLAB's 1-based inclusive pixels::

    x1,y1,x2,y2 = extent of the points; w = round(x2-x1); h = round(y2-y1); L = (w+h)/2
    cx = round(x1 + w/2); cy = round(y1 + h/2); half = round((1+margin)*L/2)
    box = [cx-half, cy-half, cx+half, cy+half], clipped to [1, W] x [1, H]

with MATLAB's `round` (halves away from zero; all values here are >= 0 in practice, and
floor(v + 0.5) is used throughout). Conventions here: points are 0-based, boxes are 0-based and
end-exclusive. Since floor(v + 1 + 0.5) = floor(v + 0.5) + 1, running the recipe on 0-based points
gives the 1-based box minus one, i.e. the 0-based *inclusive* box [cx-half, cx+half]; the
end-exclusive box is (cx-half, cy-half, cx+half+1, cy+half+1) and its side is 2*half+1 pixels.

Example (the astronaut landmarks of datasets.md §4, 0-based extent x 179..272, y 87..178): w = 93,
h = 91, L = 92, cx = floor(225.5+0.5) = 226, cy = floor(132.5+0.5) = 133, half = floor(59.8+0.5) =
60, so the 0-based inclusive box is (166,73)-(286,193) and `face_box` returns (166, 73, 287, 194).
(datasets.md quotes (166,72)-(286,192): that is Python's half-to-even round(132.5) = 132, not
MATLAB's.)

`crop_face` pads a clipped box back to its full square (grey image, background label) before the
resize, so faces at the image border are not stretched; see `crop_face`.
"""
import math

import cv2
import numpy as np

CROP_MARGIN = 0.3      # crop_face_and_seg.m `extend`
IMAGE_PAD_VALUE = 128  # uint8 grey ~ DeepLab's mean pixel 127.5, outside the frame
LABEL_PAD_VALUE = 0    # background: nothing of the face is visible outside the frame


def matlab_round(value):
    """MATLAB `round` for the non-negative values of the recipe: floor(v + 0.5)."""
    return int(math.floor(value + 0.5))


def square_box(points, margin=CROP_MARGIN):
    """The unclipped square crop box (x0, y0, x1, y1): 0-based, end-exclusive, side 2*half+1."""
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or not np.all(np.isfinite(points)):
        raise ValueError(f"expected finite (n, 2) landmarks, got shape {points.shape}")
    x_min, y_min = points.min(axis=0)
    x_max, y_max = points.max(axis=0)
    width = matlab_round(x_max - x_min)
    height = matlab_round(y_max - y_min)
    mean_side = (width + height) / 2.0
    cx = matlab_round(x_min + width / 2.0)
    cy = matlab_round(y_min + height / 2.0)
    half = matlab_round((1.0 + margin) * mean_side / 2.0)
    return cx - half, cy - half, cx + half + 1, cy + half + 1


def face_box(points, image_shape, margin=CROP_MARGIN):
    """300VW-Mask crop box of 0-based (68, 2) points, clipped to the image: (x0, y0, x1, y1).

    0-based, end-exclusive (`image[y0:y1, x0:x1]`). `image_shape` is (H, W) or (H, W, C). Raises
    ValueError when the box misses the image entirely.
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    x0, y0, x1, y1 = square_box(points, margin)
    box = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"face box {(x0, y0, x1, y1)} lies outside the {width}x{height} image")
    return box


def _padded_square(array, square, clipped, pad_value):
    """`array` cut to the square box, with the part outside the image filled with `pad_value`."""
    sx0, sy0, sx1, sy1 = square
    cx0, cy0, cx1, cy1 = clipped
    side = sx1 - sx0
    out = np.full((side, side) + array.shape[2:], pad_value, array.dtype)
    out[cy0 - sy0:cy1 - sy0, cx0 - sx0:cx1 - sx0] = array[cy0:cy1, cx0:cx1]
    return out


def crop_face(image, label, points, size, margin=CROP_MARGIN, image_pad=IMAGE_PAD_VALUE,
              label_pad=LABEL_PAD_VALUE):
    """Crops image and label with the landmark box and resizes them to `size` x `size`.

    The clipped box (`face_box`) is first padded back to the full square box (`image_pad` grey for
    the image, `label_pad` = background for the label), so the face keeps its aspect ratio and
    stays centred. The image is resized bilinearly, the label by nearest neighbour (both with
    half-pixel centres, so they stay aligned). Points are mapped into crop coordinates
    (0-based pixel centres of the S x S crop).

    image: uint8 (H, W, 3) or None; label: uint8 (H, W) or None; points: (68, 2) 0-based.
    Returns (image (S, S, 3) uint8 or None, label (S, S) uint8 or None, points float32 (68, 2)).
    """
    reference = image if image is not None else label
    if reference is None:
        raise ValueError("crop_face needs an image or a label")
    if image is not None and label is not None and image.shape[:2] != label.shape[:2]:
        raise ValueError(f"image {image.shape[:2]} and label {label.shape[:2]} sizes differ")
    size = int(size)
    clipped = face_box(points, reference.shape, margin)
    square = square_box(points, margin)
    side = square[2] - square[0]
    scale = size / side
    image_out = label_out = None
    if image is not None:
        patch = _padded_square(np.asarray(image), square, clipped, image_pad)
        image_out = cv2.resize(patch, (size, size), interpolation=cv2.INTER_LINEAR)
    if label is not None:
        patch = _padded_square(np.asarray(label), square, clipped, label_pad)
        # INTER_NEAREST_EXACT uses half-pixel centres like INTER_LINEAR (INTER_NEAREST is offset).
        label_out = cv2.resize(patch, (size, size), interpolation=cv2.INTER_NEAREST_EXACT)
    origin = np.array(square[:2], np.float64)
    crop_points = (np.asarray(points, np.float64) - origin + 0.5) * scale - 0.5
    return image_out, label_out, crop_points.astype(np.float32)
