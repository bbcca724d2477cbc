"""Confusion-matrix mIoU: the project's one definition (`eval.metrics` re-exports it and
`rl_scheduler.rewards` imports it; deeplab_face is the lowest package, so everyone can).

One confusion matrix over the whole dataset (or one frame); IoU_c = TP / (TP + FP + FN); classes
absent from both predictions and labels are left out of the mean. An empty matrix (no labelled
pixel) has no mIoU: NaN, never 0 or 1, so that no caller averages an empty set by accident
(reports show it as n/a, JSON as null).
"""
import numpy as np

from deeplab_face.data.masks import IGNORE_LABEL


def confusion_matrix(pred, label, num_classes, ignore_label=IGNORE_LABEL):
    """(num_classes, num_classes) int64 counts, rows = label, columns = prediction."""
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    label = np.asarray(label).reshape(-1).astype(np.int64)
    valid = (label != ignore_label) & (label >= 0) & (label < num_classes)
    index = label[valid] * num_classes + np.clip(pred[valid], 0, num_classes - 1)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes).astype(np.int64)


def class_iou(confusion):
    """Per-class IoU; NaN for classes absent from both predictions and labels."""
    confusion = np.asarray(confusion, np.float64)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1e-12), np.nan)


def mean_iou(confusion):
    """Mean IoU in [0, 1] over the classes present; NaN for an empty matrix (nothing measured)."""
    iou = class_iou(confusion)
    return float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan")


def or_none(value):
    """A metric for JSON: None (`null`) for NaN / None, else a float."""
    return None if value is None or np.isnan(value) else float(value)


def fmt(value, spec=".2f"):
    """A metric for a table: "n/a" for an empty set (None or NaN), else `format(value, spec)`."""
    return "n/a" if value is None or np.isnan(value) else format(value, spec)
