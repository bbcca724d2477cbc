"""The "real photo, synthetic motion" clip: the astronaut photo moved along a smooth camera path.

scikit-image's bundled `data.astronaut()` (Eileen Collins, NASA, public domain, 512x512) with its 68
iBUG landmarks shipped in `astronaut_68.pts` (1-based). Provenance of the points: dlib's HOG face
detector (upsample 0; box (179,83)-(266,170)) and dlib's 68-point shape predictor, values from
reference/datasets.md §4 (0-based there, +1 in the file). Each frame is one similarity warp
(rotation, scale, translation) applied to the photo and the points alike, plus mild photometric
jitter and sensor noise; the clip is written as a 300VW folder so the normal reader runs on it.
"""
import pathlib

import cv2
import numpy as np

from deeplab_face.data.masks import landmarks_to_label
from deeplab_face.data.pts import read_pts
from deeplab_face.data.synthetic import POINT_STEP, write_300vw_folder

ASTRONAUT_PTS = pathlib.Path(__file__).with_name("astronaut_68.pts")
VIEW_SIDE = 300.0            # photo pixels seen by the camera on average
VIEW_CENTRE = (226.0, 178.0)  # photo pixels; the face centre is (226, 130): the view sits lower so
#                               its top edge rarely leaves the photo


def astronaut_photo():
    """The photo as RGB uint8 (512, 512, 3)."""
    from skimage import data
    return np.ascontiguousarray(data.astronaut())


def astronaut_points():
    """The photo's 68 landmarks, float32 (68, 2), 0-based (x, y)."""
    return read_pts(ASTRONAUT_PTS)


class DemoClip:
    """The camera path and per-frame rendering: `render(t) -> (rgb, points, label)`."""

    def __init__(self, frames, size=256, seed=0):
        rng = np.random.default_rng(seed)
        self.frames, self.size, self.seed = frames, size, seed
        self.photo = astronaut_photo().astype(np.float32)
        self.photo_points = astronaut_points().astype(np.float64)
        # the path: a sum of slow sinusoids per parameter (smooth, never periodic within a clip)
        self._freq = rng.uniform(0.01, 0.05, (4, 2)) * 2 * np.pi
        self._phase = rng.uniform(0, 2 * np.pi, (4, 2))
        self._jitter_freq = rng.uniform(0.02, 0.08, 4) * 2 * np.pi
        self._jitter_phase = rng.uniform(0, 2 * np.pi, 4)

    def _wave(self, t, k):
        return 0.6 * np.sin(self._freq[k, 0] * t + self._phase[k, 0]) + \
            0.4 * np.sin(self._freq[k, 1] * t + self._phase[k, 1])

    def camera(self, t):
        """The 2x3 similarity warp from photo to frame pixels at frame t."""
        cx = VIEW_CENTRE[0] + 35 * self._wave(t, 0)
        cy = VIEW_CENTRE[1] + 18 * self._wave(t, 1)
        side = VIEW_SIDE * (1 + 0.12 * self._wave(t, 2))
        angle = 9.0 * self._wave(t, 3)
        m = cv2.getRotationMatrix2D((cx, cy), angle, self.size / side)
        m[:, 2] += np.array([self.size / 2 - cx, self.size / 2 - cy])
        return m

    def points(self, t):
        m = self.camera(t)
        pts = self.photo_points @ m[:, :2].T + m[:, 2]
        return (np.round(pts / POINT_STEP) * POINT_STEP).astype(np.float32)

    def render(self, t):
        """Frame t as (RGB uint8 (S, S, 3), points float32 (68, 2), label uint8 (S, S))."""
        m = self.camera(t)
        img = cv2.warpAffine(self.photo, m, (self.size, self.size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT_101)
        jitter = np.sin(self._jitter_freq * t + self._jitter_phase)
        gain = 1 + 0.08 * jitter[0] + 0.03 * np.array([jitter[1], 0.0, -jitter[1]])  # exposure, white balance
        img = img * gain + 6 * jitter[2]
        img = 255 * (np.clip(img, 0, 255) / 255) ** (1 + 0.08 * jitter[3])  # gamma
        img += np.random.default_rng([self.seed, t]).normal(0, 2.0, img.shape)
        pts = self.points(t)
        return (np.clip(img, 0, 255).astype(np.uint8), pts,
                landmarks_to_label(pts, self.size, self.size))

    def __iter__(self):
        for t in range(self.frames):
            yield self.render(t)


def write_demo_clip(video_dir, frames=300, size=256, seed=0, on_frame=None, quirks=False):
    """Writes the clip as a 300VW folder (`vid.avi` FFV1 + `annot/%06d.pts`); returns the `DemoClip`.

    `quirks=True` reproduces what real 300VW folders do (reference/datasets.md §4): the video has
    one frame more than there are `.pts` files, and the `.pts` files use CRLF line ends and tabs."""
    clip = DemoClip(frames + 1 if quirks else frames, size, seed)
    rendered = iter(clip)
    if quirks:  # the extra last frame gets no .pts
        rendered = ((rgb, points if t < frames else None) for t, (rgb, points, _) in enumerate(rendered))
    write_300vw_folder(video_dir, rendered, on_frame=on_frame)
    if quirks:
        for path in sorted((pathlib.Path(video_dir) / "annot").glob("*.pts")):
            lines = path.read_text().splitlines()
            lines = [line.replace(" ", "\t") if line[:1].isdigit() else line for line in lines]
            path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return clip
