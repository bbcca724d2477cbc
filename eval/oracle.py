"""The oracle key placement: the best keys for a key budget, knowing every pair's true quality.

A reference for the schedulers (DESIGN.md: `curves["oracle"]`, drawn dashed, never a competitor): it
reads the ground truth of the test videos, which no scheduler can. DESIGN.md calls it the upper bound;
it is one only for placements on its candidate grid (below). Measured (session 6, `runs/demo_s5`'s
test videos, the sweeps' grid c = ceil(2 t / 4)): eval.causal_oracle's frame-by-frame rule, free to key
any frame, scored 1.1-2.1 points above it at AKI 5-100.

Objective, per video: the sum over frames of the per-frame mIoU of what each frame gets, key(i).miou
on a key and pair(k, i).miou on a non-key propagated from its last key k (`rl_scheduler.cache`
entries); frame 0 is a forced key. The sum is additive over key segments, so the best placement
with n keys is an exact dynamic programme over key positions p_0 = 0 < p_1 < ... (the candidates):

    F[b, n] = max over a in [b - D, b) of  F[a, n - 1] + seg(a, p_b),       F[0, 0] = 0
    V(n)    = max over a with T - p_a <= G of  F[a, n - 1] + seg(a, T)

F[b, n] is the best value of frames [0, p_b) holding n keys, with a key at p_b; seg(a, e) the value of
frames p_a .. e-1 from the key at p_a; D = G // c. Cost O(m D n_max) for m = T / c candidates (a
few seconds at T = 3000, c = 1, D = 8). Across the test videos the per-video curves V_v(n) are
combined by max-plus convolution, so the total key count N = round(frames / target AKI) is met
exactly with the best split between videos (the dataset AKI is frames / keys over all videos).

Lagrangian form (`lagrangian_placement`, `trace_lagrangian`): maximise sum(value) - lambda * keys,
O(m D) per lambda. A placement it returns with n keys is optimal among all placements with n keys
(if x maximises f - lambda keys and keys(x) = n, then any y with n keys has f(y) - lambda n <=
f(x) - lambda n), but it reaches only the counts on the concave hull of V; bisecting lambda finds
them and reports the others as not reached. The sweeps use the exact programme; the tests check
that both agree where the Lagrangian reaches, and that both equal brute force on small cases.

Options:
- max_gap G: consecutive keys at most G frames apart and the last key at most G frames before the
  end, i.e. a frame propagates from a key at most G - 1 frames back. None: the video length.
- candidate_stride c: keys only at frames 0, c, 2c, ... A stride > 1 restricts the placements, so
  its optimum is a LOWER bound of the exact (stride 1) oracle; it stays an upper bound for any
  placement on that grid.

Cost: the programme needs the (k, i) pairs with k on the candidate grid and i in (k, k + G), about
T (G - 1) / c per video, each a FlowNet forward (measured ~70 pairs/s at S = 129 on a 2-core CPU,
~145/s at flow_resolution half). `oracle_curve` computes only those, in batched `prefetch_pairs`
calls on the sweeps' own caches (pairs the schedulers visited are reused), and by default sizes the
grid per target AKI t: G = ceil(gap_factor * t), c = ceil(G / pairs_per_frame), so every target
costs about `pairs_per_frame` pairs per frame whatever t.

The reported point: the dataset mIoU of the placement (one confusion matrix summed over all frames
of all videos, as the sweeps). The objective is the per-frame mean, so a scheduler can score above
the oracle in dataset mIoU by a little; `objective` is the mean per-frame mIoU the oracle maximised.
"""
import collections
import math

import numpy as np

from deeplab_face.errors import ConfigError, DataError
from eval import metrics
from eval.calibrate import in_band

TIE = 1e-9   # Lagrangian: penalised values this close are ties (float sums of the same frames)

Budget = collections.namedtuple("Budget", "values back last")
Budget.__doc__ = """`budget_dp` result: values[n] = best objective with n keys (-inf: infeasible;
values[0] = -inf, frame 0 is a key); back, last: the programme's back pointers."""


def _grid(num_frames, candidate_stride, max_gap):
    stride = int(candidate_stride)
    gap = int(num_frames if max_gap is None else max_gap)
    if stride < 1:
        raise ConfigError(f"--oracle_candidate_stride={stride}: must be at least 1")
    if gap < 1:
        raise ConfigError(f"--oracle_max_gap={gap}: must be at least 1")
    if stride > gap:
        raise ConfigError(f"--oracle_candidate_stride={stride} exceeds --oracle_max_gap={gap}: no key "
                          "placement on that grid keeps the gap")
    return stride, min(gap, int(num_frames))


def candidate_positions(num_frames, candidate_stride=1):
    """Frames that may be keys: 0, c, 2c, ... below num_frames."""
    return np.arange(0, int(num_frames), int(candidate_stride))


def needed_pairs(num_frames, candidate_stride=1, max_gap=None):
    """The (k, i) pairs the programme reads: k on the candidate grid, i in (k, k + G)."""
    stride, gap = _grid(num_frames, candidate_stride, max_gap)
    return [(int(k), i) for k in candidate_positions(num_frames, stride)
            for i in range(int(k) + 1, min(int(k) + gap, int(num_frames)))]


def min_keys(num_frames, candidate_stride=1, max_gap=None):
    """The fewest keys a placement on the grid can have: keys as far apart as the gap allows."""
    stride, gap = _grid(num_frames, candidate_stride, max_gap)
    step = (gap // stride) * stride
    return 1 if num_frames <= gap else 1 + int(math.ceil((num_frames - gap) / float(step)))


def prefetch(cache, pairs, block=None, progress=None):
    """Computes the pairs `cache` lacks in batched `prefetch_pairs` calls; returns how many were new."""
    has_pair = getattr(cache, "has_pair", None)
    missing = [p for p in pairs if has_pair is None or not has_pair(*p)]
    block = block or 16 * int(getattr(cache, "batch_size", 8))
    for start in range(0, len(missing), block):
        cache.prefetch_pairs(missing[start:start + block])
        if progress is not None:
            progress(min(start + block, len(missing)) - start)
    return len(missing)


def _frame_value(entry, i):
    value = entry.miou
    if value is None or not math.isfinite(value):
        raise DataError(f"oracle: frame {i} has no label (its mIoU is {value}); the oracle needs labelled videos")
    return float(value)


class VideoTable:
    """One video's frame values on one candidate grid (the programme's input), read from a cache
    whose needed pairs are computed (`needed_pairs`, `prefetch`)."""

    def __init__(self, cache, candidate_stride=1, max_gap=None):
        self.num_frames = int(cache.num_frames)
        self.stride, self.max_gap = _grid(self.num_frames, candidate_stride, max_gap)
        self.positions = candidate_positions(self.num_frames, self.stride)
        self.steps = self.max_gap // self.stride   # most candidates between consecutive keys
        self.cum = []                              # cum[a][d]: value of frames p_a .. p_a + d
        for k in self.positions:
            k = int(k)
            end = min(k + self.max_gap, self.num_frames)
            values = [_frame_value(cache.key(k), k)] + [_frame_value(cache.pair(k, i), i) for i in range(k + 1, end)]
            self.cum.append(np.cumsum(values))

    def seg(self, a, end):
        """Value of frames p_a .. end - 1 from the key at candidate a."""
        return float(self.cum[a][end - int(self.positions[a]) - 1])

    def _seg_into(self, b):
        """(candidates a that may precede a key at candidate b, seg(a, p_b) for each)."""
        a = np.arange(max(0, b - self.steps), b)
        return a, np.array([self.seg(j, int(self.positions[b])) for j in a])

    def _last(self):
        """(candidates that may be the last key, seg(a, T) for each)."""
        a = np.array([j for j, p in enumerate(self.positions) if self.num_frames - p <= self.max_gap])
        return a, np.array([self.seg(j, self.num_frames) for j in a])

    def value(self, keys):
        """Objective of a placement (frame indices, 0 first); ValueError when it breaks the grid/gap."""
        keys = sorted(int(k) for k in keys)
        index = {int(p): j for j, p in enumerate(self.positions)}
        if not keys or keys[0] != 0 or any(k not in index for k in keys):
            raise ValueError(f"keys {keys}: must start at 0 and lie on the stride-{self.stride} grid")
        ends = keys[1:] + [self.num_frames]
        if any(e - k > self.max_gap for k, e in zip(keys, ends)):
            raise ValueError(f"keys {keys}: a gap exceeds {self.max_gap}")
        return sum(self.seg(index[k], e) for k, e in zip(keys, ends))


# -- the exact budgeted programme -------------------------------------------------------------------
def budget_dp(table, max_keys=None):
    """Budget(values, back, last): the best objective of `table` for every key count 1..max_keys."""
    m = len(table.positions)
    n_max = m if max_keys is None else max(1, min(m, int(max_keys)))
    best = np.full((m, n_max), -np.inf)      # best[b, n]: n keys before a key at candidate b
    best[0, 0] = 0.0
    back = np.zeros((m, n_max), np.int32)
    columns = np.arange(n_max - 1)
    for b in range(1, m):
        a, seg = table._seg_into(b)
        options = best[a, :-1] + seg[:, None]
        pick = options.argmax(axis=0)
        best[b, 1:] = options[pick, columns]
        back[b, 1:] = a[pick]
    a, seg = table._last()
    options = best[a, :] + seg[:, None]       # row n - 1 keys before the last key a: n keys in all
    values = np.full(n_max + 1, -np.inf)
    last = np.zeros(n_max + 1, np.int64)
    values[1:] = options.max(axis=0)
    last[1:] = a[options.argmax(axis=0)]
    return Budget(values, back, last)


def budget_keys(table, budget, n):
    """The key frames of the best placement with n keys (budget_dp)."""
    if not 0 < n < len(budget.values) or not np.isfinite(budget.values[n]):
        raise ValueError(f"no placement with {n} keys on this grid")
    a, chain = int(budget.last[n]), []
    chain.append(a)
    for count in range(n - 1, 0, -1):
        a = int(budget.back[a, count])
        chain.append(a)
    assert chain[-1] == 0, chain
    return sorted(int(table.positions[j]) for j in chain)


def combine(curves, total):
    """Keys per video maximising sum_v curves[v][n_v] with sum n_v = total (max-plus convolution),
    or None when no split is feasible. curves: per video, values indexed by key count."""
    total = int(total)
    acc = np.full(total + 1, -np.inf)
    first = np.asarray(curves[0], float)[:total + 1]
    acc[:len(first)] = first
    choices = []
    for curve in curves[1:]:
        curve = np.asarray(curve, float)[:total + 1]
        merged, choice = np.full(total + 1, -np.inf), np.zeros(total + 1, np.int64)
        for n in np.flatnonzero(np.isfinite(curve)):
            options = acc[:total + 1 - n] + curve[n]
            better = options > merged[n:]
            merged[n:][better] = options[better]
            choice[n:][better] = n
        acc = merged
        choices.append(choice)
    if not np.isfinite(acc[total]):
        return None
    counts, left = [], total
    for choice in reversed(choices):
        counts.append(int(choice[left]))
        left -= counts[-1]
    return [left] + counts[::-1]


def feasible_keys(budget):
    """(fewest, most) key counts with a finite value."""
    finite = np.flatnonzero(np.isfinite(budget.values))
    return int(finite[0]), int(finite[-1])


def oracle_placement(tables, total_keys):
    """(keys per video, objective): the best placement over all videos with `total_keys` keys in all
    (exact); ValueError when the grids cannot hold that many or that few."""
    cap = int(total_keys) - (len(tables) - 1)     # every other video holds at least its frame 0
    if cap < 1:
        raise ValueError(f"{total_keys} keys for {len(tables)} videos: every video needs its frame 0")
    budgets = [budget_dp(t, cap) for t in tables]
    counts = combine([b.values for b in budgets], total_keys)
    if counts is None:
        raise ValueError(f"no placement with {total_keys} keys on these grids")
    keys = [budget_keys(t, b, n) for t, b, n in zip(tables, budgets, counts)]
    return keys, float(sum(b.values[n] for b, n in zip(budgets, counts)))


# -- the Lagrangian form ----------------------------------------------------------------------------
def _lagrangian_video(table, lam, fewer_keys):
    m = len(table.positions)
    best, count, back = np.full(m, -np.inf), np.zeros(m, np.int64), np.zeros(m, np.int64)
    best[0] = 0.0
    sign = 1 if fewer_keys else -1

    def pick(a, options):
        top = options.max()
        tied = np.flatnonzero(options >= top - TIE)
        return tied[np.argmin(sign * count[a[tied]])]   # first of the tied with the fewest (most) keys

    for b in range(1, m):
        a, seg = table._seg_into(b)
        options = best[a] + seg - lam
        j = pick(a, options)
        best[b], count[b], back[b] = options[j], count[a[j]] + 1, a[j]
    a, seg = table._last()
    j = pick(a, best[a] + seg - lam)
    chain = [int(a[j])]
    while chain[-1] != 0:
        chain.append(int(back[chain[-1]]))
    keys = sorted(int(table.positions[c]) for c in chain)
    return keys, table.value(keys)


def lagrangian_placement(tables, lam, fewer_keys=True):
    """(keys per video, objective) maximising objective - lam * keys; ties go to fewer (more) keys."""
    runs = [_lagrangian_video(t, lam, fewer_keys) for t in tables]
    return [k for k, _ in runs], float(sum(v for _, v in runs))


def trace_lagrangian(tables, target_keys, iterations=60):
    """For each total key count: bisect lambda. Returns [{"target", "keys", "lam", "placement",
    "objective", "reached"}]; `reached` is False for a count off the concave hull of V (the nearest
    count the bisection ends at is returned)."""
    span = float(sum(t.num_frames for t in tables)) + 1.0   # a key changes the objective by < span
    out = []
    for target in target_keys:
        lo, hi = -span, span          # lo: every candidate a key; hi: the fewest keys
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            keys, _ = lagrangian_placement(tables, mid, fewer_keys=True)
            if sum(map(len, keys)) > target:
                lo = mid
            else:
                hi = mid
        options = [lagrangian_placement(tables, hi, fewer_keys=f) + (hi,) for f in (True, False)]
        options.append(lagrangian_placement(tables, lo, fewer_keys=True) + (lo,))
        keys, objective, lam = min(options, key=lambda o: abs(sum(map(len, o[0])) - target))
        count = sum(map(len, keys))
        out.append(dict(target=int(target), keys=count, lam=lam, placement=keys, objective=objective,
                        reached=count == target))
    return out


# -- the oracle curve -------------------------------------------------------------------------------
def grid_for(target_aki, longest, max_gap=None, candidate_stride=None, pairs_per_frame=4, gap_factor=2.0):
    """(candidate_stride, max_gap) for one target AKI: the given ones, else G = ceil(gap_factor *
    target) (within the longest video) and c = ceil(G / pairs_per_frame)."""
    gap = int(max_gap) if max_gap else max(2, int(math.ceil(gap_factor * float(target_aki))))
    gap = min(gap, int(longest))
    if pairs_per_frame < 1:
        raise ConfigError(f"--oracle_pairs_per_frame={pairs_per_frame}: must be at least 1")
    stride = int(candidate_stride) if candidate_stride else max(1, int(math.ceil(gap / float(pairs_per_frame))))
    return stride, gap


def placement_point(caches, keys):
    """(dataset mIoU in percent, AKI) of a placement: one confusion matrix over every frame."""
    confusion = None
    for cache, video_keys in zip(caches, keys):
        ends = list(video_keys[1:]) + [cache.num_frames]
        for k, end in zip(video_keys, ends):
            entries = [cache.key(k)] + [cache.pair(k, i) for i in range(k + 1, end)]
            for entry in entries:
                confusion = entry.confusion.astype(np.int64) if confusion is None else confusion + entry.confusion
    flags = [metrics.key_flags(k, c.num_frames) for k, c in zip(keys, caches)]
    return 100.0 * metrics.mean_iou(confusion), metrics.aki(flags)


def oracle_curve(caches, target_akis, max_gap=None, candidate_stride=None, pairs_per_frame=4, gap_factor=2.0,
                 tolerance=0.1, verbose=False, log=None):
    """`curves["oracle"]`: one point per target AKI. Returns (points, placements): points are
    {"aki", "miou", "fps": None, "threshold": key count, "target_aki", "calibrated", "keys",
    "objective", "max_gap", "candidate_stride", "pairs"}; placements {target: key frames per video}.

    caches: the test videos' VideoCaches (labelled). max_gap / candidate_stride: one grid for every
    target; None sizes them per target (`grid_for`). `calibrated` is False where the grid cannot hold
    round(frames / target) keys and the nearest feasible count misses the +-tolerance band.
    """
    frames = [int(c.num_frames) for c in caches]
    total = sum(frames)
    points, placements = [], {}
    for target in target_akis:
        stride, gap = grid_for(target, max(frames), max_gap, candidate_stride, pairs_per_frame, gap_factor)
        grids = [(min(stride, gap, n), min(gap, n)) for n in frames]    # a short video: within its length
        pairs = [needed_pairs(n, c, g) for n, (c, g) in zip(frames, grids)]
        bar = None
        if verbose:
            import keras
            bar = keras.utils.Progbar(sum(map(len, pairs)) or 1, unit_name="pair")
        done = [0]

        def progress(n, bar=bar):
            done[0] += n
            if bar is not None:
                bar.update(done[0])
        new = sum(prefetch(cache, p, progress=progress) for cache, p in zip(caches, pairs))
        tables = [VideoTable(cache, c, g) for cache, (c, g) in zip(caches, grids)]
        keys_wanted = int(round(total / float(target)))
        # a video holds at most keys_wanted keys, and at least its grid's fewest: the table's rows
        budgets = [budget_dp(t, max(keys_wanted, min_keys(n, c, g))) for t, n, (c, g) in zip(tables, frames, grids)]
        spans = [feasible_keys(b) for b in budgets]
        keys_count = min(max(keys_wanted, sum(s[0] for s in spans)), sum(s[1] for s in spans))
        counts = combine([b.values for b in budgets], keys_count)
        keys = [budget_keys(t, b, n) for t, b, n in zip(tables, budgets, counts)]
        objective = float(sum(b.values[n] for b, n in zip(budgets, counts)))
        miou, aki = placement_point(caches, keys)
        points.append(dict(aki=aki, miou=miou, fps=None, threshold=float(keys_count), target_aki=float(target),
                           calibrated=in_band(aki, target, tolerance), keys=keys_count,
                           objective=100.0 * objective / total, max_gap=gap, candidate_stride=stride,
                           pairs=int(sum(map(len, pairs)))))
        placements[float(target)] = keys
        if log:
            log(f"  oracle AKI {target:g}: {keys_count} keys (stride {stride}, max gap {gap}), AKI {aki:.2f}, "
                f"mIoU {miou:.2f}; {sum(map(len, pairs))} pairs, {new} new")
    return points, placements
