"""The prepared-data example format: encode/parse round trips and malformed input."""
import json

import numpy as np
import pytest
import tensorflow as tf

from deeplab_face.data import tfrecords
from deeplab_face.errors import DataError


def _example(seed=0, size=17):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    label = rng.choice(np.array([0, 1, 2, 3, 4, 255], np.uint8), (size, size))
    points = rng.uniform(0, size, (68, 2)).astype(np.float32)
    return image, label, points


def test_encode_then_parse_round_trips_numpy_and_tf():
    image, label, points = _example()
    record = tfrecords.encode_example(image, label, "017", 42, points)
    ex = tfrecords.decode_example(record)
    np.testing.assert_array_equal(ex["image"], image)  # RGB order kept (not BGR)
    np.testing.assert_array_equal(ex["label"], label)
    np.testing.assert_array_equal(ex["points"], points)
    assert ex["video_id"] == "017" and ex["frame"] == 42
    parsed = tfrecords.parse_example(tf.constant(record), size=17)
    np.testing.assert_array_equal(parsed["image"].numpy(), image)
    np.testing.assert_array_equal(parsed["label"].numpy(), label)
    np.testing.assert_array_equal(parsed["points"].numpy(), points)
    assert parsed["image"].dtype == tf.uint8 and parsed["label"].dtype == tf.uint8
    assert parsed["frame"].numpy() == 42 and parsed["video_id"].numpy() == b"017"


def test_file_round_trip_keeps_order(tmp_path):
    path = tmp_path / "v.tfrecord"
    examples = [_example(seed) for seed in range(3)]
    n = tfrecords.write_examples(path, (tfrecords.encode_example(i, lab, "v", k + 1, p)
                                        for k, (i, lab, p) in enumerate(examples)))
    assert n == 3
    read = list(tfrecords.read_examples(path))
    assert [ex["frame"] for ex in read] == [1, 2, 3]
    for ex, (image, _, _) in zip(read, examples):
        np.testing.assert_array_equal(ex["image"], image)


def test_garbage_file_is_a_data_error_naming_it(tmp_path):
    path = tmp_path / "bad.tfrecord"
    path.write_bytes(b"this is not a TFRecord file at all, just some bytes" * 3)
    with pytest.raises(DataError, match="bad.tfrecord"):
        list(tfrecords.read_examples(path))


def test_non_example_record_is_a_data_error(tmp_path):
    path = tmp_path / "odd.tfrecord"
    tfrecords.write_examples(path, [b"\xff\xfe not a protobuf"])
    with pytest.raises(DataError, match="odd.tfrecord"):
        list(tfrecords.read_examples(path))
    missing = tf.train.Example(features=tf.train.Features(feature={
        "frame": tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))})).SerializeToString()
    with pytest.raises(DataError, match="x.tfrecord: example has no 'image'"):
        tfrecords.decode_example(missing, "x.tfrecord")


def test_manifest_round_trip_and_malformed(tmp_path):
    manifest = {"size": 65, "videos": {"001": {"frames": 3, "file": "001.tfrecord"}}}
    tfrecords.write_manifest(tmp_path, manifest)
    assert tfrecords.read_manifest(tmp_path) == manifest
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="manifest.json"):
        tfrecords.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"size": 65, "videos": {"001": {"frames": "x"}}}))
    with pytest.raises(DataError, match="manifest.json.*'001'"):
        tfrecords.read_manifest(tmp_path)
    with pytest.raises(DataError, match="manifest.json: missing"):
        tfrecords.read_manifest(tmp_path / "nowhere")
