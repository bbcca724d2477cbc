"""The astronaut "real photo, synthetic motion" clip, and the preview sheet drawn from it."""
import cv2
import numpy as np
import pytest

from deeplab_face.data import vw300
from deeplab_face.data.demo_clip import DemoClip, astronaut_points, write_demo_clip
from deeplab_face.data.masks import landmarks_to_label
from deeplab_face.preview import write_preview

FRAMES, SIZE = 8, 128


@pytest.fixture(scope="module")
def clip_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    clip = write_demo_clip(root / "900", frames=FRAMES, size=SIZE, seed=0)
    return root, clip


def test_shipped_points_match_the_reference():
    points = astronaut_points()
    assert points.shape == (68, 2) and points.dtype == np.float32
    # reference/datasets.md §4 (0-based): jaw start, nose tip, right mouth corner, last inner-lip point
    np.testing.assert_array_equal(points[[0, 30, 54, 67]], [[179, 104], [225, 127], [245, 141], [217, 150]])


def test_clip_reads_back_through_the_reader(clip_tree):
    root, clip = clip_tree
    assert vw300.list_videos(root) == ["900"]
    rows = list(vw300.iter_video(root, "900"))
    assert [frame for _, frame, _, _ in rows] == list(range(1, FRAMES + 1))
    for _, frame, rgb, points in rows:
        image, expected_points, _ = clip.render(frame - 1)
        np.testing.assert_array_equal(points, expected_points)
        np.testing.assert_array_equal(rgb, image)


def test_label_has_face_parts_in_plausible_places(clip_tree):
    root, _ = clip_tree
    for _, _, rgb, points in list(vw300.iter_video(root, "900"))[::3]:
        label = landmarks_to_label(points, SIZE, SIZE)
        area = {c: (label == c).sum() for c in range(5)}
        assert area[1] > area[2] > 0 and area[1] > area[3] > 0
        assert area[4] > 0  # she smiles with her teeth showing: the inner-mouth ring is open
        centre = {c: np.argwhere(label == c).mean(axis=0) for c in (1, 2, 3)}  # (row, col)
        assert centre[2][0] < centre[1][0] < centre[3][0]  # eyes above the face centre, mouth below
        eyes = np.argwhere(label == 2)
        nose_x = points[30, 0]
        assert (eyes[:, 1] < nose_x).any() and (eyes[:, 1] > nose_x).any()  # one eye each side
        skin = rgb[label == 1].astype(int).mean(axis=0)
        assert skin[0] > skin[2] + 20  # skin is warmer than it is blue: the label sits on the face


def test_photo_and_points_move_together(clip_tree):
    """Warping frame t onto frame 0 with the similarity fitted to the points aligns the faces."""
    root, _ = clip_tree
    rows = list(vw300.iter_video(root, "900"))
    first_rgb, first_points = rows[0][2], rows[0][3]
    face = landmarks_to_label(first_points, SIZE, SIZE) > 0
    moved = 0
    for _, _, rgb, points in rows[1:]:
        m, _ = cv2.estimateAffinePartial2D(points, first_points)
        aligned = cv2.warpAffine(rgb, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR)
        error_aligned = np.abs(aligned.astype(float) - first_rgb)[face].mean()
        error_raw = np.abs(rgb.astype(float) - first_rgb)[face].mean()
        assert error_aligned < 20
        if error_raw > 2 * error_aligned:
            moved += 1
    assert moved >= 3  # the camera really moves, and the points follow the photo


def test_seeded_path():
    np.testing.assert_array_equal(DemoClip(5, 64, seed=1).points(4), DemoClip(5, 64, seed=1).points(4))
    assert not np.array_equal(DemoClip(5, 64, seed=1).points(4), DemoClip(5, 64, seed=2).points(4))


def test_preview_sheet(clip_tree, tmp_path, capsys):
    root, _ = clip_tree
    out = write_preview(root, tmp_path / "sheet" / "preview.png", frames_per_video=4, thumb=64)
    sheet = cv2.imread(str(out))
    assert sheet.shape[:2] == (64 + 18, 4 * 64)  # one video row + the legend strip
    # the overlay paints the face red (skin) somewhere in the first cell
    cell = cv2.cvtColor(sheet[:64, :64], cv2.COLOR_BGR2RGB).astype(int)
    assert ((cell[..., 0] > cell[..., 1] + 60) & (cell[..., 0] > cell[..., 2] + 60)).sum() > 20


def test_quirky_folder_still_reads(tmp_path):
    """One video frame more than .pts files, CRLF and tabs in the .pts: the reader copes."""
    clip = write_demo_clip(tmp_path / "901", frames=4, size=64, seed=3, quirks=True)
    raw = (tmp_path / "901" / "annot" / "000001.pts").read_bytes()
    assert b"\r\n" in raw and b"\t" in raw
    assert len(list((tmp_path / "901" / "annot").glob("*.pts"))) == 4
    rows = list(vw300.iter_video(tmp_path, "901"))
    assert [frame for _, frame, _, _ in rows] == [1, 2, 3, 4]
    np.testing.assert_array_equal(rows[3][3], clip.points(3))
