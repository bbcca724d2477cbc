"""eval.metrics against hand-computed examples."""
import math

import numpy as np
import pytest

from eval import metrics


def test_confusion_matrix_and_dataset_miou_by_hand():
    label = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 1, 0]])
    confusion = metrics.confusion_matrix(pred, label, num_classes=4)
    expected = np.zeros((4, 4), np.int64)
    expected[0, 0], expected[0, 1], expected[1, 1], expected[2, 1] = 1, 1, 2, 1   # 255 skipped
    assert np.array_equal(confusion, expected)
    # IoU: class 0 = 1/2, class 1 = 2/(4+2-2) = 1/2, class 2 = 0/1 = 0; class 3 absent from both: left out
    assert metrics.mean_iou(confusion) == pytest.approx((0.5 + 0.5 + 0.0) / 3)


def test_miou_is_dataset_level_not_a_mean_of_frames():
    label_a, pred_a = np.array([0, 0, 0, 1]), np.array([0, 0, 0, 1])   # perfect frame
    label_b, pred_b = np.array([1, 1]), np.array([0, 0])               # all wrong
    total = metrics.confusion_matrix(pred_a, label_a, 2) + metrics.confusion_matrix(pred_b, label_b, 2)
    # dataset: class 0 IoU = 3/5, class 1 IoU = 1/3
    assert metrics.mean_iou(total) == pytest.approx((3 / 5 + 1 / 3) / 2)
    per_frame = (metrics.frame_miou(pred_a, label_a, 2) + metrics.frame_miou(pred_b, label_b, 2)) / 2
    assert per_frame == pytest.approx((1.0 + 0.0) / 2)


def test_aki_counts_the_forced_first_key_and_pools_videos():
    keys = np.zeros(30, bool)
    keys[[0, 10, 20]] = True
    assert metrics.aki(keys) == 10.0
    assert metrics.aki([True, False, False, False]) == 4.0
    assert metrics.aki([keys, metrics.key_flags([0], 10)]) == pytest.approx(40 / 4)
    assert metrics.aki(np.zeros(5, bool)) == math.inf


def test_consecutive_key_intervals_per_video():
    assert metrics.consecutive_key_intervals(metrics.key_flags([0, 3, 10], 12)).tolist() == [3, 7]
    two = [metrics.key_flags([0, 5], 8), metrics.key_flags([0], 8), metrics.key_flags([0, 2, 4], 8)]
    assert metrics.consecutive_key_intervals(two).tolist() == [5, 2, 2]   # no interval across videos


def test_flicker_counts_only_pixels_whose_ground_truth_is_stable():
    labels = np.array([[0, 0, 1, 255], [0, 1, 1, 255], [0, 1, 1, 255]])
    preds = np.array([[0, 0, 1, 0], [1, 1, 1, 1], [1, 0, 1, 0]])
    # stable pairs: t0->1 pixels 0, 2; t1->2 pixels 0, 1, 2 (pixel 3 ignored, pixel 1 changes at t0->1)
    # prediction changes among them: t0->1 pixel 0; t1->2 pixel 1
    assert metrics.flicker_counts(preds, labels) == (2, 5)
    assert metrics.flicker(preds, labels) == pytest.approx(0.4)
    assert metrics.flicker(preds[:1], labels[:1]) == 0.0


def test_fps_helpers():
    ms = [{"flow": 0.0, "policy": 0.0, "key": 40.0, "warp_task": 0.0, "total": 40.0},
          {"flow": 5.0, "policy": 1.0, "key": 0.0, "warp_task": 4.0, "total": 10.0}]
    assert metrics.model_fps(ms) == pytest.approx(2 / 0.050)
    assert metrics.model_fps([{"key": 20.0}, {"flow": 10.0, "warp_task": 10.0}]) == pytest.approx(50.0)
    assert metrics.model_fps([25.0, 25.0, 50.0]) == pytest.approx(30.0)
    assert metrics.end_to_end_fps(90, 3.0) == 30.0
