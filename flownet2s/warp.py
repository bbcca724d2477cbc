"""Bilinear backward warp of a feature map by a flow field (DFF's propagation W, §3.1).

out(p) = f(p + flow(p)) with flow channel 0 = x (columns) and channel 1 = y (rows), in
pixels of the grid `features` lives on (DESIGN.md "Flow"). Backend-neutral: `keras.ops`
only (a flat gather), differentiable in both the features and the flow.

Borders (flownet_dff.md "Warp conventions"):
- "zeros" (DFF, default): a bilinear corner outside the map contributes zero;
- "clamp" (DVSNet): the sample point is clamped to [0, W-1] x [0, H-1] (edge values).

`dvsnet_compat=True` reproduces DVSNet's released `tools/flow_utils.warp`, whose two
off-diagonal corner weights are swapped: (y_ceil, x_floor) gets tx(1-ty) and
(y_floor, x_ceil) gets (1-tx)ty. It equals standard bilinear only when tx == ty; use it
only with DVSNet's weights, which were fine-tuned through it. Never the default.
"""
import keras
from keras import ops

BORDERS = ("zeros", "clamp")


def _base_grid(height, width, dtype):
    """(1, H, W) column and row coordinates."""
    xs = ops.cast(ops.arange(width), dtype)
    ys = ops.cast(ops.arange(height), dtype)
    grid_x = ops.broadcast_to(ops.reshape(xs, (1, 1, width)), (1, height, width))
    grid_y = ops.broadcast_to(ops.reshape(ys, (1, height, 1)), (1, height, width))
    return grid_x, grid_y


def warp(features, flow, border="zeros", dvsnet_compat=False):
    """Sample `features` (B, H, W, C) at p + flow(p); `flow` (B, H, W, 2) float (x, y).

    Spatial sizes must be static; the batch may be dynamic. Returns (B, H, W, C).
    """
    if border not in BORDERS:
        raise ValueError(f"border must be one of {BORDERS}, got {border!r}")
    features = ops.convert_to_tensor(features)
    # Sampling coordinates stay float32 whatever the feature dtype (flownet_dff.md "Numeric
    # cautions": fp16 spacing is 0.25 px at 256-512).
    flow = ops.cast(ops.convert_to_tensor(flow), "float32")
    height, width, channels = int(features.shape[1]), int(features.shape[2]), int(features.shape[3])
    batch = ops.shape(features)[0]
    grid_x, grid_y = _base_grid(height, width, "float32")
    x = grid_x + flow[..., 0]
    y = grid_y + flow[..., 1]

    if border == "clamp":
        x = ops.clip(x, 0.0, float(width - 1))
        y = ops.clip(y, 0.0, float(height - 1))
    x0 = ops.floor(x)
    y0 = ops.floor(y)
    if border == "clamp" and not dvsnet_compat:
        # Keep the upper corner inside: at the last column x0 = W-2 with weight 1 on x1 = W-1,
        # so zero flow is the identity there too (needs W, H >= 2; size 1 samples the one cell).
        x0 = ops.clip(x0, 0.0, float(max(width - 2, 0)))
        y0 = ops.clip(y0, 0.0, float(max(height - 2, 0)))
    tx = x - x0  # fractional parts: the gradient path to the flow
    ty = y - y0
    x0i = ops.cast(x0, "int32")
    y0i = ops.cast(y0, "int32")
    if dvsnet_compat:  # DVSNet takes ceil(), which equals floor() on integer coordinates
        x1i = ops.cast(ops.ceil(x), "int32")
        y1i = ops.cast(ops.ceil(y), "int32")
    else:
        x1i = x0i + 1
        y1i = y0i + 1

    w_ff = (1.0 - tx) * (1.0 - ty)   # (y0, x0)
    w_fc = tx * (1.0 - ty)           # (y0, x1)
    w_cf = (1.0 - tx) * ty           # (y1, x0)
    w_cc = tx * ty                   # (y1, x1)
    if dvsnet_compat:
        w_fc, w_cf = w_cf, w_fc

    flat = ops.reshape(features, (-1, channels))
    offsets = ops.reshape(ops.arange(batch, dtype="int32") * (height * width), (-1, 1, 1))

    def corner(yi, xi, weight):
        if border == "zeros":
            inside = ((xi >= 0) & (xi <= width - 1) & (yi >= 0) & (yi <= height - 1))
            weight = weight * ops.cast(inside, weight.dtype)
        xi = ops.clip(xi, 0, width - 1)
        yi = ops.clip(yi, 0, height - 1)
        index = ops.reshape(offsets + yi * width + xi, (-1,))
        values = ops.reshape(ops.take(flat, index, axis=0), ops.shape(features))
        return values * ops.cast(ops.expand_dims(weight, -1), values.dtype)

    return (corner(y0i, x0i, w_ff) + corner(y0i, x1i, w_fc)
            + corner(y1i, x0i, w_cf) + corner(y1i, x1i, w_cc))


@keras.saving.register_keras_serializable(package="flownet2s")
class Warp(keras.layers.Layer):
    """`warp` as a layer: called on [features, flow]."""

    def __init__(self, border="zeros", dvsnet_compat=False, **kwargs):
        super().__init__(**kwargs)
        if border not in BORDERS:
            raise ValueError(f"border must be one of {BORDERS}, got {border!r}")
        self.border = border
        self.dvsnet_compat = bool(dvsnet_compat)

    def call(self, inputs):
        features, flow = inputs
        return warp(features, flow, border=self.border, dvsnet_compat=self.dvsnet_compat)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update(border=self.border, dvsnet_compat=self.dvsnet_compat)
        return config
