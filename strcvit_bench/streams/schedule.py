"""From a schedule to exact per-chunk counts.

Shares are turned into integers with the largest-remainder (Hamilton) method, so every
chunk has exactly `chunk_size` rows and each task gets its share rounded as fairly as
possible; ties go to the earlier task in the spec, which keeps the result deterministic.
"""

from __future__ import annotations

import math

from strcvit_bench.errors import SpecError
from strcvit_bench.streams.spec import StreamSpec, TaskSchedule


def profile_weight(ts: TaskSchedule, t: int, num_chunks: int) -> float:
    """The unnormalised weight of a task in chunk `t` (0 outside its [start, end] window)."""
    end = num_chunks - 1 if ts.end is None else min(ts.end, num_chunks - 1)
    if t < ts.start or t > end:
        return 0.0
    span = end - ts.start + 1
    if ts.profile == "constant":
        return ts.weight
    if ts.profile == "ramp_up":
        return ts.weight * (t - ts.start + 1) / span
    if ts.profile == "ramp_down":
        return ts.weight * (end - t + 1) / span
    if ts.profile == "burst":
        peak = ts.peak if ts.peak is not None else (ts.start + end) / 2
        return ts.weight * math.exp(-(((t - peak) / ts.width) ** 2))
    if ts.profile == "periodic":
        return ts.weight if (t - ts.start) % ts.period < ts.duty else 0.0
    raise ValueError(ts.profile)


def weights_matrix(spec: StreamSpec) -> list[list[float]]:
    names = [t.name for t in spec.tasks]
    if spec.schedule.table is not None:
        return [[float(row.get(n, 0.0)) for n in names] for row in spec.schedule.table]
    assert spec.schedule.tasks is not None
    return [
        [profile_weight(spec.schedule.tasks[n], t, spec.num_chunks) if n in spec.schedule.tasks else 0.0
         for n in names]
        for t in range(spec.num_chunks)
    ]


def largest_remainder(weights: list[float], total: int) -> list[int]:
    s = sum(weights)
    if s <= 0:
        raise ValueError("all weights are zero")
    quotas = [w / s * total for w in weights]
    counts = [math.floor(q + 1e-9) for q in quotas]
    left = total - sum(counts)
    order = sorted(range(len(weights)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[:left]:
        counts[i] += 1
    return counts


def chunk_counts(spec: StreamSpec) -> list[dict[str, int]]:
    """Per chunk, how many rows of each task (tasks with 0 rows omitted)."""
    names = [t.name for t in spec.tasks]
    out = []
    for t, row in enumerate(weights_matrix(spec)):
        if sum(row) <= 0:
            raise SpecError(f"spec {spec.name!r}: chunk {t} has no active task (every task's share is 0 "
                            f"there); extend a task's start/end window or add a table row with a weight > 0")
        counts = largest_remainder(row, spec.chunk_size)
        out.append({n: c for n, c in zip(names, counts, strict=True) if c > 0})
    return out
