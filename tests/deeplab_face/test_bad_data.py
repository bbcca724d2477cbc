"""Issue 9, data clusters: landmarks far outside the frame, an empty tree, a full disk while writing a
TFRecord, and a truncated TFRecord read by evaluate and by a training stream: one line naming the file."""
import logging
import shutil

import numpy as np
import pytest
import tensorflow as tf

from deeplab_face.data import pipelines, vw300
from deeplab_face.data.pts import read_pts, write_pts
from deeplab_face.data.synthetic import write_synthetic_video
from deeplab_face.errors import DataError, OutputError
from deeplab_face.prediction import dataset_miou
from deeplab_face.prepare_300vw import prepare

S = 65


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    for index, video_id in enumerate(["001", "002"]):
        write_synthetic_video(root / video_id, frames=5, size=96, seed=index)
    return root


def test_landmarks_far_outside_the_frame_skip_the_frame_with_a_warning(raw, tmp_path, caplog):
    tree = tmp_path / "tree"
    shutil.copytree(raw / "001", tree / "001")
    pts = tree / "001" / vw300.ANNOTATION_DIR / "000003.pts"
    write_pts(pts, read_pts(pts) + 5000.0)
    with caplog.at_level(logging.WARNING):
        manifest = prepare(tree, tmp_path / "out", size=S)
    assert manifest["videos"]["001"]["frames"] == 4
    warnings = [r.getMessage() for r in caplog.records if "outside the frame" in r.getMessage()]
    assert len(warnings) == 1 and "000003.pts" in warnings[0] and "skipped" in warnings[0]


def test_an_empty_tree_is_an_error_not_zero_videos(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no videos to prepare"):
        prepare(tmp_path / "empty", tmp_path / "out", size=S)


def test_a_full_disk_while_writing_a_tfrecord_names_the_file(raw, tmp_path, monkeypatch):
    def full(self, record):
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(tf.io.TFRecordWriter, "write", full)
    with pytest.raises(OutputError, match=r"001\.tfrecord\.tmp: No space left on device; free some space"):
        prepare(raw, tmp_path / "out", size=S, video_ids=["001"])
    assert not (tmp_path / "out" / "001.tfrecord").exists()


@pytest.fixture()
def truncated(raw, tmp_path):
    out = tmp_path / "prepared"
    prepare(raw, out, size=S)
    path = out / "002.tfrecord"
    data = path.read_bytes()
    path.write_bytes(data[:len(data) * 2 // 3])     # the first record stays whole: the manifest check passes
    return out, path


def test_a_truncated_tfrecord_is_named_by_evaluate(truncated):
    out, path = truncated
    predict = lambda images: tf.zeros(tf.shape(images)[:3], tf.int32)  # noqa: E731
    with pytest.raises(DataError, match=rf"{path}: unreadable TFRecord .*prepare_300vw again"):
        dataset_miou(predict, str(out), ["001", "002"], S, 5)


def test_a_truncated_tfrecord_is_named_in_a_training_stream(truncated):
    out, path = truncated
    ds = pipelines.segmentation_dataset(str(out), ["002"], 2, seed=0, augment=False, repeat=False)
    with pytest.raises(DataError, match=rf"{path}: unreadable TFRecord"):
        for _ in pipelines.checked_batches(ds, str(out), ["002"]):
            pass


def test_resumed_stream_continues_where_the_step_left_off(raw, tmp_path):
    out = tmp_path / "prepared"
    prepare(raw, out, size=S)
    full = [b[1].numpy() for b, _ in zip(pipelines.segmentation_dataset(str(out), ["001", "002"], 2, seed=4),
                                           range(6))]
    later = [b[1].numpy() for b, _ in zip(pipelines.segmentation_dataset(str(out), ["001", "002"], 2, seed=4,
                                                                         skip_batches=3), range(3))]
    for a, b in zip(full[3:], later):
        np.testing.assert_array_equal(a, b)
