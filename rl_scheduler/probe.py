"""Probes of a trained key policy (issue 13 diagnostics; reported in report.md and results.json).

- `policy_probe`: P(key) on held-out states as LKD and KAR vary, and how much it varies across
  Conv6 inputs at a fixed LKD (a state-independent policy has spread ~0).
- `reward_probe`: how well the deviation features predict the per-pair reward (the loss q(k, i)
  a key at i removes, Eq. 1): R^2 of a ridge regression fitted on training pairs and scored on
  held-out pairs. It bounds what any policy reading Conv6 can know about where keys pay.
"""
import numpy as np

from rl_scheduler.history import lkd_feature
from rl_scheduler.policy import compiled_forward, expert_size_of

PROBE_LKDS = (1, 2, 3, 5, 8, 12, 18, 25, 35, 50, 70, 100, 150, 200)


def sample_pairs(caches, count, max_gap, rng):
    """`count` random (cache index, k, i) with 1 <= i - k <= max_gap."""
    out = []
    for _ in range(count):
        c = int(rng.integers(len(caches)))
        frames = caches[c].num_frames
        gap = int(rng.integers(1, min(max_gap, frames - 1) + 1))
        k = int(rng.integers(frames - gap))
        out.append((c, k, k + gap))
    return out


def pair_features(caches, pairs, tap):
    return np.concatenate([getattr(caches[c].pair(k, i), tap) for c, k, i in pairs]).astype(np.float32)


def policy_probe(policy, caches, history_options, tap, kar_limit, samples=48, max_gap=60, seed=0,
                 lkds=PROBE_LKDS):
    """P(key) of `policy` over Conv6 taps of `samples` held-out pairs.

    Returns dict lkd, p_key_mean / p_key_std / p_key_p10 / p_key_p90 (over the taps, KAR = 0) per
    LKD, kar_fraction and p_key_by_kar (mean P(key) at LKD = round(1 / eta) for KAR = fraction x eta),
    and spread = the mean over LKD of the P(key) standard deviation across taps. A policy with the
    motion input (expert_size 3) is probed at motion 0, and motion_change / p_key_by_motion give its
    mean P(key) at that LKD and KAR = eta / 2 for motion inputs of -1..3 training std.
    """
    rng = np.random.default_rng([seed, 3])
    deviation = pair_features(caches, sample_pairs(caches, samples, max_gap, rng), tap)
    forward = compiled_forward(policy)
    window = history_options["window"]
    kar_scale, lkd_input, lkd_scale = (history_options["kar_scale"], history_options["lkd_input"],
                                       history_options["lkd_scale"])

    motion = expert_size_of(policy) == 3

    def p_key(lkd, kar, change=0.0):   # change: the motion input, in its training std units
        row = [kar * kar_scale, float(lkd_feature(lkd, lkd_input, lkd_scale, window))] + ([change] if motion else [])
        expert = np.tile([row], (len(deviation), 1)).astype(np.float32)
        return forward(deviation, expert)[:, 1]

    table = np.stack([p_key(lkd, 0.0) for lkd in lkds])              # (lkds, samples)
    fractions = (0.0, 0.5, 1.0, 1.5)
    budget_lkd = max(1, int(round(1.0 / kar_limit)))
    by_kar = [float(p_key(budget_lkd, f * kar_limit).mean()) for f in fractions]
    changes = (-1.0, 0.0, 1.0, 2.0, 3.0) if motion else ()
    by_motion = [float(p_key(budget_lkd, 0.5 * kar_limit, c).mean()) for c in changes]
    return dict(lkd=list(lkds), p_key_mean=table.mean(1).tolist(), p_key_std=table.std(1).tolist(),
                p_key_p10=np.percentile(table, 10, axis=1).tolist(),
                p_key_p90=np.percentile(table, 90, axis=1).tolist(),
                kar_fraction=list(fractions), kar_probe_lkd=budget_lkd, p_key_by_kar=by_kar,
                motion_change=list(changes), p_key_by_motion=by_motion,
                spread=float(table.std(1).mean()), samples=int(len(deviation)))


def pair_loss(cache, k, i):
    """q(k, i) of Eq. 1: N's mIoU on frame i minus the mIoU propagated from key k (fraction)."""
    return cache.key(i).miou - cache.pair(k, i).miou


RIDGE_GRID = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5)


def select_ridge(x, y, grid=RIDGE_GRID):
    """The ridge penalty of `grid` with the best R^2 on the last third of the training pairs
    (fitted on the first two thirds): the probe's regularisation is chosen on training data only."""
    cut = (2 * len(y)) // 3
    scores = [ridge_r2(x[:cut], y[:cut], x[cut:], y[cut:], ridge) for ridge in grid]
    scores = [-np.inf if v is None else v for v in scores]
    return grid[int(np.argmax(scores))]


def reward_probe(train_caches, test_caches, tap, samples=600, max_gap=60, seed=0):
    """R^2 on held-out pairs of a ridge regression to q(k, i) (Eq. 1's key reward) from the flattened
    tap; from the gap alone (log(i - k)), which the LKD input already carries; and from the pair's mean
    flow magnitude with the gap (the motion the flow net reports, for comparison). Each probe's ridge
    penalty is chosen on the training pairs (`select_ridge`).

    Returns dict r2_features, r2_gap, r2_features_and_gap, r2_flow_magnitude_and_gap, ridge (per
    probe), train_pairs, test_pairs.
    """
    rng = np.random.default_rng([seed, 5])

    def data(caches, count):
        pairs = sample_pairs(caches, count, max_gap, rng)
        x = pair_features(caches, pairs, tap).reshape(len(pairs), -1)
        gap = np.log([i - k for _, k, i in pairs])[:, None]
        flow = np.array([[caches[c].pair(k, i).flow_magnitude] for c, k, i in pairs])
        y = np.array([pair_loss(caches[c], k, i) for c, k, i in pairs])
        return x, gap, flow, y

    x_train, g_train, f_train, y_train = data(train_caches, samples)
    x_test, g_test, f_test, y_test = data(test_caches, samples // 2)
    scores, ridges = {}, {}
    for name, (a, b) in dict(features=(x_train, x_test), gap=(g_train, g_test),
                             features_and_gap=(np.hstack([x_train, g_train]), np.hstack([x_test, g_test])),
                             flow_magnitude_and_gap=(np.hstack([f_train, g_train]),
                                                     np.hstack([f_test, g_test]))).items():
        ridges[name] = select_ridge(a, y_train)
        scores[f"r2_{name}"] = ridge_r2(a, y_train, b, y_test, ridges[name])
    return dict(scores, ridge=ridges, train_pairs=len(y_train), test_pairs=len(y_test))


def ridge_r2(x_train, y_train, x_test, y_test, ridge=1.0):
    """Held-out R^2 of ridge regression on standardised inputs (closed form)."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    a, b = (x_train - mean) / std, (x_test - mean) / std
    a1, b1 = np.hstack([a, np.ones((len(a), 1))]), np.hstack([b, np.ones((len(b), 1))])
    penalty = ridge * np.eye(a1.shape[1])
    penalty[-1, -1] = 0.0                                            # the intercept is not shrunk
    w = np.linalg.solve(a1.T @ a1 + penalty, a1.T @ y_train)
    residual = ((y_test - b1 @ w) ** 2).sum()
    total = ((y_test - y_test.mean()) ** 2).sum()
    return float(1.0 - residual / total) if total > 0 else None
