"""How sure each leaderboard number is, and which gaps between methods are real.

A row's metric is the mean over its seeds with a 95 % Student-t interval; a row with one
seed has no seed interval, so it shows its run's bootstrap interval over test items (narrower:
it ignores training noise, and says so). Each method is compared with a reference method
(`lora` by default) *paired*: seed s of one against seed s of the other (a paired t-test over
seeds), or, with one seed, the same resampled test items for both (a paired bootstrap).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from strcvit_bench.evaluation.uncertainty import (
    CONFIDENCE,
    paired_bootstrap,
    paired_t_test,
    resample_indices,
    resampled_matrices,
    separated,
    t_interval,
)

COMPARED = [("final_average_accuracy", "final avg"), ("mean_average_accuracy", "mean avg"),
            ("forgetting", "forgetting")]
SEEDS, ITEMS = "seeds (t)", "test items (bootstrap)"


@dataclass
class Estimate:
    mean: float | None
    lo: float | None
    hi: float | None
    n: int
    basis: str  # SEEDS, ITEMS, or "" (no interval)

    @property
    def half(self) -> float | None:
        return None if self.lo is None or self.hi is None else (self.hi - self.lo) / 2

    def text(self) -> str:
        if self.mean is None:
            return "–"
        if self.basis == SEEDS:
            return f"{self.mean:.2f} ± {self.half:.2f}"
        if self.basis == ITEMS:
            return f"{self.mean:.2f} [{self.lo:.1f}, {self.hi:.1f}]"
        return f"{self.mean:.2f}"


def estimate(runs: list[dict[str, Any]], metric: str) -> Estimate:
    vals = [r["metrics"].get(metric) for r in runs]
    vals = [v for v in vals if v is not None]
    if not vals:
        return Estimate(None, None, None, 0, "")
    mean, half = t_interval(vals)
    if half is not None:
        return Estimate(mean, mean - half, mean + half, len(vals), SEEDS)
    ci = (runs[0].get("uncertainty") or {}).get("metrics_ci95", {}).get(metric)
    if ci:
        return Estimate(mean, ci[0], ci[1], 1, ITEMS)
    return Estimate(mean, None, None, 1, "")


def _items(run: dict[str, Any]) -> tuple[list, list | None, str | None] | None:
    items = run.get("item_scores") or {}
    if not items.get("chunks"):
        return None
    return items["chunks"], items.get("base"), items.get("test_ids_sha256")


def paired(runs: list[dict[str, Any]], reference: list[dict[str, Any]], seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per compared metric: the paired difference (method − reference), its CI and p-value."""
    ref = {r["seed"]: r for r in reference}
    pairs = [(r, ref[r["seed"]]) for r in sorted(runs, key=lambda r: r["seed"]) if r["seed"] in ref]
    out: dict[str, dict[str, Any]] = {}
    if len(pairs) >= 2:
        for key, _ in COMPARED:
            a = [p[0]["metrics"].get(key) for p in pairs]
            b = [p[1]["metrics"].get(key) for p in pairs]
            if all(v is not None for v in a + b):
                out[key] = paired_t_test(a, b)
    elif len(pairs) == 1:
        ia, ib = _items(pairs[0][0]), _items(pairs[0][1])
        if ia and ib and ia[2] == ib[2]:
            first = [t["first_seen"] for t in pairs[0][0]["tasks"]]
            stats = paired_bootstrap(ia[0], ib[0], first, ia[1], ib[1], seed=seed)
            out = {k: stats[k] for k, _ in COMPARED if k in stats}
    for value in out.values():
        value["separated"] = separated(value["ci95"])
    return out


def seen_average(R: list[list[float | None]], first_seen: list[int | None]) -> list[float | None]:
    """After each chunk, the mean accuracy over the tasks seen so far (the paper's main curve)."""
    out = []
    for t, row in enumerate(R):
        vals = [row[j] for j, s in enumerate(first_seen) if s is not None and s <= t and row[j] is not None]
        out.append(float(np.mean(vals)) if vals else None)
    return out


def average_curve(runs: list[dict[str, Any]], resamples: int = 1000, seed: int = 0
                  ) -> tuple[list[float], list[float], list[float]] | None:
    """Mean seen-task average after each chunk with a 95 % band: t over seeds, or with one
    seed a bootstrap over test items."""
    if not runs:
        return None
    first = [t["first_seen"] for t in runs[0]["tasks"]]
    curves = [seen_average(r["accuracy_matrix"], first) for r in runs]
    T = min(len(c) for c in curves)
    if T == 0 or any(v is None for c in curves for v in c[:T]):
        return None
    if len(runs) >= 2:
        stats = [t_interval([c[t] for c in curves]) for t in range(T)]
        mean = [m for m, _ in stats]
        return mean, [m - h for m, h in stats], [m + h for m, h in stats]
    items = _items(runs[0])
    mean = curves[0][:T]
    if not items:
        return mean, mean, mean
    idx = resample_indices([len(t) for t in items[0][0]], resamples, seed)
    mats = resampled_matrices(items[0][:T], idx)  # (B, T, J)
    seen = np.array([[s is not None and s <= t for s in first] for t in range(T)])
    avg = np.where(seen[None], mats, np.nan)
    avg = np.nanmean(avg, axis=2)  # (B, T)
    lo, hi = np.percentile(avg, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)], axis=0)
    return mean, [float(v) for v in lo], [float(v) for v in hi]
