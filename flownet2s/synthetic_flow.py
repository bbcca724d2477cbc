"""Image pairs with known dense flow, made the way FlyingChairs was (FlowNet §4.1): textured
layers moved by random affine motions over a textured background that moves too.

The released FlowNet 2.0 weights cannot be downloaded here, so F learns motion from these pairs
(flownet2s.pretrain) before it is fine-tuned on faces (§4.2). As in FlyingChairs, every pair is a
background plus a few occluding foreground layers, each with its own affine motion; here the
background also gets a smooth non-rigid field, and textures are procedural (smooth noise, stripes,
checkers, blobs) or scikit-image's bundled photos, which stand in for FlyingChairs' Flickr images.

Flow convention (DESIGN.md "Flow"): channel 0 = x, 1 = y, in pixels, BACKWARD: the current frame's
pixel p is sampled from the key frame at p + flow(p), which is what `flownet2s.warp.warp(key, flow)`
and FlowNet(key, current) compute. So the current frame is rendered from the key frame's layers
through each layer's flow, and the ground truth at p is the flow of the layer visible at p in the
current frame (dense, as FlyingChairs' ground truth is, occluded pixels included). `valid` marks the
pixels whose source is visible in the key frame (same layer there, inside the frame).

Deterministic per `np.random.Generator` (pass `np.random.default_rng(seed)`).
"""
import functools

import cv2
import numpy as np

MAX_MOTION = 0.15          # largest translation, as a fraction of the side (face videos at 129-513)
MAX_OBJECTS = 4            # foreground layers per pair (FlyingChairs: several chairs per image)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "stereo_motorcycle",
          "brick", "grass", "gravel", "camera", "moon")  # bundled with scikit-image (no download)
TEXTURES = ("noise", "stripes", "checker", "blobs", "photo")


@functools.lru_cache(maxsize=None)
def _photos():
    """scikit-image's bundled sample images as float32 RGB; those that need a download are skipped."""
    from skimage import data
    photos = []
    for name in PHOTOS:
        try:
            image = getattr(data, name)()
        except Exception:  # noqa: BLE001 - a sample that needs pooch/network is simply not used
            continue
        image = image[0] if isinstance(image, tuple) else image
        image = np.asarray(image, np.float32)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        photos.append(np.ascontiguousarray(image[..., :3]))
    return tuple(photos)


def _colour(rng):
    return rng.uniform(0, 255, 3).astype(np.float32)


def _coords(size, rng):
    """Pixel coordinates rotated by a random angle: (u, v) arrays (size, size)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return c * xx + s * yy, -s * xx + c * yy


def _smooth_noise(rng, size, cells):
    low = rng.normal(0, 1, (cells, cells, 3)).astype(np.float32)
    return cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)


def texture(rng, size):
    """A random RGB texture (size, size, 3) float32 in [0, 255]."""
    kind = TEXTURES[rng.integers(len(TEXTURES))]
    photos = _photos()
    if kind == "photo" and not photos:
        kind = "noise"
    if kind == "noise":  # several octaves of smooth coloured noise
        out = sum(_smooth_noise(rng, size, int(cells)) * (48.0 / (k + 1) ** 0.7)
                  for k, cells in enumerate(rng.integers(2, 6) * 2 ** np.arange(4)))
        out += _colour(rng)
    elif kind == "stripes":
        u, v = _coords(size, rng)
        period = rng.uniform(3, max(4, size / 5))
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * u / period + rng.uniform(0, 6.3))
        if rng.random() < 0.5:  # plaid
            wave = 0.5 * wave + 0.25 + 0.25 * np.sin(2 * np.pi * v / rng.uniform(3, size / 4))
        out = _colour(rng) + wave[..., None] * (_colour(rng) - _colour(rng))
    elif kind == "checker":
        u, v = _coords(size, rng)
        cell = rng.uniform(3, max(4, size / 6))
        parity = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
        out = _colour(rng) + parity[..., None] * (_colour(rng) - _colour(rng))
        out += _smooth_noise(rng, size, 4) * 20
    elif kind == "blobs":
        out = np.empty((size, size, 3), np.float32)
        out[:] = _colour(rng)
        for _ in range(int(rng.integers(6, 30))):
            centre = tuple(int(c) for c in rng.integers(0, size, 2))
            axes = tuple(int(a) for a in rng.integers(2, max(3, size // 5), 2))
            cv2.ellipse(out, centre, axes, float(rng.uniform(0, 180)), 0, 360,
                        _colour(rng).tolist(), -1, cv2.LINE_AA)
    else:  # a random crop of a photo, scaled, rotated and maybe flipped
        photo = photos[rng.integers(len(photos))]
        side = min(photo.shape[:2]) * rng.uniform(0.3, 1.0)
        centre = (rng.uniform(side / 2, photo.shape[1] - side / 2 + 1e-3),
                  rng.uniform(side / 2, photo.shape[0] - side / 2 + 1e-3))
        matrix = cv2.getRotationMatrix2D(centre, rng.uniform(-30, 30), size / side)
        matrix[:, 2] += (size / 2 - centre[0], size / 2 - centre[1])
        out = cv2.warpAffine(photo, matrix, (size, size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT101)
        if rng.random() < 0.5:
            out = out[:, ::-1]
        out = out * rng.uniform(0.8, 1.2, 3).astype(np.float32)
    out = out + rng.standard_normal((size, size, 3), np.float32) * np.float32(rng.uniform(1, 6))  # grain
    return np.clip(out, 0, 255).astype(np.float32)


def affine_flow(rng, size, centre, max_motion=MAX_MOTION, max_angle=10.0, max_log_scale=0.08):
    """Backward flow (size, size, 2) of a random similarity motion about `centre` (x, y).

    q = centre + s R (p - centre) + t: the translation's length is max_motion * size * u^2 (mostly a
    few pixels, like calm face video, up to the bursts' ~15 % of the side), the rotation and log-scale
    are normal, clipped to +-2 sigma.
    """
    xx, yy = (g.astype(np.float64) for g in _grid(size))
    direction = rng.uniform(0, 2 * np.pi)
    shift = max_motion * size * rng.uniform() ** 2 * np.array([np.cos(direction), np.sin(direction)])
    angle = np.deg2rad(np.clip(rng.normal(0, max_angle / 2), -max_angle, max_angle))
    scale = np.exp(np.clip(rng.normal(0, max_log_scale / 2), -max_log_scale, max_log_scale))
    dx, dy = xx - centre[0], yy - centre[1]
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    qx = centre[0] + c * dx - s * dy + shift[0]
    qy = centre[1] + s * dx + c * dy + shift[1]
    return np.stack([qx - xx, qy - yy], axis=-1).astype(np.float32)


def smooth_field(rng, size, amplitude):
    """A smooth random displacement field (size, size, 2) with standard deviation `amplitude` px."""
    cells = int(rng.integers(2, 5))
    low = rng.normal(0, amplitude, (cells, cells, 2)).astype(np.float32)
    return cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)


def _shape_mask(rng, canvas, centre, radius):
    """A soft (anti-aliased) random shape: ellipse, rectangle or star-ish polygon, on the canvas."""
    mask = np.zeros((canvas, canvas), np.float32)
    kind = rng.integers(3)
    if kind == 0:
        axes = (max(2, int(radius * rng.uniform(0.5, 1))), max(2, int(radius * rng.uniform(0.5, 1))))
        cv2.ellipse(mask, tuple(int(c) for c in centre), axes, float(rng.uniform(0, 180)), 0, 360,
                    1.0, -1, cv2.LINE_AA)
    else:
        count = 4 if kind == 1 else int(rng.integers(5, 10))
        angles = np.sort(rng.uniform(0, 2 * np.pi, count)) if kind == 2 else \
            rng.uniform(0, 2 * np.pi) + np.arange(4) * np.pi / 2
        radii = radius * (rng.uniform(0.4, 1.0, count) if kind == 2 else np.ones(count))
        points = np.stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], 1)
        cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 1.0, cv2.LINE_AA, 4)
    return mask


@functools.lru_cache(maxsize=8)
def _grid(size):
    """(xx, yy) float32 pixel coordinates (read-only, shared)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    xx.flags.writeable = yy.flags.writeable = False
    return xx, yy


def _remap(image, flow, offset=0.0):
    """image sampled at p + flow(p) + offset (bilinear, reflected border)."""
    xx, yy = _grid(flow.shape[0])
    return cv2.remap(image, xx + flow[..., 0] + offset, yy + flow[..., 1] + offset, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT101)


class TextureBank:
    """Textures drawn once and reused through random crops, flips, channel orders and gains
    (FlyingChairs, too, reuses a limited set of backgrounds and chairs). `pair_stream` replaces one
    texture every few pairs, so the bank keeps changing; making every texture afresh (5 per pair)
    would cost about as much CPU as a training step of the flow net at input 64."""

    def __init__(self, rng, canvas, count=32):
        self.side = int(canvas * 1.5)
        self.canvas = canvas
        self.textures = [texture(rng, self.side).astype(np.uint8) for _ in range(count)]

    def refresh(self, rng):
        self.textures[rng.integers(len(self.textures))] = texture(rng, self.side).astype(np.uint8)

    def draw(self, rng):
        image = self.textures[rng.integers(len(self.textures))]
        y0, x0 = rng.integers(0, self.side - self.canvas + 1, 2)
        image = image[y0:y0 + self.canvas, x0:x0 + self.canvas]
        if rng.random() < 0.5:
            image = image.transpose(1, 0, 2)
        image = image[::rng.choice([-1, 1]), ::rng.choice([-1, 1]), rng.permutation(3)]
        return image.astype(np.float32) * rng.uniform(0.8, 1.2, 3).astype(np.float32)


def canvas_size(size):
    """Layers are drawn on a slightly larger canvas so that objects can enter the frame; beyond it the
    reflected border supplies texture, and what comes from outside the key frame is not `valid`."""
    return size + 2 * (size // 8)


def make_pair(rng, size, max_objects=MAX_OBJECTS, max_motion=MAX_MOTION, photometric=True, bank=None):
    """One pair: dict `key`, `current` (uint8 (size, size, 3) RGB), `flow` (float32 (size, size, 2),
    backward, pixels) and `valid` (bool (size, size): the source is visible in the key frame).

    photometric: FlowNet's photometric augmentation, kept small: the current frame's brightness,
    contrast and colour change a little, and both frames get sensor noise.
    bank: a `TextureBank` for `canvas_size(size)` to draw textures from (faster), or None (fresh).
    """
    canvas = canvas_size(size)
    margin = (canvas - size) // 2
    new_texture = (lambda: bank.draw(rng)) if bank is not None else (lambda: texture(rng, canvas))
    layers = [(new_texture(), np.ones((canvas, canvas), np.float32),
               affine_flow(rng, size, rng.uniform(0.2, 0.8, 2) * size, max_motion, 4.0, 0.05)
               + smooth_field(rng, size, rng.uniform(0, 0.02) * size))]
    for _ in range(int(rng.integers(1, max_objects + 1))):
        centre = rng.uniform(0.1, 0.9, 2) * size
        radius = rng.uniform(0.08, 0.3) * size
        flow = affine_flow(rng, size, centre, max_motion, 15.0, 0.1)
        flow += smooth_field(rng, size, rng.uniform(0, 0.005) * size)
        layers.append((new_texture(), _shape_mask(rng, canvas, centre + margin, radius), flow))

    inner = slice(margin, margin + size)
    key = np.zeros((size, size, 3), np.float32)
    current = np.zeros((size, size, 3), np.float32)
    gt = np.zeros((size, size, 2), np.float32)
    key_layer = np.zeros((canvas, canvas), np.int32)      # topmost layer of the key frame, on the canvas
    current_layer = np.zeros((size, size), np.int32)
    for index, (image, alpha, flow) in enumerate(layers):
        a_key = alpha[inner, inner, None]
        key = key * (1 - a_key) + image[inner, inner] * a_key
        moved = _remap(np.dstack([image, alpha]), flow, margin)  # one remap for colour and alpha
        a_cur = moved[..., 3:]
        current = current * (1 - a_cur) + moved[..., :3] * a_cur
        visible = a_cur[..., 0] > 0.5
        gt[visible] = flow[visible]
        current_layer[visible] = index
        key_layer[alpha > 0.5] = index

    xx, yy = _grid(size)
    qx, qy = xx + gt[..., 0], yy + gt[..., 1]
    inside = (qx >= 0) & (qx <= size - 1) & (qy >= 0) & (qy <= size - 1)
    ix = np.clip(np.round(qx).astype(np.int32) + margin, 0, canvas - 1)
    iy = np.clip(np.round(qy).astype(np.int32) + margin, 0, canvas - 1)
    valid = inside & (key_layer[iy, ix] == current_layer)

    if photometric:
        current = current * rng.uniform(0.92, 1.08) * rng.uniform(0.97, 1.03, 3) + rng.normal(0, 4)
        for frame in (key, current):
            frame += rng.standard_normal(frame.shape, np.float32) * np.float32(rng.uniform(0, 3))
    to_uint8 = lambda x: np.clip(np.round(x), 0, 255).astype(np.uint8)  # noqa: E731
    return {"key": to_uint8(key), "current": to_uint8(current), "flow": gt, "valid": valid}


def pair_stream(size, seed, bank_size=32, refresh_every=4, **kwargs):
    """An endless, seeded stream of `make_pair` pairs drawing from a `TextureBank` that gets a new
    texture every `refresh_every` pairs."""
    rng = np.random.default_rng(seed)
    bank = TextureBank(rng, canvas_size(size), bank_size)
    count = 0
    while True:
        yield make_pair(rng, size, bank=bank, **kwargs)
        count += 1
        if count % refresh_every == 0:
            bank.refresh(rng)


def make_pairs(count, size, seed, **kwargs):
    """`count` pairs of `pair_stream(size, seed)`, stacked: key, current (N, s, s, 3), flow, valid."""
    stream = pair_stream(size, seed, **kwargs)
    pairs = [next(stream) for _ in range(count)]
    return {name: np.stack([p[name] for p in pairs]) for name in pairs[0]}


def resize_pair(key, current, flow, valid, size):
    """A pair at S x S resized to the flow-net input `size` as DeepFeatureFlow does it (align-corners
    bilinear, flownet2s.dff): frames, flow (vectors scaled by (size - 1) / (S - 1)) and `valid`."""
    side = key.shape[0]
    factor = (side - 1) / (size - 1)
    yy, xx = (np.mgrid[:size, :size] * factor).astype(np.float32)

    def sample(image, interpolation=cv2.INTER_LINEAR):
        return cv2.remap(image, xx, yy, interpolation, borderMode=cv2.BORDER_REPLICATE)

    small_flow = sample(np.asarray(flow, np.float32)) / np.float32(factor)
    small_valid = sample(valid.astype(np.uint8), cv2.INTER_NEAREST).astype(bool)
    return sample(key), sample(current), small_flow, small_valid


def face_pairs(count, input_size, seed, crop_size=129, frame_size=256, max_gap=30, frames=200):
    """`count` synthetic face pairs (deeplab_face.data.synthetic) cropped as prepare_300vw crops them
    (S = crop_size), resized to the flow-net input, with their ground-truth flow: stacked dict
    key, current (uint8), flow (float32, input pixels), valid (bool). Pairs are 1..max_gap frames
    apart (§4.2), a few per video, videos seeded from `seed`."""
    from deeplab_face.data.synthetic import SyntheticFace
    from deeplab_face.data.synthetic_flow_gt import crop_pair
    rng = np.random.default_rng(seed)
    per_video = 4
    out = []
    while len(out) < count:
        face = SyntheticFace(frames, frame_size, int(rng.integers(2 ** 31)))
        for _ in range(min(per_video, count - len(out))):
            gap = int(rng.integers(1, max_gap + 1))
            t = int(rng.integers(gap, frames))
            pair = crop_pair(face, t - gap, t, crop_size)
            out.append(resize_pair(pair["key_image"], pair["image"], pair["flow"], pair["valid"],
                                   input_size))
    names = ("key", "current", "flow", "valid")
    return {name: np.stack([p[i] for p in out]) for i, name in enumerate(names)}
