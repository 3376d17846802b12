"""Continual-learning metrics as pure functions of the accuracy matrix (docs/metrics.md).

R[t][j] is the score of task j after training on chunk t (0-based), None where not scored.
`first_seen[j]` is the first chunk holding task j (None if it never appears); it comes from
the stream's manifest, so the metrics stay right when tasks arrive late or recur. Scores are
whatever unit R is in (the runner records percent).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Matrix = Sequence[Sequence[float | None]]


def _ok(x: float | None) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _max(values: list[float]) -> float:
    """Python's `max`, also where the entries are numpy arrays: the bootstrap evaluates these
    formulas on all its resamples at once, every entry of R an array over the resamples
    (evaluation/uncertainty.py). Elementwise it keeps what `max` keeps (the first, unless a later
    one is greater), and `_mean` adds in `sum`'s order, so each resample gets the same bits as
    the formula applied to it alone."""
    best = values[0]
    for v in values[1:]:
        if isinstance(v, np.ndarray) or isinstance(best, np.ndarray):
            best = np.where(v > best, v, best)
        elif v > best:
            best = v
    return best


def first_seen_from_counts(task_names: Sequence[str], chunk_counts: Sequence[dict[str, int]]) -> list[int | None]:
    out: list[int | None] = []
    for name in task_names:
        out.append(next((t for t, c in enumerate(chunk_counts) if c.get(name, 0) > 0), None))
    return out


def final_average_accuracy(R: Matrix, first_seen: Sequence[int | None]) -> float | None:
    """"Last": mean over the tasks seen by the end of R[T][j]."""
    T = len(R) - 1
    return _mean([R[T][j] for j, s in enumerate(first_seen) if s is not None and s <= T and _ok(R[T][j])])


def mean_average_accuracy(R: Matrix, first_seen: Sequence[int | None]) -> float | None:
    """"Avg": mean over chunks t of the mean over tasks seen by t of R[t][j]."""
    per_t = []
    for t, row in enumerate(R):
        m = _mean([row[j] for j, s in enumerate(first_seen) if s is not None and s <= t and _ok(row[j])])
        if m is not None:
            per_t.append(m)
    return _mean(per_t)


def backward_transfer(R: Matrix, first_seen: Sequence[int | None]) -> float | None:
    """BWT: mean over tasks first seen before the end of R[T][j] − R[t_j][j]."""
    T = len(R) - 1
    return _mean([R[T][j] - R[s][j] for j, s in enumerate(first_seen)
                  if s is not None and s < T and _ok(R[T][j]) and _ok(R[s][j])])


def forgetting(R: Matrix, first_seen: Sequence[int | None]) -> float | None:
    """Max-style forgetting (Chaudhry): mean_j max_{t_j ≤ t < T} R[t][j] − R[T][j]."""
    T = len(R) - 1
    vals = []
    for j, s in enumerate(first_seen):
        if s is None or s >= T or not _ok(R[T][j]):
            continue
        past = [R[t][j] for t in range(s, T) if _ok(R[t][j])]
        if past:
            vals.append(_max(past) - R[T][j])
    return _mean(vals)


def plasticity(R: Matrix, first_seen: Sequence[int | None]) -> float | None:
    """MFT: mean_j R[t_j][j], how well each task is learned when it first arrives."""
    return _mean([R[s][j] for j, s in enumerate(first_seen) if s is not None and s < len(R) and _ok(R[s][j])])


def forward_transfer(R: Matrix, first_seen: Sequence[int | None], base: Sequence[float | None]) -> float | None:
    """FWT: mean over tasks first seen at t_j ≥ 1 of R[t_j − 1][j] − R_0[j] (R_0: the untrained base)."""
    return _mean([R[s - 1][j] - base[j] for j, s in enumerate(first_seen)
                  if s is not None and 1 <= s < len(R) and _ok(R[s - 1][j]) and _ok(base[j])])


def mean_average_performance(R: Matrix) -> float | None:
    """The paper's MAP: mean over chunks of the mean over all tasks of R[t][j]."""
    return _mean([m for row in R if (m := _mean([x for x in row if _ok(x)])) is not None])


def mean_average_forgetting(R: Matrix, first_seen: Sequence[int | None]) -> float | None:
    """The paper's MAF: mean over evaluation points t > t_j of max(0, max_{t_j ≤ t' < t} R[t'][j] − R[t][j])."""
    vals = []
    for j, s in enumerate(first_seen):
        if s is None:
            continue
        for t in range(s + 1, len(R)):
            past = [R[u][j] for u in range(s, t) if _ok(R[u][j])]
            if past and _ok(R[t][j]):
                vals.append(_max([0.0, _max(past) - R[t][j]]))
    return _mean(vals)


def forgetting_matrix(R: Matrix, first_seen: Sequence[int | None]) -> list[list[float | None]]:
    """F[t][j] = max_{t_j ≤ t' < t} R[t'][j] − R[t][j] (None before the task is seen)."""
    out = []
    for t, row in enumerate(R):
        frow: list[float | None] = []
        for j, s in enumerate(first_seen):
            past = [R[u][j] for u in range(s, t) if _ok(R[u][j])] if s is not None and t > s else []
            frow.append(_max(past) - row[j] if past and _ok(row[j]) else None)
        out.append(frow)
    return out


def all_metrics(R: Matrix, first_seen: Sequence[int | None], base: Sequence[float | None]) -> dict[str, float | None]:
    if not R:
        return {}
    return {
        "final_average_accuracy": final_average_accuracy(R, first_seen),
        "mean_average_accuracy": mean_average_accuracy(R, first_seen),
        "bwt": backward_transfer(R, first_seen),
        "forgetting": forgetting(R, first_seen),
        "plasticity": plasticity(R, first_seen),
        "fwt": forward_transfer(R, first_seen, base),
        "map": mean_average_performance(R),
        "maf": mean_average_forgetting(R, first_seen),
    }
