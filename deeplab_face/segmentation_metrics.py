"""Confusion-matrix mIoU for deeplab_face's own train/evaluate commands.

Same definition as `eval.metrics` (which deeplab_face must not import: imports flow one way):
one confusion matrix over the whole dataset; IoU_c = TP / (TP + FP + FN); classes absent from both
predictions and labels are left out of the mean.
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
    """Mean IoU in [0, 1] over the classes present (0.0 for an empty matrix)."""
    iou = class_iou(confusion)
    return float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else 0.0
