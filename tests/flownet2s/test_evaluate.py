"""flownet2s.evaluate: per-gap interpolation mIoU and the non-key FPS, as Table 1's row."""
import json

import numpy as np

from deeplab_face import load_segmenter
from deeplab_face.data.pipelines import load_video
from deeplab_face.segmentation_metrics import confusion_matrix, mean_iou
from flownet2s import build_flownet
from flownet2s.evaluate import evaluate


def zero_flow_stage(root):
    """An F stage whose flow is 0 and scale 1: propagation then returns the key's prediction."""
    flow_net = build_flownet(input_size=64, feature_channels=256)
    layer = flow_net.get_layer("predict_flow2")
    layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    root.mkdir()
    flow_net.save_weights(str(root / "final.weights.h5"))
    with open(root / "config.json", "w") as f:
        json.dump(dict(flow_net.flownet_args, flow_resolution="full", border="zeros"), f)
    return str(root)


def test_gap_miou_and_fps(flow_prepared, segmenter_stage, tmp_path):
    prepared, videos = flow_prepared
    flownet_dir = zero_flow_stage(tmp_path / "flownet")
    out = evaluate(segmenter_stage, flownet_dir, prepared, videos, gaps=(1, 3), max_frames=5,
                   batch_size=2, fps_runs=2, verbose=0)
    (row,) = out["table1"]
    assert row["model"] == "FlowNet2-s" and row["scales"] == [] and row["fps"] > 0
    assert set(out["gap_miou"]) == {1, 3}
    assert row["miou"] == np.mean([out["gap_miou"][1], out["gap_miou"][3]])
    # Zero flow, unit scale: frame k + g gets N's prediction on frame k.
    segmenter = load_segmenter(segmenter_stage)
    expected = {}
    for gap in (1, 3):
        confusion = 0
        for video in videos:
            images, labels = load_video(prepared, video, count=5)
            pred = np.argmax(np.asarray(segmenter(images.astype(np.float32))), axis=-1)
            confusion = confusion + confusion_matrix(pred[:-gap], labels[gap:], 5)
        expected[gap] = 100.0 * mean_iou(confusion)
    for gap in (1, 3):
        assert abs(out["gap_miou"][gap] - expected[gap]) < 0.2, (gap, out, expected)
    json.dumps(out)   # JSON-serialisable
