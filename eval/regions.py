"""DVSNet's four regions of a Cityscapes frame and its overlap4 merge (reference/dvsnet.md).

The geometry eval.cityscapes' `RegionalSegmenter` runs DFF on: the quadrants grown toward the
centre, and the rule that merges the four region predictions back into one frame.
"""
import collections

import numpy as np

from deeplab_face.errors import ConfigError
from rl_scheduler.dvsnet_import import DVSNET_OVERLAP

Box = collections.namedtuple("Box", "y0 y1 x0 x1")


def region_boxes(frame_hw, overlap=DVSNET_OVERLAP):
    """DVSNet's four regions of an (H, W) frame: top-left, top-right, bottom-left, bottom-right.

    Each quadrant grows by `overlap` px toward the centre: rows [0, H/2+o) and [H/2-o, H), columns
    [0, W/2+o) and [W/2-o, W) (1024x2048 -> 576x1088 regions, 128-px bands where two meet).
    """
    height, width = int(frame_hw[0]), int(frame_hw[1])
    if height % 2 or width % 2:
        raise ConfigError(f"frame size {height}x{width}: the 4-region split needs even sides")
    if overlap % 8 or overlap < 0:
        raise ConfigError(f"--overlap={overlap}: must be a non-negative multiple of 8 (dvsnet.md)")
    half_h, half_w = height // 2, width // 2
    if overlap >= min(half_h, half_w):
        raise ConfigError(f"--overlap={overlap}: too large for {height}x{width} frames")
    rows = ((0, half_h + overlap), (half_h - overlap, height))
    cols = ((0, half_w + overlap), (half_w - overlap, width))
    return tuple(Box(y0, y1, x0, x1) for y0, y1 in rows for x0, x1 in cols)


def region_size(frame_hw, overlap=DVSNET_OVERLAP):
    """(h, w) of each region: (H/2 + overlap, W/2 + overlap); 576x1088 for Cityscapes."""
    box = region_boxes(frame_hw, overlap)[0]
    return box.y1 - box.y0, box.x1 - box.x0


def merge_regions(labels, scores, boxes, frame_hw):
    """DVSNet's overlap4 merge: each pixel takes the label of the covering region with the larger
    score (maximum upsampled logit); ties keep the earlier region. Returns uint8 (H, W)."""
    mask = np.zeros(tuple(frame_hw), np.uint8)
    best = np.full(tuple(frame_hw), -np.inf, np.float32)
    for label, score, box in zip(labels, scores, boxes):
        window = (slice(box.y0, box.y1), slice(box.x0, box.x1))
        take = score > best[window]
        mask[window] = np.where(take, label, mask[window])
        best[window] = np.where(take, score, best[window])
    return mask
