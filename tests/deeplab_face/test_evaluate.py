"""deeplab_face.evaluate: Table 1 rows (dataset-level mIoU, FPS) and the confusion-matrix mIoU."""
import json
import os

import keras
import numpy as np
import pytest

from deeplab_face import build_segmenter
from deeplab_face.data.pipelines import load_video
from deeplab_face.errors import ConfigError
from deeplab_face.evaluate import evaluate
from deeplab_face.prediction import parse_scale_sets
from deeplab_face.segmentation_metrics import confusion_matrix, mean_iou


def _stage(root, backbone, seed=0):
    """A finished segmentation stage with random weights (what train.py leaves behind)."""
    keras.utils.set_random_seed(seed)
    args = dict(backbone=backbone, num_classes=5, crop_size=65, output_stride=16, split="decoder")
    model = build_segmenter(**args)
    os.makedirs(root)
    with open(os.path.join(root, "config.json"), "w") as f:
        json.dump(args, f)
    model.save_weights(os.path.join(root, "final.weights.h5"))
    return model


def test_mean_iou_is_dataset_level_and_skips_absent_classes():
    label = np.array([[0, 0, 1, 255]])
    pred = np.array([[0, 1, 1, 2]])
    confusion = confusion_matrix(pred, label, 4)
    assert confusion.sum() == 3  # the 255 pixel is ignored
    # class 0: 1/2, class 1: 1/2, classes 2 and 3 absent from both -> excluded.
    assert mean_iou(confusion) == pytest.approx(0.5)
    # Two frames summed into one matrix differ from the mean of per-frame mIoUs.
    a = confusion_matrix(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 1]), 2)
    b = confusion_matrix(np.array([1]), np.array([1]), 2)
    assert mean_iou(a + b) == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert (mean_iou(a) + mean_iou(b)) / 2 != pytest.approx(mean_iou(a + b))


def test_evaluate_writes_table1_rows(tiny_prepared, tmp_path):
    prepared, videos = tiny_prepared
    stage = str(tmp_path / "segmenter")
    model = _stage(stage, "mobilenet_v2")
    out_dir = str(tmp_path / "eval")
    results = evaluate(stage, prepared, videos, scale_sets=((1.0,), (1.25, 1.75)), max_frames=4,
                       fps_warmup=1, fps_runs=3, out_dir=out_dir, verbose=0)
    rows = results["table1"]
    assert [r["scales"] for r in rows] == [[1.0], [1.25, 1.75]]
    for row in rows:
        assert set(row) == {"model", "scales", "miou", "fps"}
        assert row["model"] == "DeepLab-V3+ (MobileNet-V2)"
        assert 0.0 <= row["miou"] <= 100.0 and np.isfinite(row["fps"]) and row["fps"] > 0
    # The single-scale row is one confusion matrix over all frames of both videos.
    confusion = 0
    for video_id in videos:
        images, labels = load_video(prepared, video_id, count=4)
        pred = np.argmax(np.asarray(model(images.astype("float32"), training=False)), -1)
        confusion = confusion + confusion_matrix(pred, labels, 5)
    assert rows[0]["miou"] == pytest.approx(100.0 * mean_iou(confusion), abs=1e-3)
    with open(os.path.join(out_dir, "table1.json")) as f:
        assert json.load(f) == json.loads(json.dumps(results))
    with open(os.path.join(out_dir, "table1.md")) as f:
        assert "| DeepLab-V3+ (MobileNet-V2) | 1.25, 1.75 |" in f.read()


def test_vgg_rows_are_single_scale(tiny_prepared, tmp_path):
    prepared, videos = tiny_prepared
    stage = str(tmp_path / "segmenter")
    _stage(stage, "deeplab_v2_vgg16")
    rows = evaluate(stage, prepared, videos[:1], max_frames=2, fps_warmup=1, fps_runs=2,
                    verbose=0)["table1"]
    assert len(rows) == 1 and rows[0]["model"] == "DeepLab-V2 (VGG16)" and rows[0]["scales"] == []
    assert np.isfinite(rows[0]["miou"]) and rows[0]["fps"] > 0


def test_scale_sets_flag_and_bad_video():
    assert parse_scale_sets("1.0;1.25,1.75") == ((1.0,), (1.25, 1.75))
    with pytest.raises(ConfigError, match="scale_sets"):
        parse_scale_sets("1.0;x")


def test_unknown_video_is_a_config_error(tiny_prepared, tmp_path):
    prepared, _ = tiny_prepared
    with pytest.raises(ConfigError, match="video_ids"):
        evaluate(str(tmp_path), prepared, ["nope"])
