"""prepare_300vw end to end on a tiny synthetic tree (S = 65): content, resume, errors, command."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from deeplab_face.data import vw300
from deeplab_face.data.crop import crop_face
from deeplab_face.data.masks import landmarks_to_label
from deeplab_face.data.pipelines import load_video, video_frames
from deeplab_face.data.synthetic import write_synthetic_video
from deeplab_face.data.tfrecords import read_examples
from deeplab_face.errors import ConfigError, DataError
from deeplab_face.prepare_300vw import prepare

S = 65
ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    for index, video_id in enumerate(["001", "002", "003"]):
        write_synthetic_video(root / video_id, frames=6, size=96, seed=index)
    return root


def test_prepare_writes_crops_labels_and_manifest(raw, tmp_path):
    manifest = prepare(raw, tmp_path, size=S, video_ids=["001", "002"])
    assert manifest == json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["size"] == S
    assert manifest["videos"] == {v: {"frames": 6, "file": f"{v}.tfrecord"} for v in ("001", "002")}
    examples = list(read_examples(tmp_path / "002.tfrecord"))
    expected = list(vw300.iter_video(raw, "002"))
    assert [ex["frame"] for ex in examples] == list(range(1, 7))
    for ex, (_, _, rgb, points) in zip(examples, expected):
        image, label, crop_points = crop_face(rgb, landmarks_to_label(points, 96, 96), points, S)
        assert ex["video_id"] == "002" and ex["image"].shape == (S, S, 3)
        np.testing.assert_array_equal(ex["image"], image)
        np.testing.assert_array_equal(ex["label"], label)
        np.testing.assert_allclose(ex["points"], crop_points, atol=1e-4)
        assert {1, 2, 3} <= set(np.unique(ex["label"]))  # the crop is centred on the face
    frames = [f["frame"].numpy() for f in video_frames(tmp_path, "001")]
    assert frames == list(range(1, 7))


def test_prepare_resumes_per_video(raw, tmp_path):
    prepare(raw, tmp_path, size=S, video_ids=["001", "002"])
    stamps = {v: (tmp_path / f"{v}.tfrecord").stat().st_mtime_ns for v in ("001", "002")}
    (tmp_path / "002.tfrecord").unlink()
    (tmp_path / "003.tfrecord.tmp").write_bytes(b"half a file from a crash")
    manifest = prepare(raw, tmp_path, size=S)  # all three: 001 is done, 002 redone, 003 new
    assert sorted(manifest["videos"]) == ["001", "002", "003"]
    assert (tmp_path / "001.tfrecord").stat().st_mtime_ns == stamps["001"]  # skipped
    assert not (tmp_path / "003.tfrecord.tmp").exists()
    images, labels = load_video(tmp_path, "002")
    assert images.shape == (6, S, S, 3) and labels.shape == (6, S, S)
    images3, _ = load_video(tmp_path, "003")
    assert images3.shape[0] == 6
    with pytest.raises(ConfigError, match="--size=129"):
        prepare(raw, tmp_path, size=129)


def test_prepare_excludes_videos_and_frames(raw, tmp_path):
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("003\n001 2-3\n")
    manifest = prepare(raw, tmp_path / "out", size=S, exclude=str(exclude))
    assert sorted(manifest["videos"]) == ["001", "002"]
    assert manifest["videos"]["001"]["frames"] == 4
    assert [ex["frame"] for ex in read_examples(tmp_path / "out" / "001.tfrecord")] == [1, 4, 5, 6]


def test_prepare_errors(raw, tmp_path):
    with pytest.raises(DataError, match="777"):
        prepare(raw, tmp_path / "a", size=S, video_ids=["777"])
    with pytest.raises(DataError, match="nowhere"):
        prepare(tmp_path / "nowhere", tmp_path / "b", size=S)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "manifest.json").write_text("[1, 2")
    with pytest.raises(DataError, match="manifest.json"):
        prepare(raw, tmp_path / "c", size=S)


def test_command(raw, tmp_path):
    split = tmp_path / "split.txt"
    split.write_text("003\n")
    result = subprocess.run([sys.executable, "-m", "deeplab_face.prepare_300vw", f"--data_dir={raw}",
                             f"--out_dir={tmp_path / 'out'}", f"--size={S}", f"--split_file={split}"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(json.loads((tmp_path / "out" / "manifest.json").read_text())["videos"]) == ["003"]
    with pytest.raises(ConfigError, match="--size=5"):
        prepare(raw, tmp_path / "x", size=5)


def test_preview_of_prepared_data(raw, tmp_path):
    import cv2

    from deeplab_face.preview import write_preview
    prepare(raw, tmp_path / "p", size=S, video_ids=["001", "002"])
    out = write_preview(tmp_path / "p", tmp_path / "preview.png", frames_per_video=3, thumb=64)
    assert cv2.imread(str(out)).shape == (2 * 64 + 18, 3 * 64, 3)  # two video rows + legend
