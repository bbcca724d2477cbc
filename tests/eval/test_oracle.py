"""eval.oracle: the budgeted programme equals brute force; the Lagrangian agrees where it reaches;
only the pairs the programme needs are computed."""
import collections
import itertools

import numpy as np
import pytest

from eval import metrics, oracle

Entry = collections.namedtuple("Entry", "miou confusion")
CLASSES = 3


class FakeCache:
    """key(i) / pair(k, i) with known per-frame mIoU and confusion; pair() of a pair that was not
    prefetched fails, so the oracle must prefetch what it reads."""

    def __init__(self, frames, seed, batch_size=4):
        rng = np.random.default_rng(seed)
        self.num_frames, self.batch_size = frames, batch_size
        self.key_miou = rng.uniform(0.6, 1.0, frames)
        # propagation decays with the distance from the key, plus noise: placement matters
        self.pair_miou = {(k, i): float(np.clip(self.key_miou[i] - 0.05 * (i - k) * rng.uniform(0.2, 2.0)
                                                + rng.normal(0, 0.03), 0.0, 1.0))
                          for k in range(frames) for i in range(k + 1, frames)}
        self.computed, self.requests = set(), []

    def _entry(self, miou):
        hits = int(round(100 * miou))     # a confusion whose mIoU orders like the frame's
        confusion = np.diag([hits, 50, 50]).astype(np.int64)
        confusion[0, 1] = 100 - hits
        return Entry(float(miou), confusion)

    def key(self, i):
        return self._entry(self.key_miou[i])

    def has_pair(self, k, i):
        return (k, i) in self.computed

    def prefetch_pairs(self, pairs):
        self.requests.append(list(pairs))
        self.computed.update(pairs)

    def pair(self, k, i):
        assert (k, i) in self.computed, f"pair {(k, i)} read before it was prefetched"
        return self._entry(self.pair_miou[(k, i)])


def brute_force(table):
    """{n: best objective} over every placement on the table's grid that keeps its gap."""
    best = {}
    others = [int(p) for p in table.positions[1:]]
    for r in range(len(others) + 1):
        for subset in itertools.combinations(others, r):
            try:
                value = table.value([0, *subset])
            except ValueError:     # a gap over max_gap
                continue
            best[r + 1] = max(best.get(r + 1, -np.inf), value)
    return best


def table_for(frames, seed, stride, gap):
    cache = FakeCache(frames, seed)
    oracle.prefetch(cache, oracle.needed_pairs(frames, stride, gap))
    return cache, oracle.VideoTable(cache, stride, gap)


@pytest.mark.parametrize("frames,stride,gap", [(12, 1, None), (12, 1, 3), (11, 1, 5), (12, 2, 4), (10, 3, 7),
                                               (7, 1, 1), (12, 2, None)])
def test_budget_programme_equals_brute_force(frames, stride, gap):
    for seed in range(3):
        _, table = table_for(frames, seed, stride, gap)
        exact = brute_force(table)
        budget = oracle.budget_dp(table)
        for n in range(1, len(budget.values)):
            if n in exact:
                assert budget.values[n] == pytest.approx(exact[n]), (n, seed)
                keys = oracle.budget_keys(table, budget, n)
                assert len(keys) == n and table.value(keys) == pytest.approx(exact[n])
            else:
                assert budget.values[n] == -np.inf
        assert oracle.feasible_keys(budget)[0] == min(exact)
        assert min(exact) == oracle.min_keys(frames, stride, gap)


def test_the_programme_reads_only_the_grid_pairs_in_batches():
    cache, table = table_for(12, 0, 3, 6)
    wanted = {(k, i) for k in (0, 3, 6, 9) for i in range(k + 1, min(k + 6, 12))}
    assert cache.computed == wanted and all(len(r) <= 64 for r in cache.requests)
    assert oracle.prefetch(cache, sorted(wanted)) == 0     # nothing new the second time
    with pytest.raises(Exception, match="exceeds --oracle_max_gap"):
        oracle.needed_pairs(12, 5, 4)


def test_placement_over_videos_matches_brute_force_of_the_split():
    tables = [table_for(9, 10, 1, 4)[1], table_for(7, 11, 1, 4)[1]]
    exact = [brute_force(t) for t in tables]
    for total in range(4, 17):
        best = max((exact[0][a] + exact[1][total - a] for a in exact[0] if total - a in exact[1]), default=None)
        if best is None:
            with pytest.raises(ValueError):
                oracle.oracle_placement(tables, total)
            continue
        keys, objective = oracle.oracle_placement(tables, total)
        assert sum(map(len, keys)) == total and objective == pytest.approx(best)
        assert sum(t.value(k) for t, k in zip(tables, keys)) == pytest.approx(best)


def _hull_vertices(values):
    """Key counts on the upper concave hull of (n, V(n)): the counts a Lagrangian can reach."""
    points = [(n, v) for n, v in values.items()]
    points.sort()
    hull = []
    for p in points:
        while len(hull) >= 2 and (hull[-1][1] - hull[-2][1]) * (p[0] - hull[-1][0]) <= \
                (p[1] - hull[-1][1]) * (hull[-1][0] - hull[-2][0]) + 1e-12:
            hull.pop()
        hull.append(p)
    return [n for n, _ in hull]


@pytest.mark.parametrize("stride,gap", [(1, None), (1, 4), (2, 6)])
def test_lagrangian_reaches_the_hull_counts_with_the_exact_value(stride, gap):
    for seed in range(4):
        _, table = table_for(12, 20 + seed, stride, gap)
        exact = brute_force(table)
        vertices = _hull_vertices(exact)
        traced = oracle.trace_lagrangian([table], vertices)
        for row in traced:
            assert row["reached"] and row["keys"] == row["target"], row
            assert row["objective"] == pytest.approx(exact[row["target"]])
        # any count it returns for any lambda is optimal for that count
        for lam in np.linspace(-1.0, 2.0, 13):
            keys, objective = oracle.lagrangian_placement([table], lam)
            assert objective == pytest.approx(exact[len(keys[0])])


def test_lagrangian_over_two_videos_equals_the_exact_split():
    tables = [table_for(10, 30, 1, 5)[1], table_for(8, 31, 1, 5)[1]]
    for row in oracle.trace_lagrangian(tables, range(4, 19)):
        if row["reached"]:
            _, objective = oracle.oracle_placement(tables, row["target"])
            assert row["objective"] == pytest.approx(objective)
    reached = [r["target"] for r in oracle.trace_lagrangian(tables, range(4, 19)) if r["reached"]]
    assert 4 in reached and 18 in reached     # the fewest keys and every frame a key


def test_oracle_curve_points_are_measured_placements():
    caches = [FakeCache(24, 40), FakeCache(20, 41)]
    points, placements = oracle.oracle_curve(caches, [2, 4], pairs_per_frame=3)
    assert [p["target_aki"] for p in points] == [2.0, 4.0]
    for p in points:
        keys = placements[p["target_aki"]]
        assert p["keys"] == sum(map(len, keys)) == round(44 / p["target_aki"]) and p["fps"] is None
        assert p["aki"] == pytest.approx(44 / p["keys"]) and p["calibrated"]
        assert all(k[0] == 0 for k in keys)
        # dataset mIoU of the summed confusion of exactly those entries
        confusion = sum(c.key(k).confusion if k in ks else c.pair(max(j for j in ks if j <= k), k).confusion
                        for c, ks in zip(caches, keys) for k in range(c.num_frames))
        assert p["miou"] == pytest.approx(100 * metrics.mean_iou(confusion))
    assert [(p["candidate_stride"], p["max_gap"]) for p in points] == [(2, 4), (3, 8)]  # G = 2t, c = ceil(G / 3)

    # one grid for every target: at least as good as evenly spaced keys on it with as many keys
    (point,), _ = oracle.oracle_curve(caches, [4], max_gap=8, candidate_stride=2)
    assert (point["candidate_stride"], point["max_gap"]) == (2, 8)
    even = [list(range(0, c.num_frames, 4)) for c in caches]
    assert point["keys"] == sum(map(len, even)) == 11
    tables = [oracle.VideoTable(c, 2, 8) for c in caches]
    assert point["objective"] >= 100 * sum(t.value(k) for t, k in zip(tables, even)) / 44 - 1e-9
