import numpy as np
import pytest

from rl_scheduler import rewards


def _masks():
    label = np.zeros((4, 4), np.uint8)
    label[:2, :2] = 1                              # class 1 = top-left quarter
    key_mask = label.copy()                        # the key path is perfect
    nonkey_mask = np.zeros((4, 4), np.uint8)
    nonkey_mask[:2, :1] = 1                        # the warped mask covers half of class 1
    return label, key_mask, nonkey_mask


def test_eq1_on_hand_made_masks():
    label, key_mask, nonkey_mask = _masks()
    # non-key: class 1 IoU = 2/4, background IoU = 12/14 -> mIoU = (0.5 + 6/7) / 2
    u0 = (0.5 + 12 / 14) / 2
    assert rewards.eq1_from_masks(True, key_mask, nonkey_mask, label, 2) == pytest.approx(1.0 - u0)
    assert rewards.eq1_from_masks(False, key_mask, nonkey_mask, label, 2) == 0.0
    assert rewards.eq1_from_masks(True, key_mask, nonkey_mask, label, 2, reward_units="percent") == \
        pytest.approx(100 * (1.0 - u0))


def test_eq2_uses_the_key_mask_as_pseudo_label():
    label, key_mask, nonkey_mask = _masks()
    label[:] = 255                                 # no ground truth at all: Eq. 2 must not need it
    assert rewards.eq2_from_masks(True, key_mask, nonkey_mask, 2) == pytest.approx(2 / 16)
    assert rewards.eq2_from_masks(False, key_mask, nonkey_mask, 2) == 0.0
    u = (0.5 + 12 / 14) / 2
    assert rewards.eq2_from_masks(True, key_mask, nonkey_mask, 2, pseudo_acc="miou") == pytest.approx(1 - u)


def test_mean_iou_excludes_absent_classes_and_ignores_255():
    label = np.array([[0, 0, 255, 255]])
    pred = np.array([[0, 0, 3, 4]])
    confusion = rewards.confusion_matrix(pred, label, 5)
    assert confusion.sum() == 2
    assert rewards.mean_iou(confusion) == 1.0


def test_vectorised_rewards_are_zero_on_non_keys():
    out = rewards.eq1([True, False, True], [0.9, 0.9, 0.5], [0.7, 0.1, 0.6])
    np.testing.assert_allclose(out, [0.2, 0.0, -0.1])
