"""The 300VW reader on tiny trees written here (FFV1 .avi, lossless), and the 300VW-Mask layout."""
import logging

import cv2
import numpy as np
import pytest
from PIL import Image

from deeplab_face.data import vw300
from deeplab_face.data.masks import FACE_PALETTE
from deeplab_face.data.pts import format_pts, write_pts
from deeplab_face.errors import DataError

HEIGHT, WIDTH = 24, 32


def _frame(video, t):
    """A distinct RGB frame per (video, t), with a red left half so an RGB/BGR swap shows."""
    rng = np.random.default_rng([video, t])
    frame = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    frame[:, :WIDTH // 2] = (200, 10, 10)
    return frame


def _points(video, t):
    return (np.random.default_rng([video, t, 1]).random((68, 2)) * [WIDTH, HEIGHT]).astype(np.float32)


def _write_video(root, video_id, frames, annotations, crlf_tabs=False):
    folder = root / video_id
    (folder / "annot").mkdir(parents=True)
    writer = cv2.VideoWriter(str(folder / "vid.avi"), cv2.VideoWriter_fourcc(*"FFV1"), 30, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for t in range(frames):
        writer.write(cv2.cvtColor(_frame(int(video_id), t), cv2.COLOR_RGB2BGR))
    writer.release()
    for t in range(annotations):
        path = folder / "annot" / f"{t + 1:06d}.pts"
        if crlf_tabs:
            text = format_pts(_points(int(video_id), t)).replace(" ", "\t").replace("\n", "\r\n")
            path.write_bytes(text.replace("n_points:\t\t", "n_points:  ").encode())
        else:
            write_pts(path, _points(int(video_id), t))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("300vw")
    _write_video(root, "001", 4, 4)
    _write_video(root, "002", 5, 4, crlf_tabs=True)  # N + 1 frames against N .pts
    _write_video(root, "003", 3, 4)                  # fewer frames than .pts
    _write_video(root, "114", 2, 2)
    (root / "ReadMe.txt").write_text("not a video")
    (root / "extra").mkdir()                         # a folder without vid.avi is not a video
    return root


def _absl_warnings(caplog):
    return [r for r in caplog.records if r.levelno == logging.WARNING and "300VW" in r.getMessage()]


def test_list_videos(tree):
    assert vw300.list_videos(tree) == ["001", "002", "003", "114"]
    assert vw300.list_videos(tree, split="test1") == ["114"]  # official split by name
    assert vw300.list_videos(tree, split=["003", "001", "999"]) == ["001", "003"]
    assert vw300.list_videos(tree, exclude=["002"]) == ["001", "003", "114"]
    with pytest.raises(DataError, match="nowhere"):
        vw300.list_videos(tree / "nowhere")


def test_frames_pair_by_number_in_rgb(tree, caplog):
    items = list(vw300.iter_video(tree, "001"))
    assert [(v, f) for v, f, _, _ in items] == [("001", 1), ("001", 2), ("001", 3), ("001", 4)]
    for _, frame, rgb, points in items:
        assert rgb.dtype == np.uint8 and rgb.shape == (HEIGHT, WIDTH, 3)
        assert np.array_equal(rgb, _frame(1, frame - 1))  # RGB, lossless, frame 1 = first decoded
        np.testing.assert_allclose(points, _points(1, frame - 1), atol=1e-6)  # 000001.pts = frame 1
    assert tuple(items[0][2][0, 0]) == (200, 10, 10)
    assert not _absl_warnings(caplog)


def test_more_frames_than_pts_warns_once_and_uses_shorter(tree, caplog):
    items = list(vw300.iter_video(tree, "002"))  # also: CRLF + tab .pts files
    assert [f for _, f, _, _ in items] == [1, 2, 3, 4]
    np.testing.assert_allclose(items[3][3], _points(2, 3), atol=1e-6)
    warnings = _absl_warnings(caplog)
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "002" in message and "5 frames" in message and "4 .pts" in message


def test_fewer_frames_than_pts_warns_once(tree, caplog):
    items = list(vw300.iter_video(tree, "003"))
    assert [f for _, f, _, _ in items] == [1, 2, 3]
    warnings = _absl_warnings(caplog)
    assert len(warnings) == 1 and "003" in warnings[0].getMessage()
    assert "3 frames" in warnings[0].getMessage() and "4 .pts" in warnings[0].getMessage()


def test_iteration_is_lazy(tree, caplog):
    frames = vw300.iter_video(tree, "002")
    assert next(frames)[1] == 1
    frames.close()  # stopping early decodes nothing more and warns about nothing
    assert not _absl_warnings(caplog)


def test_exclusion_list(tree, tmp_path):
    path = tmp_path / "exclude.txt"
    path.write_text("# bad landmarks\n001 2\n\n001 4-9  # a range\r\n114\n")
    exclusions = vw300.read_exclusions(path)
    assert exclusions.videos == {"114"} and exclusions.frames == {"001": set(range(4, 10)) | {2}}
    assert [f for _, f, _, _ in vw300.iter_video(tree, "001", exclude=path)] == [1, 3]
    assert vw300.list_videos(tree, exclude=path) == ["001", "002", "003"]
    assert list(vw300.iter_video(tree, "114", exclude=path)) == []
    path.write_text("001 two\n")
    with pytest.raises(DataError, match=r"exclude.txt: line 1"):
        vw300.read_exclusions(path)


def test_split_files(tree, tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("003\r\n001, 114\n\n# comment\n")
    assert vw300.read_split(plain) == ["003", "001", "114"]
    assert vw300.list_videos(tree, split=plain) == ["001", "003", "114"]
    mask_split = tmp_path / "A.txt"
    mask_split.write_text("/images_orig/003_000001.jpg /labels_orig/003_000001.png\n"
                          "/images_orig/003_000002.jpg /labels_orig/003_000002.png\n"
                          "/images_orig/001_000007.jpg /labels_orig/001_000007.png\n")
    assert vw300.read_split(mask_split) == ["003", "001"]
    assert vw300.read_split_frames(mask_split) == {"003": [1, 2], "001": [7]}
    bad = tmp_path / "bad.txt"
    bad.write_text("001\n/images_orig/oops.jpg /labels_orig/oops.png\n")
    with pytest.raises(DataError, match=r"bad.txt: line 2"):
        vw300.read_split(bad)
    with pytest.raises(DataError, match="missing.txt"):
        vw300.read_split(tmp_path / "missing.txt")


def test_official_splits():
    sizes = {name: len(ids) for name, ids in vw300.OFFICIAL_SPLITS.items()}
    assert sizes == {"train": 50, "test1": 31, "test2": 19, "test3": 14}
    every = [v for ids in vw300.OFFICIAL_SPLITS.values() for v in ids]
    assert len(set(every)) == 114 and all(len(v) == 3 and v.isdigit() for v in every)


def test_unreadable_video_and_bad_annotations(tree, tmp_path):
    _write_video(tmp_path, "005", 2, 2)
    (tmp_path / "005" / "vid.avi").write_bytes(b"\x00garbage" * 64)
    with pytest.raises(DataError, match=r"005/vid.avi"):
        list(vw300.iter_video(tmp_path, "005"))
    _write_video(tmp_path, "006", 2, 2)
    (tmp_path / "006" / "annot" / "000002.pts").write_text("version: 1\nn_points: 68\n{\n1 2\n}\n")
    with pytest.raises(DataError, match=r"000002.pts: line 5"):
        list(vw300.iter_video(tmp_path, "006"))
    _write_video(tmp_path, "007", 2, 0)
    with pytest.raises(DataError, match=r"007/annot"):
        list(vw300.iter_video(tmp_path, "007"))
    info = vw300.video_info(tree, "001")
    assert (info["width"], info["height"], info["fps"]) == (WIDTH, HEIGHT, 30.0)


def test_mask_release(tmp_path):
    (tmp_path / "images_orig").mkdir()
    (tmp_path / "labels_orig").mkdir()
    label = np.zeros((HEIGHT, WIDTH), np.uint8)
    label[4:10, 4:20] = 1
    label[6:8, 6:9] = 2
    label[12:16, 8:16] = 3
    label[13:15, 10:14] = 4
    for frame in (1, 2, 3):
        Image.fromarray(_frame(40, frame)).save(tmp_path / "images_orig" / f"040_{frame:06d}.jpg",
                                                quality=98)
    Image.fromarray(FACE_PALETTE[label]).save(tmp_path / "labels_orig" / "040_000001.png")  # RGB
    Image.fromarray(label).save(tmp_path / "labels_orig" / "040_000002.png")                # index
    assert vw300.list_mask_release_videos(tmp_path) == ["040"]
    items = list(vw300.iter_mask_release(tmp_path, "040"))  # frame 3 has no label: skipped
    assert [f for _, f, _, _ in items] == [1, 2]
    for _, frame, rgb, got in items:
        assert np.array_equal(got, label)
        assert rgb.shape == (HEIGHT, WIDTH, 3)
        # JPEG blurs the noise half; the flat red half shows the channel order (RGB, not BGR).
        assert np.abs(rgb[:, :12].astype(int) - (200, 10, 10)).max() < 16


def test_annotation_gaps_and_numbering(tmp_path, caplog):
    _write_video(tmp_path, "008", 4, 4)
    (tmp_path / "008" / "annot" / "000003.pts").unlink()
    assert [f for _, f, _, _ in vw300.iter_video(tmp_path, "008")] == [1, 2, 4]
    warnings = _absl_warnings(caplog)
    assert len(warnings) == 1 and "008" in warnings[0].getMessage()
    write_pts(tmp_path / "008" / "annot" / "000000.pts", _points(8, 0))
    with pytest.raises(DataError, match="000000.pts"):
        list(vw300.iter_video(tmp_path, "008"))
