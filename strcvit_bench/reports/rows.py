"""Leaderboard rows: runs grouped by (stream fingerprint, model, method label), seeds aggregated,
and the cells every renderer shows (markdown, CSV and the HTML page format the same rows)."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from typing import Any

from strcvit_bench.reports.comparison import COMPARED, ITEMS, SEEDS, Estimate, estimate, paired

METRIC_COLUMNS = [
    ("final_average_accuracy", "final avg"),
    ("mean_average_accuracy", "mean avg"),
    ("bwt", "BWT"),
    ("forgetting", "forgetting"),
    ("plasticity", "plasticity"),
    ("fwt", "FWT"),
    ("map", "MAP"),
    ("maf", "MAF"),
]


REFERENCE = "lora"
UPPER_BOUND = "joint"


HOW_TO_READ = (
    "Accuracies in percent. A row with n ≥ 2 seeds shows mean ± the half-width of its 95 % "
    "t-interval over seeds; a row with one seed shows its 95 % bootstrap interval over test items "
    "in brackets (test-set noise only: one seed says nothing about training noise). Differences "
    "against the reference are paired (same seeds, or the same test items); one whose 95 % interval "
    "covers 0 is marked *not separated* and is no evidence of a difference. `joint` is the i.i.d. "
    "upper bound on the same budget, not a stream method. Metric definitions: docs/metrics.md.")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:60] or "x"


def method_label(results: dict[str, Any]) -> str:
    """The method name plus its non-default options, so ablations get their own row, and the
    scoring profile when it is not ours: numbers scored by other rules never share a row. Runs
    record the method's label; for runs that predate the field it is derived (importing the method)."""
    if isinstance(results.get("method_label"), str):
        label = results["method_label"]
    else:
        from strcvit_bench.methods.registry import METHODS
        from strcvit_bench.methods.registry import method_label as derive

        name = results["method"]
        label = derive(name, results.get("method_options", {})) if name in METHODS else name
    scoring = (results.get("config") or {}).get("scoring", "default")
    return label if scoring == "default" else f"{label} ({scoring} scoring)"


@dataclass
class Group:
    stream: str
    fingerprint: str
    model: str
    method: str
    complete: list[dict[str, Any]] = field(default_factory=list)
    incomplete: list[dict[str, Any]] = field(default_factory=list)
    routing: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{slug(self.stream)}__{slug(self.model)}__{slug(self.method)}"

    def metric(self, name: str) -> tuple[float | None, float | None]:
        """Mean and standard deviation over seeds (std None with one seed: it is unknown, not 0)."""
        vals = [r["metrics"].get(name) for r in self.complete]
        vals = [v for v in vals if v is not None]
        if not vals:
            return None, None
        return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)

    def estimate(self, name: str) -> Estimate:
        return estimate(self.complete, name)

    def mean_matrix(self) -> list[list[float | None]]:
        runs = self.complete or self.incomplete[:1]
        rows = min(len(r["accuracy_matrix"]) for r in runs)
        out = []
        for t in range(rows):
            row = []
            for j in range(len(runs[0]["tasks"])):
                vals = [r["accuracy_matrix"][t][j] for r in runs if r["accuracy_matrix"][t][j] is not None]
                row.append(statistics.fmean(vals) if vals else None)
            out.append(row)
        return out


    def parameter_curve(self) -> list[float] | None:
        """Adapter parameters after each chunk (mean over seeds): flat for fixed adapters,
        rising for methods that grow (CRAM's experts, BranchLoRA's routers)."""
        runs = self.complete or self.incomplete[:1]
        curves = [[p.get("adapter_params") for p in r.get("per_chunk", [])] for r in runs]
        if not curves or not all(curves) or any(v is None for c in curves for v in c):
            return None  # runs recorded before the curve was kept
        n = min(len(c) for c in curves)
        return [statistics.fmean(c[i] for c in curves) for i in range(n)]


def section_key(stream: str, model: str) -> str:
    return f"{slug(stream)}__{slug(model)}"


def sections(groups: list[Group]) -> dict[tuple[str, str, str], list[Group]]:
    out: dict[tuple[str, str, str], list[Group]] = {}
    for g in groups:
        out.setdefault((g.stream, g.fingerprint, g.model), []).append(g)
    return out


def comparisons(gs: list[Group], reference: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Each complete group of a section against the reference group (paired)."""
    ref = next((g for g in gs if g.method == reference and g.complete), None)
    if ref is None:
        return {}
    return {g.method: paired(g.complete, ref.complete) for g in gs if g.complete and g is not ref}


def diff_text(d: dict[str, Any] | None) -> str:
    if not d:
        return "–"
    lo, hi = d["ci95"]
    verdict = "" if d["separated"] else " (not separated)"
    return f"{d['mean_diff']:+.2f} [{lo:+.1f}, {hi:+.1f}], p={d['p_value']:.3f}{verdict}"




@dataclass
class Row:
    """One complete group as every renderer shows it."""

    method: str
    n: int
    estimates: dict[str, Estimate]
    params: int | None
    train_seconds: float


def metric_rows(gs: list[Group]) -> list[Row]:
    """The rows of a section's main table: complete groups only, in order."""
    return [Row(g.method, len(g.complete), {k: g.estimate(k) for k, _ in METRIC_COLUMNS},
                g.complete[0].get("trainable_params"),
                statistics.fmean(r["timings"]["train_seconds"] for r in g.complete))
            for g in gs if g.complete]


def diff_rows(gs: list[Group], reference: str) -> list[tuple[str, int, dict[str, dict[str, Any] | None]]]:
    """(method, n, paired difference per compared metric) against the reference group."""
    return [(method, next((v["n"] for v in d.values()), 0), {k: d.get(k) for k, _ in COMPARED})
            for method, d in comparisons(gs, reference).items()]


def ci_basis(g: Group) -> str:
    return SEEDS if len(g.complete) > 1 else ITEMS if g.complete else ""


def made_on(runs: list[dict[str, Any]]) -> list[str]:
    """Each distinct machine class and library set the runs were made on, e.g. 'AMD EPYC (AVX2),
    1 thread, torch 2.13.0+cpu, transformers 5.24.0': what a reader needs to reproduce the bits."""
    seen: dict[str, None] = {}
    for r in runs:
        hw, versions = r["env"].get("hardware", {}), r["env"].get("versions", {})
        cpu = hw.get("cuda_device") or hw.get("cpu_model") or "CPU not recorded"
        isa = "" if hw.get("cuda_device") else f" ({hw['cpu_capability']})" if hw.get("cpu_capability") else ""
        threads = hw.get("torch_threads")
        parts = [f"{cpu}{isa}"] + ([f"{threads} thread{'s' if threads != 1 else ''}"] if threads else [])
        parts += [f"{k} {versions[k]}" for k in ("torch", "transformers") if k in versions]
        seen.setdefault(", ".join(parts))
    return list(seen)
