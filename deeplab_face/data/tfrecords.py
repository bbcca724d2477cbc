"""The prepared-data example format (docs/interfaces.md, "Prepared data").

One `tf.train.Example` per frame: `image` (PNG bytes, RGB S×S), `label` (PNG bytes, uint8 S×S),
`video_id` (bytes), `frame` (int64, 1-based), `points` (float32 × 136, crop coordinates, x0 y0 x1 y1 …).
`parse_example` is the tf.data side (graph mode); `decode_example` / `read_examples` the numpy side,
which turn any malformed record into a one-line `DataError` naming the file.
"""
import contextlib
import json
import pathlib

import cv2
import numpy as np
import tensorflow as tf

from deeplab_face import atomic
from deeplab_face.errors import DataError, OutputError

NUM_POINTS = 68

FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.string),
    "video_id": tf.io.FixedLenFeature([], tf.string),
    "frame": tf.io.FixedLenFeature([], tf.int64),
    "points": tf.io.FixedLenFeature([NUM_POINTS * 2], tf.float32),
}


def _png(array):
    ok, data = cv2.imencode(".png", array)
    if not ok:
        raise ValueError("PNG encoding failed")
    return data.tobytes()


def encode_example(image, label, video_id, frame, points):
    """Serialised `tf.train.Example` bytes for one cropped frame (image RGB uint8, label uint8)."""
    image = np.asarray(image, np.uint8)
    label = np.asarray(label, np.uint8)
    if image.ndim != 3 or image.shape[2] != 3 or label.shape != image.shape[:2]:
        raise ValueError(f"image {image.shape} and label {label.shape} do not match")
    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[_png(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))])),
        "label": tf.train.Feature(bytes_list=tf.train.BytesList(value=[_png(label)])),
        "video_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(video_id).encode()])),
        "frame": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(frame)])),
        "points": tf.train.Feature(float_list=tf.train.FloatList(
            value=np.asarray(points, np.float32).reshape(-1).tolist())),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parse_example(serialized, size=None):
    """tf.data parser: dict `image` uint8 (S,S,3), `label` uint8 (S,S), `video_id` string,
    `frame` int64, `points` float32 (68, 2). `size` fixes the static shapes."""
    ex = tf.io.parse_single_example(serialized, FEATURES)
    image = tf.io.decode_png(ex["image"], channels=3)
    label = tf.io.decode_png(ex["label"], channels=1)[..., 0]
    if size is not None:
        image = tf.ensure_shape(image, [size, size, 3])
        label = tf.ensure_shape(label, [size, size])
    return {"image": image, "label": label, "video_id": ex["video_id"], "frame": ex["frame"],
            "points": tf.reshape(ex["points"], [NUM_POINTS, 2])}


def decode_example(serialized, path="<bytes>"):
    """Numpy decoding of one record: dict as `parse_example`, numpy values; DataError on bad content."""
    try:
        example = tf.train.Example.FromString(serialized)
    except Exception as e:  # protobuf's DecodeError and friends
        raise DataError(f"{path}: not a tf.train.Example ({type(e).__name__})") from None
    feature = example.features.feature
    for key in FEATURES:
        if key not in feature:
            raise DataError(f"{path}: example has no '{key}' feature")
    image = cv2.imdecode(np.frombuffer(feature["image"].bytes_list.value[0], np.uint8)
                         if feature["image"].bytes_list.value else np.zeros(0, np.uint8),
                         cv2.IMREAD_COLOR)
    label = cv2.imdecode(np.frombuffer(feature["label"].bytes_list.value[0], np.uint8)
                         if feature["label"].bytes_list.value else np.zeros(0, np.uint8),
                         cv2.IMREAD_UNCHANGED)
    if image is None or label is None or label.ndim != 2 or label.shape != image.shape[:2]:
        raise DataError(f"{path}: example's image/label are not matching PNGs")
    points = np.asarray(feature["points"].float_list.value, np.float32)
    if points.size != NUM_POINTS * 2 or not feature["frame"].int64_list.value:
        raise DataError(f"{path}: example has {points.size} point values (expected {NUM_POINTS * 2}) "
                        "or no frame number")
    return {"image": cv2.cvtColor(image, cv2.COLOR_BGR2RGB), "label": label,
            "video_id": feature["video_id"].bytes_list.value[0].decode()
            if feature["video_id"].bytes_list.value else "",
            "frame": int(feature["frame"].int64_list.value[0]),
            "points": points.reshape(NUM_POINTS, 2)}


def read_records(path):
    """Yields the raw records of one TFRecord file; a corrupt or truncated file raises DataError."""
    try:
        for record in tf.data.TFRecordDataset(str(path)):
            yield record.numpy()
    except tf.errors.OpError as e:
        reason = e.message.splitlines()[0] if e.message else type(e).__name__
        raise DataError(f"{path}: unreadable TFRecord ({reason}); delete it and run "
                        "deeplab_face.prepare_300vw again (it redoes deleted videos)") from None


def read_examples(path):
    """Yields decoded examples (numpy dicts) of one TFRecord file, in file order."""
    for record in read_records(path):
        yield decode_example(record, path)


def write_examples(path, examples):
    """Writes serialised examples to `path` (a TFRecord file) atomically; returns how many. A full
    disk or a folder that cannot be written is an OutputError naming the file."""
    count = 0
    with atomic.replacing(path) as tmp, writing_errors(path):
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for example in examples:
                writer.write(example)
                count += 1
    return count


@contextlib.contextmanager
def writing_errors(path):
    """TensorFlow's errors while writing `path` (ResourceExhaustedError on a full disk, permission)
    as one-line OutputErrors naming it."""
    try:
        yield
    except (tf.errors.ResourceExhaustedError, tf.errors.PermissionDeniedError, tf.errors.NotFoundError,
            tf.errors.FailedPreconditionError, tf.errors.UnknownError) as e:
        reason = e.message.splitlines()[0] if e.message else type(e).__name__
        mapped = atomic.output_error(path, OSError(reason))
        raise (mapped or OutputError(f"{path}: cannot write ({reason})")) from None


MANIFEST = "manifest.json"


def read_manifest(prepared_dir):
    """`<prepared_dir>/manifest.json` as {"size": S, "videos": {id: {"frames": T, "file": name}}};
    a missing or malformed manifest raises DataError naming it."""
    path = pathlib.Path(prepared_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing (run python -m deeplab_face.prepare_300vw first)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("size"), int) \
            or not isinstance(manifest.get("videos"), dict):
        raise DataError(f"{path}: expected {{\"size\": int, \"videos\": {{...}}}}")
    for video_id, entry in manifest["videos"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("frames"), int) \
                or not isinstance(entry.get("file"), str):
            raise DataError(f"{path}: video '{video_id}' needs integer 'frames' and string 'file'")
    return manifest


def write_manifest(prepared_dir, manifest):
    """Writes the manifest atomically (temp file + rename), so a crash never leaves half a file."""
    atomic.write_text(pathlib.Path(prepared_dir) / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
