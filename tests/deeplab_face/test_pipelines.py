"""tf.data builders over a small hand-made prepared directory (S = 33, 2 videos of 24 and 40 frames)."""
import hashlib

import numpy as np
import pytest
import tensorflow as tf

from deeplab_face.data import pipelines, tfrecords
from deeplab_face.errors import ConfigError, DataError

S = 33
VIDEOS = {"001": 24, "002": 40}


def _frame(video_id, frame):
    """Channel 0 encodes the label (label * 50) so alignment survives augmentation; channels 1-2
    are noise unique to the frame, so a frame is recognised by its pixels."""
    rng = np.random.default_rng([int(video_id), frame])
    label = np.zeros((S, S), np.uint8)
    label[4:20, 6:26] = 1
    label[8:12, 8:14] = 2
    label[rng.integers(14, 20):24, 10:22] = 3
    image = rng.integers(0, 256, (S, S, 3), dtype=np.uint8)
    image[..., 0] = label * 50
    return image, label


def _key(image):
    return hashlib.md5(np.asarray(image, np.uint8).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    manifest = {"size": S, "videos": {}}
    lookup = {}
    for video_id, frames in VIDEOS.items():
        records = []
        for frame in range(1, frames + 1):
            image, label = _frame(video_id, frame)
            lookup[_key(image)] = (video_id, frame)
            records.append(tfrecords.encode_example(image, label, video_id, frame, np.zeros((68, 2))))
        tfrecords.write_examples(root / f"{video_id}.tfrecord", records)
        manifest["videos"][video_id] = {"frames": frames, "file": f"{video_id}.tfrecord"}
    tfrecords.write_manifest(root, manifest)
    return root, lookup


def _take(ds, n):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in ds.take(n)]


def test_segmentation_dataset_shapes_and_alignment(prepared):
    root, _ = prepared
    batches = _take(pipelines.segmentation_dataset(root, ["001", "002"], 4, seed=1), 6)
    padded = 0
    for image, label in batches:
        assert image.shape == (4, S, S, 3) and image.dtype == np.float32
        assert label.shape == (4, S, S) and label.dtype == np.int32
        assert image.min() >= 0 and image.max() <= 255
        assert set(np.unique(label)) <= {0, 1, 2, 3, 255}
        valid = label != 255
        padded += (~valid).sum()
        # the image still encodes its label away from edges (bilinear vs nearest differ on edges)
        interior = valid.copy()
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, -1), (1, -1), (-1, 1)):
            interior &= label == np.roll(label, (dy, dx), axis=(1, 2))
        agree = np.abs(image[..., 0] - label * 50.0) < 1.0
        assert agree[interior].mean() > 0.98
        assert np.allclose(image[~valid], 127.5)  # mean-pixel padding under the ignore label
    assert padded > 0  # some scale below 1 happened in 24 examples


def test_flip_keeps_label_semantics():
    image, label = _frame("001", 1)
    flipped = 0
    for k in range(16):
        out_image, out_label = pipelines.augment_example(
            tf.constant(image, tf.float32), tf.constant(label), tf.constant([3, k], tf.int64), S, 1.0, 1.0)
        out_label = out_label.numpy()
        if np.array_equal(out_label, label[:, ::-1]):
            flipped += 1
            np.testing.assert_array_equal(out_image.numpy(), image[:, ::-1].astype(np.float32))
        else:
            np.testing.assert_array_equal(out_label, label)
    assert 0 < flipped < 16


def test_segmentation_dataset_is_seeded(prepared):
    root, _ = prepared
    a = _take(pipelines.segmentation_dataset(root, ["001", "002"], 3, seed=5), 3)
    b = _take(pipelines.segmentation_dataset(root, ["001", "002"], 3, seed=5), 3)
    c = _take(pipelines.segmentation_dataset(root, ["001", "002"], 3, seed=6), 3)
    for (ia, la), (ib, lb) in zip(a, b):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(la, lb)
    assert any(not np.array_equal(ia, ic) for (ia, _), (ic, _) in zip(a, c))


def test_segmentation_dataset_one_pass_sees_every_frame_once(prepared):
    root, lookup = prepared
    ds = pipelines.segmentation_dataset(root, ["001"], 5, seed=0, augment=False, repeat=False)
    seen = [lookup[_key(im)] for image, _ in _take(ds, 100) for im in image]
    assert sorted(seen) == [("001", f) for f in range(1, 25)]


def test_pair_dataset_gaps_and_frames(prepared):
    root, lookup = prepared
    batches = _take(pipelines.pair_dataset(root, ["001", "002"], 8, seed=2, min_gap=2, max_gap=6), 8)
    gaps = []
    for b in batches:
        assert b["key_image"].shape == (8, S, S, 3) and b["key_image"].dtype == np.float32
        assert b["current_image"].shape == (8, S, S, 3) and b["current_label"].dtype == np.int32
        assert b["current_label"].shape == (8, S, S) and b["gap"].dtype == np.int32
        for key, current, label, gap in zip(b["key_image"], b["current_image"], b["current_label"],
                                            b["gap"]):
            key_video, key_frame = lookup[_key(key)]
            current_video, current_frame = lookup[_key(current)]
            assert key_video == current_video
            assert current_frame == key_frame + gap
            np.testing.assert_array_equal(label, _frame(current_video, current_frame)[1])
            gaps.append(int(gap))
    assert min(gaps) >= 2 and max(gaps) <= 6 and len(set(gaps)) >= 3
    again = _take(pipelines.pair_dataset(root, ["001", "002"], 8, seed=2, min_gap=2, max_gap=6), 8)
    np.testing.assert_array_equal(np.concatenate([b["gap"] for b in batches]),
                                  np.concatenate([b["gap"] for b in again]))
    with pytest.raises(ConfigError, match="min_gap"):
        pipelines.pair_dataset(root, ["001"], 2, seed=0, min_gap=5, max_gap=3)


def test_video_frames_and_load_video_are_ordered(prepared):
    root, _ = prepared
    frames = _take(pipelines.video_frames(root, "002"), 100)
    assert [f["frame"] for f in frames] == list(range(1, 41))
    assert frames[0]["image"].dtype == np.uint8 and frames[0]["label"].shape == (S, S)
    np.testing.assert_array_equal(frames[7]["image"], _frame("002", 8)[0])
    images, labels = pipelines.load_video(root, "002", start=5, count=3)
    assert images.shape == (3, S, S, 3) and labels.shape == (3, S, S) and images.dtype == np.uint8
    for k in range(3):
        expected_image, expected_label = _frame("002", 6 + k)
        np.testing.assert_array_equal(images[k], expected_image)
        np.testing.assert_array_equal(labels[k], expected_label)
    assert pipelines.load_video(root, "001")[0].shape[0] == 24


def test_malformed_inputs_are_data_errors_naming_the_file(prepared, tmp_path):
    root, _ = prepared
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("001.tfrecord", "002.tfrecord", "manifest.json"):
        (broken / name).write_bytes((root / name).read_bytes())
    with pytest.raises(DataError, match="manifest.json: no video '777'"):
        pipelines.segmentation_dataset(broken, ["777"], 2, seed=0)
    data = (broken / "002.tfrecord").read_bytes()
    (broken / "002.tfrecord").write_bytes(data[: len(data) // 2])  # truncated mid-file
    with pytest.raises(DataError, match="002.tfrecord"):
        pipelines.load_video(broken, "002")
    (broken / "001.tfrecord").write_bytes(b"garbage" * 100)
    with pytest.raises(DataError, match="001.tfrecord"):
        pipelines.segmentation_dataset(broken, ["001"], 2, seed=0)
    with pytest.raises(DataError, match="001.tfrecord"):
        pipelines.pair_dataset(broken, ["001"], 2, seed=0)
    (broken / "manifest.json").write_text('{"size": 33, "videos": []}')
    with pytest.raises(DataError, match="manifest.json"):
        pipelines.video_frames(broken, "001")
