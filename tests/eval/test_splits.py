"""Issue 12 items 1-2: any 300VW-format tree splits (made-up ids included), a failed run never locks
its workdir, and an empty set is n/a / null, never a 0 averaged in."""
import json
import random

import numpy as np
import pytest

from deeplab_face.errors import DataError
from eval import presets, reproduce, splits


def _fake_tree(root, ids):
    for video_id in ids:
        (root / video_id).mkdir(parents=True)
        (root / video_id / "vid.avi").write_bytes(b"")
    return str(root)


MADE_UP = [f"clip{n:02d}" for n in range(20)]


def test_made_up_ids_split_deterministically_by_video():
    sets = splits.own_ids_split(MADE_UP)
    shuffled = list(MADE_UP)
    random.Random(3).shuffle(shuffled)
    assert splits.own_ids_split(shuffled) == sets                       # listing order does not matter
    assert sorted(sum(sets.values(), [])) == sorted(MADE_UP)             # every video in exactly one set
    assert [len(sets[n]) for n in ("A", "B", "C")] == [9, 9, 2]          # 51/51/12 of 20: C 2, B 9
    three = splits.own_ids_split(["x", "y", "z"])
    assert all(len(three[n]) == 1 for n in ("A", "B", "C"))
    with pytest.raises(ValueError):
        splits.own_ids_split(["x", "y"])


def test_reproduce_splits_a_tree_of_made_up_ids_and_prints_it(tmp_path):
    data_dir = _fake_tree(tmp_path / "tree", MADE_UP)
    lines = []
    split = reproduce.resolve_split(presets.PAPER, data_dir, embedded=False, log=lines.append)
    sets = splits.own_ids_split(MADE_UP)
    assert split.segmenter_train == tuple(sets["A"]) and split.scheduler_train == tuple(sets["B"])
    assert split.test == tuple(sets["C"])
    assert not any("official 300VW videos are not in" in line for line in lines)   # no 114-id note
    assert any("not official 300VW ids" in line and "SHA-256" in line for line in lines)
    assert any(line.startswith("split: A (") and " ".join(sets["C"]) in line for line in lines)
    # a small preset takes as many of each set as its roles use
    small = reproduce.resolve_split(presets.SMOKE, data_dir, embedded=False, log=lambda line: None)
    assert (small.segmenter_train, small.scheduler_train, small.test) == \
        ((sets["A"][0],), (sets["B"][0],), (sets["C"][0],))


def test_mixed_tree_uses_the_official_split_for_official_ids(tmp_path):
    data_dir = _fake_tree(tmp_path / "tree", ["001", "114", "410", "m1", "m2", "m3"])
    split = reproduce.resolve_split(presets.PAPER, data_dir, embedded=False, log=lambda line: None)
    own = splits.own_ids_split(["m1", "m2", "m3"])
    assert split.segmenter_train == tuple(["001"] + own["A"])
    assert split.scheduler_train == tuple(["114"] + own["B"]) and split.test == tuple(["410"] + own["C"])


def test_too_few_videos_name_the_count_and_the_flags(tmp_path):
    data_dir = _fake_tree(tmp_path / "tree", ["me1", "me2"])
    with pytest.raises(DataError, match=r"--data_dir: .* has 2 video\(s\) \(me1 me2\); --config=tiny needs at "
                                        r"least 3.*--split_dir"):
        reproduce.resolve_split(presets.TINY, data_dir, embedded=False)
    official_only_a = _fake_tree(tmp_path / "official", ["001", "002", "003"])
    with pytest.raises(DataError, match=r"set\(s\) B, C .*--split_dir"):
        reproduce.resolve_split(presets.PAPER, official_only_a, embedded=False)


def _made_up_tree(root, ids):
    """A real 300VW-format tree (videos + .pts) under made-up ids, from the synthetic generator."""
    from deeplab_face.make_synthetic import make_synthetic
    make_synthetic(str(root), videos=len(ids), frames=6, size=96, demo_clip=False)
    for n, video_id in enumerate(ids):
        (root / f"{n + 1:03d}").rename(root / video_id)
    return str(root)


def test_failed_run_leaves_a_workdir_the_corrected_command_accepts(tmp_path):
    workdir = tmp_path / "w"
    too_small = _fake_tree(tmp_path / "two", ["me1", "me2"])
    with pytest.raises(DataError, match="has 2 video"):
        reproduce.reproduce(str(workdir), config="smoke", data_dir=too_small, log=lambda line: None)
    assert json.loads((workdir / "config.json").read_text())["data_dir"] == too_small
    fixed = _made_up_tree(tmp_path / "three", ["ann", "bob", "cyd"])
    lines = []
    reproduce.reproduce(str(workdir), config="smoke", data_dir=fixed, stop_after="prepare", log=lines.append)
    assert any("no stage of that run finished" in line for line in lines)
    assert json.loads((workdir / "config.json").read_text())["data_dir"] == fixed
    manifest = json.loads((workdir / "prepared" / "manifest.json").read_text())
    assert sorted(manifest["videos"]) == ["ann", "bob", "cyd"]
    assert (workdir / "stages" / "prepare.json").exists()
    # once a stage has finished, the workdir belongs to that run
    with pytest.raises(Exception, match="--workdir: .* holds a run with --data_dir"):
        reproduce.reproduce(str(workdir), config="smoke", data_dir=too_small, log=lambda line: None)


# -- empty sets ----------------------------------------------------------------------------------------
def test_one_mean_iou_and_an_empty_matrix_has_none():
    from deeplab_face import segmentation_metrics
    from eval import metrics
    from rl_scheduler import rewards
    assert rewards.mean_iou is segmentation_metrics.mean_iou is metrics.mean_iou
    assert rewards.confusion_matrix is segmentation_metrics.confusion_matrix
    assert np.isnan(segmentation_metrics.mean_iou(np.zeros((5, 5), np.int64)))
    assert segmentation_metrics.fmt(float("nan")) == segmentation_metrics.fmt(None) == "n/a"
    # a frame without a labelled pixel earns no reward either way (not a NaN in the returns)
    assert rewards.eq1([True], [float("nan")], [float("nan")]).tolist() == [0.0]


def test_an_empty_gap_is_na_not_a_zero_in_the_flownet_row():
    from flownet2s.evaluate import gap_row_miou
    hit = np.diag([50, 30, 0, 0, 0]).astype(np.int64)
    hit[0, 1] = 10
    lines = []
    gap_miou, row = gap_row_miou({1: hit, 5: np.zeros((5, 5), np.int64)}, log=lines.append)
    assert gap_miou[5] is None and row == pytest.approx(gap_miou[1]) and gap_miou[1] > 0
    assert len(lines) == 1 and "gap 5" in lines[0] and "n/a" in lines[0]
    assert gap_row_miou({5: np.zeros((5, 5), np.int64)}, log=lambda line: None) == ({5: None}, None)


def test_report_and_table_show_empty_sets_as_na():
    from eval.figures import table1_markdown
    from eval.report import _fmt
    table = table1_markdown([{"model": "FlowNet2-s", "scales": [], "miou": None, "fps": 12.0}])
    assert "| FlowNet2-s | N/A | n/a | 12.0 |" in table
    assert _fmt(None) == "n/a"
