"""How sure a number is: bootstrap over test items, t-intervals and paired tests over seeds.

Two sources of noise decide whether a gap between methods is real. The finite test set: a
task score over 150 items has a sampling error of several points, which a bootstrap over the
items measures within one run. The training run itself: seed, batch order, float rounding;
only repeated seeds measure it, with a t-interval. Comparisons are paired — the same test
items, the same seeds — because both methods see the same stream, which removes the part of
the noise they share.

Every function is pure (a seed in, numbers out), so the leaderboard can recompute any
interval from the stored per-item scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from strcvit_bench.evaluation.metrics import all_metrics

CONFIDENCE = 0.95
RESAMPLES = 1000

# item_scores[t][j]: the per-item scores (0..1) of task j's test items after chunk t
ItemScores = Sequence[Sequence[Sequence[float]]]


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def t_interval(values: Sequence[float | None], confidence: float = CONFIDENCE) -> tuple[float | None, float | None]:
    """Mean and the half-width of its Student-t confidence interval (None with fewer than 2 values)."""
    from scipy import stats

    vals = _finite(values)
    if not vals:
        return None, None
    mean = float(np.mean(vals))
    if len(vals) < 2:
        return mean, None
    sem = float(np.std(vals, ddof=1)) / math.sqrt(len(vals))
    return mean, float(stats.t.ppf(0.5 + confidence / 2, len(vals) - 1)) * sem


def paired_t_test(a: Sequence[float], b: Sequence[float], alternative: str = "two-sided",
                  confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Paired t-test of mean(a − b) over matched seeds: the difference, its CI and the p-value.

    `alternative`: "two-sided", "greater" (a − b > 0) or "less" (a − b < 0). A zero-variance
    difference gets p = 0 (or 1) when it is non-zero (or zero), as the t statistic is ±inf.
    """
    from scipy import stats

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = int(d.size)
    if n < 2:
        raise ValueError("a paired t-test needs at least two matched pairs")
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    if sd == 0.0:
        t = math.copysign(math.inf, mean) if mean else 0.0
    else:
        t = mean / (sd / math.sqrt(n))
    if alternative == "two-sided":
        p = 1.0 if t == 0 else float(2 * stats.t.sf(abs(t), n - 1))
    elif alternative == "greater":
        p = float(stats.t.sf(t, n - 1))
    elif alternative == "less":
        p = float(stats.t.cdf(t, n - 1))
    else:
        raise ValueError(f"alternative must be two-sided, greater or less, not {alternative!r}")
    return {"mean_diff": mean, "ci95": [mean - half, mean + half], "p_value": p, "n": n, "t": t,
            "test": f"paired t ({alternative}) over seeds"}


def resample_indices(sizes: Sequence[int], resamples: int, seed: int) -> list[np.ndarray]:
    """For each task, a (resamples, n_j) array of item indices drawn with replacement."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n, size=(resamples, n)) if n else np.zeros((resamples, 0), dtype=int)
            for n in sizes]


def resampled_matrices(item_scores: ItemScores, indices: list[np.ndarray]) -> np.ndarray:
    """(resamples, T, J) accuracy matrices in percent: every evaluation point reuses the same
    resampled items, as the same test items were scored after every chunk."""
    T, J = len(item_scores), len(indices)
    B = indices[0].shape[0] if indices else 0
    out = np.full((B, T, J), np.nan)
    for j, idx in enumerate(indices):
        if idx.shape[1] == 0:
            continue
        scores = np.array([item_scores[t][j] for t in range(T)], dtype=float)  # (T, n_j)
        out[:, :, j] = 100.0 * scores[:, idx].mean(-1).T                       # (B, T)
    return out


def _metric_samples(item_scores: ItemScores, base_items: Sequence[Sequence[float]] | None,
                    first_seen: Sequence[int | None], indices: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Every metric on every resample. The metric formulas run once per pattern of missing
    cells (one, unless an item score is NaN), on matrices whose entries are arrays over the
    resamples: the same arithmetic, in the same order, as one call per resample, at a
    thousandth of the Python work (it was most of a leaderboard's time)."""
    mats = resampled_matrices(item_scores, indices)
    B, T, J = mats.shape
    bases = resampled_matrices([base_items], indices)[:, 0, :] if base_items is not None else np.full((B, J), np.nan)
    missing = np.concatenate([np.isnan(mats).reshape(B, -1), np.isnan(bases)], axis=1)
    patterns, which = np.unique(missing, axis=0, return_inverse=True)
    which = which.reshape(-1)
    samples: dict[str, np.ndarray] = {}
    for p, pattern in enumerate(patterns):
        rows = np.flatnonzero(which == p)
        gone = pattern[: T * J].reshape(T, J)
        R = [[None if gone[t, j] else mats[rows, t, j] for j in range(J)] for t in range(T)]
        base = [None if pattern[T * J + j] else bases[rows, j] for j in range(J)]
        for name, value in all_metrics(R, first_seen, base).items():
            out = samples.setdefault(name, np.full(B, np.nan))
            if value is not None:
                out[rows] = value
    return samples


def _percentiles(values: np.ndarray, confidence: float) -> list[float] | None:
    vals = values[np.isfinite(values)]
    if vals.size == 0:
        return None
    lo, hi = np.percentile(vals, [50 * (1 - confidence), 50 * (1 + confidence)])
    return [float(lo), float(hi)]


def bootstrap_run(item_scores: ItemScores, first_seen: Sequence[int | None],
                  base_items: Sequence[Sequence[float]] | None = None, resamples: int = RESAMPLES, seed: int = 0,
                  confidence: float = CONFIDENCE) -> dict[str, Any]:
    """A run's percentile-bootstrap CIs over test items: each task score after each chunk, and
    every continual-learning metric (items are resampled jointly across chunks, so a metric that
    compares chunks sees the same items at each)."""
    if not item_scores:
        return {}
    sizes = [len(task) for task in item_scores[0]]
    indices = resample_indices(sizes, resamples, seed)
    mats = resampled_matrices(item_scores, indices)
    cell_ci = [[_percentiles(mats[:, t, j], confidence) for j in range(mats.shape[2])] for t in range(mats.shape[1])]
    metrics = _metric_samples(item_scores, base_items, first_seen, indices)
    return {"method": "percentile bootstrap over test items", "resamples": resamples, "seed": seed,
            "confidence": confidence, "test_items": sizes, "accuracy_matrix_ci95": cell_ci,
            "metrics_ci95": {k: _percentiles(v, confidence) for k, v in metrics.items()}}


def paired_bootstrap(items_a: ItemScores, items_b: ItemScores, first_seen: Sequence[int | None],
                     base_a: Sequence[Sequence[float]] | None = None, base_b: Sequence[Sequence[float]] | None = None,
                     resamples: int = RESAMPLES, seed: int = 0,
                     confidence: float = CONFIDENCE) -> dict[str, dict[str, Any]]:
    """Two runs scored on the same test items: for every metric, the difference a − b with its
    percentile CI and a two-sided bootstrap p-value, resampling the *same* items for both."""
    sizes = [len(task) for task in items_a[0]]
    if sizes != [len(task) for task in items_b[0]] or len(items_a) != len(items_b):
        raise ValueError("paired bootstrap: the two runs were not scored on the same test items")
    indices = resample_indices(sizes, resamples, seed)
    sa = _metric_samples(items_a, base_a, first_seen, indices)
    sb = _metric_samples(items_b, base_b, first_seen, indices)
    point_a = all_metrics(_point(items_a), first_seen, _point([base_a])[0] if base_a else [None] * len(sizes))
    point_b = all_metrics(_point(items_b), first_seen, _point([base_b])[0] if base_b else [None] * len(sizes))
    out = {}
    for name in sa:
        d = sa[name] - sb[name]
        d = d[np.isfinite(d)]
        if d.size == 0 or point_a.get(name) is None or point_b.get(name) is None:
            continue
        below, above = (int((d <= 0).sum()) + 1) / (d.size + 1), (int((d >= 0).sum()) + 1) / (d.size + 1)
        out[name] = {"mean_diff": float(point_a[name] - point_b[name]), "ci95": _percentiles(d, confidence),
                     "p_value": min(1.0, 2 * min(below, above)), "n": 1,
                     "test": "paired bootstrap over test items (one seed)"}
    return out


def _point(item_scores: ItemScores) -> list[list[float | None]]:
    return [[100.0 * float(np.mean(task)) if len(task) else None for task in row] for row in item_scores]


def separated(ci: Sequence[float] | None) -> bool:
    """A difference is claimed only when its CI excludes 0."""
    return ci is not None and (ci[0] > 0 or ci[1] < 0)


