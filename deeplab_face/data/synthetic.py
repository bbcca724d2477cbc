"""Procedural talking faces for the embedded data set (issue 2, item 8).

A 68-point iBUG template (face units: jaw width 1, y down, origin near the nose) is animated with
head translation, rotation and scale, blinks and mouth opening. Motion alternates calm stretches with
short bursts of fast motion, so where a scheduler puts its key frames matters. Every frame is
drawn from the same landmark geometry as its label: the face regions are painted through the
label of `masks.landmarks_to_label`, so image and label agree pixel for pixel. Deterministic per
seed: schedule, identity, background and a noise bank come from `default_rng(seed)`; frame t's
noise is a crop of the bank at an offset drawn from `default_rng([seed, t])`.
"""
import dataclasses
import pathlib

import cv2
import numpy as np

from deeplab_face.data.masks import landmarks_to_label
from deeplab_face.errors import DataError

# Points are snapped to this grid so that they survive a `.pts` round trip exactly (multiples of
# 1/8 are exact in binary and in 3-decimal text); labels are then the same on either side.
POINT_STEP = 0.125

FACE_WIDTH = 0.42          # jaw width as a fraction of the frame side, at scale 1
CALM_FRAMES = (40, 90)     # length of a calm stretch
BURST_FRAMES = (6, 14)     # length of a burst of fast motion (several px per frame at 256)
BLINK_PROFILE = (0.55, 0.15, 0.0, 0.0, 0.25, 0.6, 0.9)  # eye openness over one blink
SKIN_TONES = np.array([[236, 192, 160], [224, 172, 132], [198, 140, 104], [161, 110, 75],
                       [120, 80, 56], [245, 205, 180]], np.float32)
HAIR_TONES = np.array([[40, 30, 25], [90, 60, 35], [160, 120, 70], [20, 20, 22], [120, 110, 100]],
                      np.float32)
IRIS_TONES = np.array([[70, 110, 160], [90, 60, 30], [60, 100, 60], [50, 40, 30]], np.float32)


def _mirror(points, pairs):
    for left, right in pairs:
        points[right] = points[left] * (-1.0, 1.0)


def face_template(eye_open=1.0, mouth_open=0.0, shape=None):
    """The 68 template points (float64, face units) for one eye openness and mouth opening in [0, 1].

    `shape` holds per-identity proportions (see `_identity`); None gives the average face.
    """
    s = shape or {"jaw": 1.0, "eye_gap": 1.0, "mouth_w": 1.0, "smile": 0.0, "brow": 0.0}
    p = np.zeros((68, 2))
    drop = 0.11 * mouth_open  # the jaw drops with the lower lip
    a = np.pi * np.arange(17) / 16
    c, sn = np.cos(a), np.sin(a)
    p[:17, 0] = -0.5 * s["jaw"] * np.sign(c) * np.abs(c) ** 0.8 * (1 - 0.1 * sn ** 4)
    p[:17, 1] = -0.12 + 0.74 * sn + drop * sn ** 3
    u = np.linspace(0, 1, 5)  # brows 17-21 (image left), 22-26 mirrored
    p[17:22, 0] = -0.40 + 0.33 * u
    p[17:22, 1] = -0.31 - 0.065 * np.sin(np.pi * (0.15 + 0.8 * u)) - s["brow"]
    _mirror(p, [(21 - k, 22 + k) for k in range(5)])
    p[27:31] = [[0, -0.21], [0, -0.12], [0, -0.03], [0, 0.06]]  # nose bridge and tip
    p[31:36] = [[-0.10, 0.13], [-0.05, 0.15], [0, 0.16], [0.05, 0.15], [0.10, 0.13]]
    ex, ey, half, lid = -0.21 * s["eye_gap"], -0.15, 0.1, 0.052 * eye_open
    p[36:42] = [[ex - half, ey], [ex - 0.35 * half, ey - lid], [ex + 0.35 * half, ey - lid],
                [ex + half, ey], [ex + 0.35 * half, ey + 0.8 * lid], [ex - 0.35 * half, ey + 0.8 * lid]]
    _mirror(p, [(39, 42), (38, 43), (37, 44), (36, 45), (41, 46), (40, 47)])
    w, my, up = 0.17 * s["mouth_w"], 0.36, s["smile"]
    p[48:51] = [[-w, my - up], [-0.64 * w, my - 0.045], [-0.24 * w, my - 0.065]]
    p[51] = [0, my - 0.055]
    p[55:58] = [[0.64 * w, my + 0.055 + drop], [0.24 * w, my + 0.08 + drop], [0, my + 0.085 + drop]]
    p[60:63] = [[-0.76 * w, my - 0.6 * up], [-0.3 * w, my - 0.008], [0, my - 0.004]]
    p[65:67] = [[0.3 * w, my - 0.008 + drop], [0, my - 0.004 + drop]]
    _mirror(p, [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)])
    return p


def _shape_points(kind):
    """Auxiliary outlines in face units (not part of the label): head, hair, ears, neck, clothes."""
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    if kind == "head":
        return np.stack([0.53 * np.cos(t), -0.22 + 0.66 * np.sin(t)], 1)
    if kind == "hair":
        outer = np.linspace(np.pi - 0.3, 2 * np.pi + 0.3, 32)
        x = np.linspace(0.55, -0.55, 24)
        return np.concatenate([np.stack([0.62 * np.cos(outer), -0.26 + 0.72 * np.sin(outer)], 1),
                               np.stack([x, -0.25 - 0.36 * np.cos(np.pi * x / 1.1)], 1)])
    if kind == "ears":
        ear = np.stack([0.07 * np.cos(t), 0.15 * np.sin(t)], 1)
        return [ear + (-0.51, 0.02), ear + (0.51, 0.02)]
    if kind == "neck":
        return np.array([[-0.28, 0.3], [0.28, 0.3], [0.33, 1.6], [-0.33, 1.6]])
    return np.array([[-1.8, 2.2], [-0.95, 1.0], [0.95, 1.0], [1.8, 2.2]])  # clothes


@dataclasses.dataclass
class Schedule:
    """Per-frame animation: pose (cx, cy, angle in degrees, scale), eye/mouth openness, burst flag."""
    pose: np.ndarray        # (T, 4) float64
    eye_open: np.ndarray    # (T,) in [0, 1]
    mouth_open: np.ndarray  # (T,) in [0, 1]
    burst: np.ndarray       # (T,) bool


def _random_pose(rng, size, near=None):
    for _ in range(100):
        pose = np.array([rng.uniform(0.32, 0.68) * size, rng.uniform(0.34, 0.62) * size,
                         rng.uniform(-22, 22), rng.uniform(0.8, 1.15)])
        if near is None or np.hypot(*(pose[:2] - near[:2])) > 0.14 * size:
            return pose
    return pose


def make_schedule(frames, size, rng):
    """Calm stretches (slow drift and sway) alternate with bursts (a large pose change in a few frames)."""
    pose = np.zeros((frames, 4))
    burst = np.zeros(frames, bool)
    current = _random_pose(rng, size)
    t, calm = 0, True
    length = int(rng.integers(10, 50))  # the first calm stretch is short so short clips see a burst
    while t < frames:
        if calm:
            target = current + [rng.normal(0, 0.012 * size), rng.normal(0, 0.012 * size),
                                rng.normal(0, 1.5), rng.normal(0, 0.015)]
        else:
            target = _random_pose(rng, size, near=current)
        u = np.arange(1, length + 1) / length
        ease = u * u * (3 - 2 * u) if not calm else u  # bursts accelerate and stop within the burst
        seg = current + ease[:, None] * (target - current)
        end = min(frames, t + length)
        pose[t:end] = seg[:end - t]
        burst[t:end] = not calm
        current, t, calm = target, end, not calm
        length = int(rng.integers(*CALM_FRAMES) if calm else rng.integers(*BURST_FRAMES))
    sway = np.arange(frames) * 2 * np.pi / rng.uniform(50, 90)
    pose[:, 0] += 0.8 * np.sin(sway + rng.uniform(0, 6))  # a little life in the calm stretches
    pose[:, 2] += 0.6 * np.sin(0.7 * sway)
    eye_open = np.ones(frames)
    t = int(rng.integers(5, 35))
    while t < frames:
        blink = np.asarray(BLINK_PROFILE)[:frames - t]
        eye_open[t:t + len(blink)] = blink
        t += int(rng.integers(40, 110))
    mouth_open = np.zeros(frames)
    t = int(rng.integers(0, 25))
    while t < frames:  # talking: the mouth opens and closes at a syllable rate
        n = int(rng.integers(20, 60))
        phase = np.arange(min(n, frames - t)) * np.pi / rng.uniform(4, 8)
        mouth_open[t:t + len(phase)] = rng.uniform(0.5, 1.0) * np.abs(np.sin(phase))
        t += n + int(rng.integers(15, 60))
    return Schedule(pose, eye_open, mouth_open, burst)


def _background(rng, size):
    """Seeded texture: smooth colour noise, a few soft shapes and fine grain."""
    low = rng.uniform(40, 220, (4, 4, 3)).astype(np.float32)
    bg = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    mid = cv2.resize(rng.normal(0, 25, (16, 16, 3)).astype(np.float32), (size, size),
                     interpolation=cv2.INTER_CUBIC)
    bg += mid
    for _ in range(int(rng.integers(3, 7))):
        colour = rng.uniform(30, 230, 3).tolist()
        x0, y0 = rng.integers(0, size, 2)
        w, h = rng.integers(size // 10, size // 2, 2)
        if rng.random() < 0.5:
            cv2.rectangle(bg, (int(x0), int(y0)), (int(x0 + w), int(y0 + h)), colour, -1)
        else:
            cv2.ellipse(bg, (int(x0), int(y0)), (int(w // 2), int(h // 2)), float(rng.uniform(0, 180)),
                        0, 360, colour, -1)
    period = rng.uniform(6, 14) * size / 256
    stripes = np.sin(np.arange(size) * 2 * np.pi / period)[None, :, None] * 8
    bg += stripes if rng.random() < 0.5 else stripes.transpose(1, 0, 2)
    bg = 0.55 * bg + 0.45 * bg.mean(axis=2, keepdims=True)  # muted colours, like real rooms
    bg = cv2.GaussianBlur(bg, (0, 0), 0.8)
    return (bg + rng.normal(0, 6, bg.shape)).astype(np.float32)


def _identity(rng):
    return {
        "shape": {"jaw": rng.uniform(0.92, 1.08), "eye_gap": rng.uniform(0.94, 1.06),
                  "mouth_w": rng.uniform(0.9, 1.1), "smile": rng.uniform(-0.01, 0.025),
                  "brow": rng.uniform(-0.01, 0.02)},
        "skin": SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.93, 1.05, 3),
        "hair": HAIR_TONES[rng.integers(len(HAIR_TONES))],
        "iris": IRIS_TONES[rng.integers(len(IRIS_TONES))],
        "lips": np.array([rng.uniform(150, 200), rng.uniform(60, 95), rng.uniform(70, 100)]),
        "clothes": rng.uniform(20, 235, 3),
        "light": np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.7, 0.1), 1.0]),
        "gaze": rng.uniform(-0.02, 0.02, 2),
    }


class SyntheticFace:
    """One procedural video: `schedule`, `points(t)` and `render(t) -> (rgb, points, label)`."""

    def __init__(self, frames, size=256, seed=0):
        rng = np.random.default_rng(seed)
        self.frames, self.size, self.seed = frames, size, seed
        self.schedule = make_schedule(frames, size, rng)
        self.identity = _identity(rng)
        self.background = _background(rng, size)
        light = self.identity["light"]
        self._light = light / np.linalg.norm(light)
        grid = np.arange(size, dtype=np.float32)
        self._xx, self._yy = np.meshgrid(grid, grid)
        self._noise = rng.normal(0, 3.0, (2 * size, 2 * size, 3)).astype(np.float32)
        self._teeth_edge = face_template(1.0, 0.0, self.identity["shape"])[62, 1] + 0.03

    def _transform(self, t):
        cx, cy, angle, scale = self.schedule.pose[t]
        s = scale * FACE_WIDTH * self.size
        r = np.deg2rad(angle)
        return np.array([[s * np.cos(r), -s * np.sin(r), cx], [s * np.sin(r), s * np.cos(r), cy]])

    def transform(self, t):
        """Frame t's similarity transform (2x3), face units -> pixels. Head, hair, ears, neck and
        clothes move rigidly with it; the landmarks add blinks and mouth motion on top
        (ground-truth flow: deeplab_face.data.synthetic_flow_gt)."""
        return self._transform(t)

    def moving_mask(self, t, label=None):
        """bool (S, S): the pixels of frame t that move with the head (clothes, neck, ears, cranium,
        hair and the labelled face, as `render` draws them); the rest is the static `background`.
        `label`: frame t's label when the caller has it (render's third output)."""
        m = self._transform(t)
        mask = np.zeros((self.size, self.size), np.uint8)
        outlines = [_shape_points(k) for k in ("clothes", "neck", "head", "hair")] + _shape_points("ears")
        for outline in outlines:
            q = outline @ m[:, :2].T + m[:, 2]
            cv2.fillPoly(mask, [np.round(q * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
        if label is None:
            label = landmarks_to_label(self.points(t), self.size, self.size)
        mask[label > 0] = 1
        return mask.astype(bool)

    def points(self, t):
        """The frame's 68 points (float32, 0-based pixels), snapped to POINT_STEP."""
        sched = self.schedule
        template = face_template(sched.eye_open[t], sched.mouth_open[t], self.identity["shape"])
        pts = template @ self._transform(t)[:, :2].T + self._transform(t)[:, 2]
        return (np.round(pts / POINT_STEP) * POINT_STEP).astype(np.float32)

    def _shading(self, m):
        """Lambert shading of an ellipsoid head, per pixel (frame coordinates -> face units)."""
        inv = cv2.invertAffineTransform(m).astype(np.float32)
        u = inv[0, 0] * self._xx + inv[0, 1] * self._yy + inv[0, 2]
        v = inv[1, 0] * self._xx + inv[1, 1] * self._yy + inv[1, 2]
        nx, ny = u * np.float32(1 / 0.62), (v + np.float32(0.05)) * np.float32(1 / 0.85)
        nz = np.sqrt(np.clip(1 - nx * nx - ny * ny, 0.05, 1))
        lx, ly, lz = self._light.astype(np.float32)
        diffuse = np.clip(nx * lx + ny * ly + nz * lz, 0, 1)
        return (np.float32(0.45) + np.float32(0.6) * diffuse)[..., None], v

# Kept whole: the face's parts painted in drawing order by small local closures.
    def render(self, t):
        """Frame t as (RGB uint8 (S, S, 3), points float32 (68, 2), label uint8 (S, S))."""
        size, ident = self.size, self.identity
        m = self._transform(t)
        pts = self.points(t)
        label = landmarks_to_label(pts, size, size)
        px = FACE_WIDTH * size * self.schedule.pose[t, 3]  # pixels per face unit

        def poly(p):
            q = np.asarray(p) @ m[:, :2].T + m[:, 2]
            return [np.round(q * 16).astype(np.int32)]

        def paint(mask, colour):
            np.copyto(img, colour, where=mask[..., None])

        def stroke(idx, colour, width):
            cv2.polylines(img, [np.round(pts[list(idx)] * 16).astype(np.int32)], False,
                          np.asarray(colour, float).tolist(), max(1, int(round(width))),
                          cv2.LINE_AA, 4)

        img = self.background.copy()
        cv2.fillPoly(img, poly(_shape_points("clothes")), ident["clothes"].tolist(), cv2.LINE_AA, 4)
        head = np.zeros((size, size), np.uint8)  # neck 1, ears and cranium 2 (background class)
        cv2.fillPoly(head, poly(_shape_points("neck")), 1, cv2.LINE_8, 4)
        for ear in _shape_points("ears"):
            cv2.fillPoly(head, poly(ear), 2, cv2.LINE_8, 4)
        cv2.fillPoly(head, poly(_shape_points("head")), 2, cv2.LINE_8, 4)
        shade, v = self._shading(m)
        skin = ident["skin"].astype(np.float32) * shade
        paint(head == 1, skin * np.float32(0.8))
        paint((head == 2) | (label == 1), skin)
        cv2.fillPoly(img, poly(_shape_points("hair")), ident["hair"].tolist(), cv2.LINE_AA, 4)
        stroke(range(17, 22), ident["hair"], 0.035 * px)
        stroke(range(22, 27), ident["hair"], 0.035 * px)
        stroke([27, 28, 29, 30], ident["skin"] * 0.7, 0.02 * px)
        for k in (32, 34):  # nostrils
            cv2.circle(img, tuple(int(c) for c in np.round(pts[k] * 16)), int(0.018 * px * 16),
                       (60, 35, 30), -1, cv2.LINE_AA, 4)
        eyes = label == 2  # eye white, iris and pupil, clipped to the label's eye polygons
        if eyes.any():
            iris = np.zeros((size, size), np.uint8)
            for lo in (36, 42):
                centre = tuple(int(c) for c in np.round((pts[lo:lo + 6].mean(0) + ident["gaze"] * px) * 16))
                cv2.circle(iris, centre, int(0.036 * px * 16), 1, -1, cv2.LINE_8, 4)
                cv2.circle(iris, centre, int(0.016 * px * 16), 2, -1, cv2.LINE_8, 4)
            paint(eyes, np.float32([235, 232, 225]) * np.minimum(shade * np.float32(1.1), 1))
            paint(eyes & (iris == 1), ident["iris"])
            paint(eyes & (iris == 2), np.float32([15, 12, 12]))
        stroke(range(36, 40), (40, 25, 25), 0.012 * px)
        stroke(range(42, 46), (40, 25, 25), 0.012 * px)
        paint(label == 3, ident["lips"].astype(np.float32) * shade)
        inner = label == 4
        if inner.any():  # dark mouth with a band of upper teeth
            paint(inner, np.float32([70, 20, 25]))
            paint(inner & (v < self._teeth_edge), np.float32([225, 220, 205]))
        stroke(range(60, 65), (90, 35, 40), 0.01 * px)
        img = cv2.GaussianBlur(img, (0, 0), 0.6)  # lens softness
        # sensor noise: a seeded offset into a per-video noise bank (cheaper than fresh draws)
        dy, dx = np.random.default_rng([self.seed, t]).integers(0, size, 2)
        img += self._noise[dy:dy + size, dx:dx + size]
        return np.clip(img, 0, 255).astype(np.uint8), pts, label

    def __iter__(self):
        for t in range(self.frames):
            yield self.render(t)


def write_300vw_folder(video_dir, frames, fps=30.0, on_frame=None):
    """Writes (rgb, points, ...) tuples as a 300VW folder: `vid.avi` (FFV1, lossless) and
    `annot/%06d.pts` (frame 1 is the first; a frame whose points are None gets no file).
    `on_frame(t)` is called after each frame."""
    from deeplab_face.data.pts import write_pts
    video_dir = pathlib.Path(video_dir)
    (video_dir / "annot").mkdir(parents=True, exist_ok=True)
    writer = None
    try:
        for t, (rgb, points, *_) in enumerate(frames):
            if writer is None:
                height, width = rgb.shape[:2]
                writer = cv2.VideoWriter(str(video_dir / "vid.avi"), cv2.VideoWriter_fourcc(*"FFV1"),
                                         fps, (width, height))
                if not writer.isOpened():
                    raise DataError(f"{video_dir / 'vid.avi'}: OpenCV cannot open an FFV1 writer")
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            if points is not None:
                write_pts(video_dir / "annot" / f"{t + 1:06d}.pts", points)
            if on_frame is not None:
                on_frame(t)
    finally:
        if writer is not None:
            writer.release()


def write_synthetic_video(video_dir, frames, size=256, seed=0, on_frame=None):
    """One procedural video written as a 300VW folder; returns its `SyntheticFace`."""
    face = SyntheticFace(frames, size, seed)
    write_300vw_folder(video_dir, iter(face), on_frame=on_frame)
    return face
