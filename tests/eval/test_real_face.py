"""The real face in the demo (issue 12 item 5): video 901 skipped with a note without the optional
extra, the split's real_test role, and the report's per-class table."""
import dataclasses

import pytest

from deeplab_face.data import real_clip
from deeplab_face.errors import ConfigError, DataError
from deeplab_face.make_synthetic import make_synthetic
from eval import presets, real_face, report
from eval.splits import resolve_split

NOTE = ("real-face clip 901 skipped: dlib not installed; install the optional extra with "
        "`.venv/bin/pip install --no-deps -r requirements-annotate.txt`")


def test_tiny_reads_the_real_face_in_table1_only():
    assert presets.TINY.data.real_clip and presets.TINY.split.real_test == ("901",)
    assert "901" not in presets.TINY.split.test
    assert not presets.SMOKE.data.real_clip and presets.SMOKE.split.real_test == ()
    with pytest.raises(ConfigError, match="001"):
        dataclasses.replace(presets.SMOKE.split, real_test=("001",)).check_disjoint()


def test_without_the_extra_the_data_stage_skips_901_and_the_split_drops_it(tmp_path, monkeypatch):
    monkeypatch.setattr(real_clip, "unavailable", lambda: NOTE)
    lines = []
    written = make_synthetic(str(tmp_path), videos=3, frames=2, size=32, demo_clip=False, real_clip=True,
                             log=lines.append)
    assert written == {"001": 2, "002": 2, "003": 2}
    assert not (tmp_path / "901").exists()
    assert lines == [f"note: {NOTE}"]

    experiment = dataclasses.replace(presets.SMOKE, split=dataclasses.replace(presets.SMOKE.split,
                                                                              real_test=("901",)))
    with pytest.raises(DataError, match="901"):   # what the drop prevents
        resolve_split(experiment, str(tmp_path), True)
    lines.clear()
    split, note = real_face.drop_missing_real_test(experiment.split, str(tmp_path), log=lines.append)
    assert note == NOTE and lines == [f"note: {NOTE}"]
    assert split.real_test == () and split.test == presets.SMOKE.split.test
    resolved = resolve_split(dataclasses.replace(experiment, split=split), str(tmp_path), True)
    assert resolved.real_test == ()


def test_a_present_real_face_stays_in_the_split(tmp_path, monkeypatch):
    monkeypatch.setattr(real_clip, "unavailable", lambda: NOTE)
    make_synthetic(str(tmp_path), videos=1, frames=1, size=32, demo_clip=False, log=lambda line: None)
    split = dataclasses.replace(presets.SMOKE.split, real_test=("001",))
    assert real_face.drop_missing_real_test(split, str(tmp_path)) == (split, None)


def _per_class(real=True, note=None):
    classes = ["background", "facial skin", "eyes", "outer mouth", "inner mouth"]
    test = {"videos": ["011", "900"], "frames": 200, "miou": 55.0,
            "iou": dict(zip(classes, [95.0, 80.0, 40.0, 50.0, None]))}
    face = {"videos": ["901"], "frames": 100, "miou": 36.0,
            "iou": dict(zip(classes, [77.0, 65.0, 0.2, 26.0, 13.0]))}
    return {"scales": [1.0], "classes": classes, "groups": {"test": test, "real_face": face if real else None},
            "real_face_note": note}


def test_report_shows_the_per_class_gap():
    text = report.per_class_markdown(_per_class())
    assert "| class | synthetic test videos (011 900) | real face (901) | real - synthetic |" in text
    assert "| eyes | 40.00 | 0.20 | -39.80 |" in text
    assert "| inner mouth | n/a | 13.00 | n/a |" in text       # an empty class: n/a, no made-up gap
    assert "| **mIoU** | 55.00 | 36.00 | -19.00 |" in text
    assert "No real-face row" not in text


def test_report_says_why_the_real_face_was_skipped():
    text = report.per_class_markdown(_per_class(real=False, note=NOTE))
    assert "real face" not in text.split("\n\n")[1]            # the table has the test column only
    assert "| eyes | 40.00 |" in text
    assert f"No real-face row: {NOTE}." in text and "requirements-annotate.txt" in text
    assert report.per_class_markdown(None) == ""
