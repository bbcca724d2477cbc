"""The video split of a real 300VW-format tree (`eval.reproduce --data_dir`; WORKSPACE.md, README).

The paper's three sets (§9): A trains N and F, B trains and validates the schedulers (and validates N
and F), C is the held-out test set. Where they come from, in order:

1. `--split_dir`: the paper's 300VW-Mask `split_2/{A,B,C}.txt` lists.
2. Official 300VW ids: the documented fallback, the official challenge split mapped onto A/B/C
   (`eval.presets.OFFICIAL_FALLBACK_SETS`: train -> A, test 1 + test 2 -> B, test 3 -> C).
3. Any other id (your own videos, made-up ids): `own_ids_split`, a deterministic rule at the level
   of videos (never frames: the frames of one video stay in one set). The ids are ordered by the
   SHA-256 of the id; the first round(n * 12 / 114) of them (at least 1) are C, the next
   round(n * 51 / 114) (at least 1) are B, the rest A: the paper's 51/51/12 proportions. The order
   does not depend on the listing order, the machine or the other ids' names.

A tree with ids of both kinds uses rule 2 for the official ids and rule 3 for the others, merged.
The split is printed at the start of the run. Every set needs at least one video, so a tree needs at
least 3 videos (without --split_dir); fewer is a one-line error naming the count and the flags.
"""
import dataclasses
import hashlib
import os

from deeplab_face.errors import ConfigError, DataError
from eval import presets

SETS = ("A", "B", "C")
ROLES = {"A": "N and F training", "B": "scheduler training and validation, N and F validation",
         "C": "held-out test"}
PAPER_SIZES = {"A": 51, "B": 51, "C": 12}   # §9: 300VW-Mask split_2
MIN_VIDEOS = len(SETS)


def _order_key(video_id):
    return hashlib.sha256(str(video_id).encode("utf-8")).hexdigest(), str(video_id)


def own_ids_split(video_ids):
    """{"A": ids, "B": ids, "C": ids} of ids that are not official 300VW ids (module docstring, rule 3).
    Needs at least 3 ids; each list is sorted."""
    ids = sorted(set(map(str, video_ids)), key=_order_key)
    n = len(ids)
    if n < MIN_VIDEOS:
        raise ValueError(f"{n} videos: the rule needs at least {MIN_VIDEOS}")
    total = sum(PAPER_SIZES.values())
    test = max(1, round(n * PAPER_SIZES["C"] / total))
    scheduler = max(1, round(n * PAPER_SIZES["B"] / total))
    scheduler = min(scheduler, n - test - 1)        # A keeps at least one
    sets = {"C": ids[:test], "B": ids[test:test + scheduler], "A": ids[test + scheduler:]}
    return {name: sorted(sets[name]) for name in SETS}


def _too_few(data_dir, available, experiment):
    return DataError(f"--data_dir: {data_dir} has {len(available)} video(s) ({' '.join(sorted(available)) or 'none'}); "
                     f"--config={experiment.name} needs at least {MIN_VIDEOS}, one for each set "
                     f"(A: {ROLES['A']}; B: {ROLES['B']}; C: {ROLES['C']}): add videos to --data_dir, or "
                     "name the sets yourself with --split_dir (A.txt, B.txt, C.txt)")


def _official_ids():
    from deeplab_face.data import vw300
    return {v for part in vw300.OFFICIAL_SPLITS.values() for v in part}


def tree_sets(data_dir, available, experiment, split_dir=None, log=print):
    """{"A", "B", "C": ids present in the tree} by the module docstring's rules; logs where they came from."""
    from deeplab_face.data import vw300
    if split_dir:   # §9: the paper's 300VW-Mask split_2 lists
        sets = {n: vw300.read_split(os.path.join(split_dir, f"{n}.txt")) for n in SETS}
        missing = sorted({v for ids in sets.values() for v in ids} - available)
        if missing:
            log(f"note: {len(missing)} videos of --split_dir are not in {data_dir} and are left out: "
                f"{' '.join(missing)}")
        sets = {n: [v for v in ids if v in available] for n, ids in sets.items()}
        for name in SETS:
            if not sets[name]:
                raise ConfigError(f"--split_dir: set {name} ({split_dir}/{name}.txt) names no video of "
                                  f"{data_dir}")
        return sets
    official = available & _official_ids()
    own = sorted(available - official)
    if len(available) < MIN_VIDEOS:
        raise _too_few(data_dir, available, experiment)
    sets = {n: [] for n in SETS}
    if official:   # documented fallback: the official 300VW split (eval.presets)
        for name, parts in presets.OFFICIAL_FALLBACK_SETS.items():
            sets[name] = [v for part in parts for v in vw300.OFFICIAL_SPLITS[part] if v in official]
        absent = len(_official_ids()) - len(official)
        if absent:
            log(f"note: {absent} of the official 300VW videos are not in {data_dir} (fine for a partial tree)")
    if own:
        if len(own) < MIN_VIDEOS and any(not sets[n] for n in SETS):
            raise _too_few(data_dir, available, experiment)
        if len(own) >= MIN_VIDEOS:
            rule = own_ids_split(own)
        else:   # a few own videos beside a complete official split: they train N and F
            rule = {"A": own, "B": [], "C": []}
        log(f"split: {len(own)} video(s) with ids that are not official 300VW ids, split by the documented "
            "rule (SHA-256 order of the ids; about 12/114 to C, 51/114 to B, the rest to A; eval/splits.py): "
            + "; ".join(f"{n} = {' '.join(rule[n]) or '-'}" for n in SETS))
        sets = {n: sets[n] + rule[n] for n in SETS}
    empty = [n for n in SETS if not sets[n]]
    if empty:
        raise DataError(f"--data_dir: {data_dir}: none of its {len(available)} videos falls in set(s) "
                        f"{', '.join(empty)} ({'; '.join(ROLES[n] for n in empty)}): official 300VW ids follow the "
                        "official split (WORKSPACE.md); add videos of those sets, or name the sets yourself "
                        "with --split_dir (A.txt, B.txt, C.txt)")
    return sets


def resolve_split(experiment, data_dir, embedded, split_dir=None, log=print):
    """The experiment's Split, checked against the videos present in `data_dir`."""
    from deeplab_face.data import vw300
    available = set(vw300.list_videos(data_dir))
    if embedded:
        split = experiment.split
    else:
        sets = tree_sets(data_dir, available, experiment, split_dir, log)
        if experiment.uses_embedded_data:
            # A small preset on real data: the first videos of each set, as many as the preset's roles use.
            sizes = {"A": len(experiment.split.segmenter_train), "B": len(experiment.split.scheduler_train),
                     "C": len(experiment.split.test)}
            sets = {n: ids[:sizes[n]] for n, ids in sets.items()}
        split = presets.paper_split(sets)
        log("split: " + "; ".join(f"{n} ({ROLES[n]}) = {' '.join(sets[n])}" for n in SETS))
    split.check_disjoint()
    for role, ids in dataclasses.asdict(split).items():
        absent = [v for v in ids if v not in available]
        if absent:
            raise DataError(f"{data_dir}: split role {role} names videos that are not there: {' '.join(absent)}")
    return split
