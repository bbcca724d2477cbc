"""Rewards Eq. 1 and Eq. 2 (paper §3.2; bodies reconstructed in paper.md §5), and the
small mask metrics they need (rl_scheduler does not import eval; the confusion matrix and mIoU are
the project's one definition, `deeplab_face.segmentation_metrics`).

Eq. 1 (ground truth):  r_i = U_i^{a1} - U_i^{a0} on a key, 0 on a non-key, U = mIoU.
Eq. 2 (pseudo ground truth = the key-action mask y^{a1}):
    r_i = Acc(y^{a1}, y^{a1}) - Acc(y^{a0}, y^{a1}) = 1 - Acc(y^{a0}, y^{a1}) on a key, 0 otherwise.
"""
import numpy as np

from deeplab_face.segmentation_metrics import confusion_matrix, mean_iou  # noqa: F401 (re-exported)
from rl_scheduler import config


def pixel_accuracy(pred, label):
    """Fraction of pixels where `pred` equals `label` (DVSNet's confidence score / 100)."""
    return float(np.mean(np.asarray(pred) == np.asarray(label)))


def _scale(values, reward_units):
    config.check_choice("reward_units", reward_units)
    return values * (100.0 if reward_units == "percent" else 1.0)


def eq1(is_key, key_miou, nonkey_miou, reward_units=config.DEFAULT_OPTIONS["reward_units"]):
    """Eq. 1, elementwise: U^{a1} - U^{a0} where `is_key`, else 0. mIoUs are fractions; a frame
    without a labelled pixel (mIoU NaN) earns nothing either way: reward 0."""
    is_key = np.asarray(is_key, bool)
    gain = np.nan_to_num(np.asarray(key_miou, np.float64) - np.asarray(nonkey_miou, np.float64), nan=0.0)
    return _scale(np.where(is_key, gain, 0.0), reward_units)


def eq2(is_key, nonkey_acc, reward_units=config.DEFAULT_OPTIONS["reward_units"]):
    """Eq. 2, elementwise: 1 - Acc(y^{a0}, y^{a1}) where `is_key`, else 0 (Acc a fraction)."""
    is_key = np.asarray(is_key, bool)
    return _scale(np.where(is_key, 1.0 - np.asarray(nonkey_acc, np.float64), 0.0), reward_units)


def pseudo_accuracy(nonkey_mask, key_mask, num_classes, pseudo_acc=config.DEFAULT_OPTIONS["pseudo_acc"]):
    """Acc(y^{a0}, y^{a1}) of Eq. 2: pixel accuracy (default) or mIoU against the key mask."""
    config.check_choice("pseudo_acc", pseudo_acc)
    if pseudo_acc == "pixel_acc":
        return pixel_accuracy(nonkey_mask, key_mask)
    return mean_iou(confusion_matrix(nonkey_mask, key_mask, num_classes))


def eq1_from_masks(is_key, key_mask, nonkey_mask, label, num_classes,
                   reward_units=config.DEFAULT_OPTIONS["reward_units"]):
    """Eq. 1 for one frame from its masks and ground truth."""
    u1 = mean_iou(confusion_matrix(key_mask, label, num_classes))
    u0 = mean_iou(confusion_matrix(nonkey_mask, label, num_classes))
    return float(eq1(is_key, u1, u0, reward_units))


def eq2_from_masks(is_key, key_mask, nonkey_mask, num_classes,
                   pseudo_acc=config.DEFAULT_OPTIONS["pseudo_acc"],
                   reward_units=config.DEFAULT_OPTIONS["reward_units"]):
    """Eq. 2 for one frame from its two masks (no ground truth)."""
    acc = pseudo_accuracy(nonkey_mask, key_mask, num_classes, pseudo_acc)
    return float(eq2(is_key, acc, reward_units))


def pair_rewards(reward, is_key, key_entries, pair_entries,
                 reward_units=config.DEFAULT_OPTIONS["reward_units"],
                 pseudo_acc=config.DEFAULT_OPTIONS["pseudo_acc"]):
    """Rewards for a batch of decisions from cache entries (`VideoCache.key` / `.pair`)."""
    config.check_choice("reward", reward)
    if reward == "eq1":
        return eq1(is_key, [e.miou for e in key_entries], [p.miou for p in pair_entries], reward_units)
    config.check_choice("pseudo_acc", pseudo_acc)
    field = "agreement" if pseudo_acc == "pixel_acc" else "pseudo_miou"
    return eq2(is_key, [getattr(p, field) for p in pair_entries], reward_units)
