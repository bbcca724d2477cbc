"""Paper metrics (§4.3; reference/paper.md §11): dataset-level mIoU, AKI, CKI, flicker, FPS.

- mIoU: ONE confusion matrix accumulated over every evaluated frame (`miou_mode=confusion`),
  IoU_c = TP / (TP + FP + FN), classes absent from both prediction and label left out of the mean.
  The definition lives in `deeplab_face.segmentation_metrics` (deeplab_face cannot import eval);
  it is re-exported here so that there is one implementation.
- AKI (average key interval) = frames / keys, the forced first key counted (`aki_count_first_key`).
- CKI: intervals between consecutive keys (Fig. 6 plots their density).
- Flicker: the share of pixels whose predicted label changes between consecutive frames where the
  ground truth does not (temporal stability; not in the paper, reported beside it).
- FPS: model time only (network passes and the scheduler, as the paper: decoding, cropping, I/O and
  colouring excluded), from the per-stage milliseconds of `eval.runtime.FrameResult.ms`; the
  end-to-end FPS (wall clock, everything included) is reported beside it.
"""
import numpy as np

from deeplab_face.segmentation_metrics import class_iou, confusion_matrix, mean_iou

__all__ = ["confusion_matrix", "class_iou", "mean_iou", "frame_miou", "key_flags", "aki",
           "consecutive_key_intervals", "flicker_counts", "flicker", "model_fps", "end_to_end_fps",
           "STAGES"]

# Per-frame stage timings (eval.runtime.FrameResult.ms); "total" is their sum = model time.
STAGES = ("flow", "policy", "key", "warp_task")


def frame_miou(pred, label, num_classes, ignore_label=255):
    """mIoU of one frame (its own confusion matrix), in [0, 1]; per-frame curves (Fig. 7)."""
    return mean_iou(confusion_matrix(pred, label, num_classes, ignore_label))


def _sequences(keys):
    """`keys` as a list of 1-D bool arrays: one flag sequence, or a list of them (one per video)."""
    if isinstance(keys, np.ndarray) and keys.ndim == 1:
        return [keys.astype(bool)]
    keys = list(keys)
    if keys and all(np.ndim(k) == 0 for k in keys):
        return [np.asarray(keys, bool)]
    return [np.asarray(k, bool).reshape(-1) for k in keys]


def key_flags(key_indices, num_frames):
    """Bool (T,) flags from a list of key frame indices."""
    flags = np.zeros(int(num_frames), bool)
    flags[np.asarray(list(key_indices), np.int64)] = True
    return flags


def aki(keys):
    """Average key interval = frames / keys (paper.md §11), the forced first key counted.

    `keys`: per-frame is-key flags (T,), or a list of such sequences (one per video): the
    frames and keys of all videos are summed. Returns inf when there is no key.
    """
    sequences = _sequences(keys)
    frames = sum(len(s) for s in sequences)
    count = sum(int(s.sum()) for s in sequences)
    return float(frames) / count if count else float("inf")


def consecutive_key_intervals(keys):
    """Distances between consecutive keys (CKI, Fig. 6), int64; per video, then concatenated.

    `keys`: per-frame is-key flags (T,) or a list of them. A video with one key adds nothing.
    """
    parts = [np.diff(np.flatnonzero(s)) for s in _sequences(keys)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def flicker_counts(preds, labels, ignore_label=255):
    """(changed, stable): pixels over consecutive frame pairs whose ground truth is unchanged
    (and not ignored in either frame), and how many of those changed their predicted label.

    preds, labels: (T, H, W) integer arrays of one video. Add the counts over videos.
    """
    preds, labels = np.asarray(preds), np.asarray(labels)
    if preds.shape != labels.shape:
        raise ValueError(f"preds {preds.shape} and labels {labels.shape} differ")
    if len(preds) < 2:
        return 0, 0
    stable = (labels[1:] == labels[:-1]) & (labels[1:] != ignore_label)
    changed = stable & (preds[1:] != preds[:-1])
    return int(changed.sum()), int(stable.sum())


def flicker(preds, labels, ignore_label=255):
    """Share of label-stable pixels whose prediction changes between consecutive frames, in [0, 1]."""
    changed, stable = flicker_counts(preds, labels, ignore_label)
    return changed / stable if stable else 0.0


def model_fps(ms):
    """Model-time FPS = frames / sum of per-frame model milliseconds.

    `ms`: a list of `FrameResult.ms` dicts (their "total", or the sum of `STAGES` when absent),
    or a list / array of per-frame totals in milliseconds.
    """
    totals = [m.get("total", sum(m.get(s, 0.0) for s in STAGES)) if isinstance(m, dict) else float(m)
              for m in ms]
    total = float(np.sum(totals))
    return 1000.0 * len(totals) / total if total > 0 else float("inf")


def end_to_end_fps(frames, seconds):
    """Wall-clock FPS over everything (decoding, crop, model, overlay, writing)."""
    return float(frames) / seconds if seconds > 0 else float("inf")
