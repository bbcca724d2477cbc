"""Ground-truth optical flow of the procedural face videos (deeplab_face.data.synthetic).

The generator moves two layers (read in `SyntheticFace.render`):
- the static background (`SyntheticFace.background`; only the per-frame sensor noise changes);
- everything drawn through the frame's similarity transform `m_t` (face units -> pixels): clothes,
  neck, ears, cranium, hair, shading, and the face painted through the label of the 68 landmarks,
  which add blinks and mouth opening to the rigid head motion.

So a pixel p of frame t that lies on the moving layer comes from frame k at
- the piecewise-affine map of a Delaunay triangulation of frame t's landmarks onto frame k's, for
  p inside the triangulated region (landmarks plus a ring of anchors around the head that move
  rigidly, so the non-rigid part fades into the rigid one);
- m_k(m_t^-1(p)) elsewhere (rigid head, neck and clothes);
and a background pixel comes from the same place, p. Flow convention (DESIGN.md "Flow"): backward,
flow(p) = source(p) - p, channel 0 = x, 1 = y, in pixels, so that `frame_k` sampled at p + flow(p)
gives frame t. `valid` marks the pixels whose source is inside frame k and on the same layer there
(not disoccluded).

`crop_pair` gives the same for a pair as `prepare_300vw` crops it: each frame cropped with its own
face box (`crop.crop_face`) and resized to S x S, the flow expressed in crop pixels.
"""
import cv2
import numpy as np
from scipy.spatial import Delaunay

from deeplab_face.data.crop import crop_face, square_box

ANCHOR_RADIUS = 1.25   # face units (jaw width 1): outside the landmarks, ears and hair
ANCHOR_CENTRE = (0.0, -0.1)
ANCHOR_COUNT = 24


def _anchors():
    angles = np.linspace(0, 2 * np.pi, ANCHOR_COUNT, endpoint=False)
    return np.stack([ANCHOR_CENTRE[0] + ANCHOR_RADIUS * np.cos(angles),
                     ANCHOR_CENTRE[1] + ANCHOR_RADIUS * np.sin(angles)], axis=1)


def _apply(matrix, points):
    return points @ matrix[:, :2].T + matrix[:, 2]


def _lookup_index(image, points):
    """image at the nearest pixel of each (x, y) point; 0 outside the image."""
    height, width = image.shape
    ix = np.round(points[:, 0]).astype(np.int64)
    iy = np.round(points[:, 1]).astype(np.int64)
    inside = (ix >= 0) & (ix < width) & (iy >= 0) & (iy < height)
    out = np.zeros(len(points), image.dtype)
    out[inside] = image[iy[inside], ix[inside]]
    return out


def _lookup(mask, points):
    """mask at the nearest pixel of each (x, y) point; False outside the mask."""
    return _lookup_index(mask, points).astype(bool)


def _inside(points, size):
    return ((points[:, 0] >= 0) & (points[:, 0] <= size - 1)
            & (points[:, 1] >= 0) & (points[:, 1] <= size - 1))


class _PiecewiseAffine:
    """The piecewise-affine map of a Delaunay triangulation of `source` onto `target`, NaN outside.

    Same values as scipy's LinearNDInterpolator, faster on pixel grids: each query first tries the
    triangle rasterised at its nearest pixel (barycentric check), and only the misses search the
    triangulation (Delaunay.find_simplex).
    """

    def __init__(self, source, target, size):
        self.tri = Delaunay(source)
        self.target = target
        # Barycentric transforms (scipy's Delaunay.transform is slow to build): b = M (p - c_2).
        corners = source[self.tri.simplices]                            # (n, 3, 2)
        edges = np.stack([corners[:, 0] - corners[:, 2], corners[:, 1] - corners[:, 2]], axis=2)
        with np.errstate(all="ignore"):   # degenerate triangles: NaN weights, never "inside"
            self.matrix = np.linalg.inv(edges)                          # (n, 2, 2)
        self.origin = corners[:, 2]
        self.hint = np.zeros((size, size), np.int32)   # triangle index + 1 at each pixel, 0 = none
        for index, simplex in enumerate(self.tri.simplices):
            corners = np.round(source[simplex] * 16).astype(np.int32)
            cv2.fillPoly(self.hint, [corners], index + 1, cv2.LINE_8, 4)

    def _barycentric(self, simplex, points):
        m, origin = self.matrix[simplex], self.origin[simplex]
        dx, dy = points[:, 0] - origin[:, 0], points[:, 1] - origin[:, 1]
        b0 = m[:, 0, 0] * dx + m[:, 0, 1] * dy
        b1 = m[:, 1, 0] * dx + m[:, 1, 1] * dy
        return np.stack([b0, b1, 1 - b0 - b1], axis=1)

    def __call__(self, points):
        simplex = np.full(len(points), -1, np.int64)
        hinted = _lookup_index(self.hint, points) - 1
        has = hinted >= 0
        inside = np.zeros(len(points), bool)
        inside[has] = (self._barycentric(hinted[has], points[has]) >= -1e-9).all(axis=1)
        simplex[inside] = hinted[inside]
        missed = ~inside
        if missed.any():
            simplex[missed] = self.tri.find_simplex(points[missed])
        out = np.full(points.shape, np.nan)
        found = simplex >= 0
        weights = self._barycentric(simplex[found], points[found])
        corners = self.target[self.tri.simplices[simplex[found]]]   # (n, 3, 2)
        out[found] = (weights[:, :, None] * corners).sum(axis=1)
        return out


def face_map(face, t, key_t):
    """A function (N, 2) frame-t points -> (N, 2) frame-key_t points for the moving layer."""
    m_t, m_k = face.transform(t), face.transform(key_t)
    anchors = _anchors()
    source = np.concatenate([face.points(t), _apply(m_t, anchors)]).astype(np.float64)
    target = np.concatenate([face.points(key_t), _apply(m_k, anchors)]).astype(np.float64)
    # A closed eye or mouth puts two landmarks on one point; keep one of each (the region between
    # them has no area in frame t, so it has no pixel to map).
    _, first = np.unique(np.round(source, 4), axis=0, return_index=True)
    first = np.sort(first)
    piecewise = _PiecewiseAffine(source[first], target[first], face.size)
    rigid = cv2.invertAffineTransform(m_t)

    def mapping(points):
        points = np.asarray(points, np.float64)
        out = piecewise(points)
        outside = np.isnan(out[:, 0])
        out[outside] = _apply(m_k, _apply(rigid, points[outside]))
        return out
    return mapping


def source_points(face, t, key_t, points, masks=None):
    """Where frame t's (x, y) `points` (N, 2) come from in frame key_t.

    Returns (source (N, 2) float64, moving (N,) bool: the point is on frame t's moving layer,
    valid (N,) bool: the source is inside frame key_t and on the same layer there).
    `masks`: (moving_mask(t), moving_mask(key_t)) when the caller has them.
    """
    points = np.asarray(points, np.float64).reshape(-1, 2)
    mask_t, mask_k = masks if masks is not None else (face.moving_mask(t), face.moving_mask(key_t))
    moving = _lookup(mask_t, points)
    source = points.copy()
    if moving.any():
        source[moving] = face_map(face, t, key_t)(points[moving])
    size = face.size
    valid = _inside(points, size) & _inside(source, size) & (_lookup(mask_k, source) == moving)
    return source, moving, valid


def backward_flow(face, t, key_t):
    """Ground truth of frame t from frame key_t: flow float32 (S, S, 2), valid bool (S, S)."""
    size = face.size
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    grid = np.stack([xx.ravel(), yy.ravel()], axis=1)
    source, _, valid = source_points(face, t, key_t, grid)
    flow = (source - grid).reshape(size, size, 2).astype(np.float32)
    return flow, valid.reshape(size, size)


def warp_backward(image, flow, interpolation=cv2.INTER_LINEAR):
    """image sampled at p + flow(p) (cv2.remap; outside -> 0): the current frame from the key."""
    height, width = flow.shape[:2]
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    return cv2.remap(image, xx + flow[..., 0], yy + flow[..., 1], interpolation,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _crop_frame(points, crop_size):
    """(origin (x0, y0), scale) of `crop_face`'s square box: crop = (frame - origin + 0.5) * scale - 0.5."""
    x0, y0, x1, _ = square_box(points)
    return np.array([x0, y0], np.float64), crop_size / (x1 - x0)


def crop_pair(face, key_t, t, crop_size):
    """The pair (key_t, t) as prepare_300vw crops it, with its ground-truth flow in crop pixels.

    Returns dict key_image, image (uint8 (S, S, 3)), key_label, label (uint8 (S, S)), flow
    (float32 (S, S, 2), backward: the current crop's pixel p comes from the key crop at p + flow)
    and valid (bool (S, S); False where the source is outside the key crop or disoccluded, or the
    current crop shows padding outside its frame).
    """
    rgb_k, points_k, label_k = face.render(key_t)
    rgb_t, points_t, label_t = face.render(t)
    masks = (face.moving_mask(t, label_t), face.moving_mask(key_t, label_k))
    key_image, key_label, _ = crop_face(rgb_k, label_k, points_k, crop_size)
    image, label, _ = crop_face(rgb_t, label_t, points_t, crop_size)
    origin_t, scale_t = _crop_frame(points_t, crop_size)
    origin_k, scale_k = _crop_frame(points_k, crop_size)
    yy, xx = np.mgrid[:crop_size, :crop_size].astype(np.float64)
    crop = np.stack([xx.ravel(), yy.ravel()], axis=1)
    frame_points = (crop + 0.5) / scale_t - 0.5 + origin_t
    source, _, valid = source_points(face, t, key_t, frame_points, masks)
    key_crop = (source - origin_k + 0.5) * scale_k - 0.5
    valid &= _inside(key_crop, crop_size)   # the key crop shows only part of frame key_t
    flow = (key_crop - crop).reshape(crop_size, crop_size, 2).astype(np.float32)
    return {"key_image": key_image, "image": image, "key_label": key_label, "label": label,
            "flow": flow, "valid": valid.reshape(crop_size, crop_size)}
