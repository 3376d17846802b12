"""The leaderboard: runs grouped by (stream fingerprint, model, method), seeds aggregated.

`add_runs` copies each run's results.json (and routing.json) into OUT/runs/, so a committed
leaderboard is self-contained and adding runs is incremental; everything is regenerated from
that store under a file lock, with atomic writes, so two processes can add runs at once.
Runs of different streams or models never share a table; incomplete runs are listed apart,
never averaged in.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from strcvit_bench.errors import StrcvitError
from strcvit_bench.evaluation.metrics import forgetting_matrix
from strcvit_bench.io import atomic_write_bytes, atomic_write_text
from strcvit_bench.reports.comparison import COMPARED, ITEMS, SEEDS, Estimate, average_curve, estimate, paired

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


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:60] or "x"


def method_label(results: dict[str, Any]) -> str:
    """The method name plus its non-default options, so ablations get their own row."""
    from strcvit_bench.methods.registry import methods

    name = results["method"]
    cls = methods().get(name)
    if cls is None:
        return name
    defaults = cls.Options().model_dump()
    diff = {k: v for k, v in results.get("method_options", {}).items() if defaults.get(k, v) != v}
    if not diff:
        return name
    return name + "[" + ",".join(f"{k}={str(v).lower()}" for k, v in sorted(diff.items())) + "]"


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
        return f"{_slug(self.stream)}__{_slug(self.model)}__{_slug(self.method)}"

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
    return f"{_slug(stream)}__{_slug(model)}"


def store_path(out: Path, results: dict[str, Any]) -> Path:
    s = results["stream"]
    return (out / "runs" / f"{_slug(s['name'])}__{s['fingerprint'][:12]}" / _slug(results["model"])
            / f"{_slug(method_label(results))}__s{results['seed']}")


def read_results(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "results.json" if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise StrcvitError(f"{run_dir} holds no results.json; pass run directories made by `strcvit run`")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:  # truncated, not JSON, not UTF-8
        raise StrcvitError(f"{path} is not valid JSON ({exc})") from None


def validate_results(results: Any, where: Path) -> None:
    """Refuse what is not one of our results.json files before anything is copied: a bad file
    in the store would break every later update."""

    def bad(why: str) -> StrcvitError:
        return StrcvitError(f"{where} is not a strcvit results.json ({why}); pass run directories made by "
                            f"`strcvit run`")

    if not isinstance(results, dict):
        raise bad("not a JSON object")
    if results.get("schema_version") != 1:
        raise bad(f"schema_version {results.get('schema_version')!r}, expected 1")
    missing = [k for k in ("method", "model", "seed", "stream", "tasks", "accuracy_matrix", "metrics", "complete")
               if k not in results]
    if missing:
        raise bad(f"missing {', '.join(missing)}")
    stream = results["stream"]
    if not isinstance(stream, dict) or not isinstance(stream.get("fingerprint"), str) or "name" not in stream:
        raise bad("stream has no name or fingerprint")
    R, tasks = results["accuracy_matrix"], results["tasks"]
    if not isinstance(tasks, list) or not all(isinstance(t, dict) and "name" in t for t in tasks):
        raise bad("tasks is not a list of tasks")
    if not isinstance(R, list) or not R:
        raise bad("no finished chunk: the accuracy matrix is empty")
    for row in R:
        if not isinstance(row, list) or len(row) != len(tasks) or not all(
                v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in row):
            raise bad("the accuracy matrix is not a numeric chunks × tasks table")
    if not isinstance(results["metrics"], dict):
        raise bad("metrics is not an object")


def add_runs(run_dirs: list[Path], out: Path) -> list[Path]:
    """Copy runs into the leaderboard's store (replacing the same stream/model/method/seed);
    every run is validated before the first is copied."""
    loaded = []
    for run_dir in run_dirs:
        results = read_results(run_dir)
        validate_results(results, run_dir)
        loaded.append((run_dir, results))
    added = []
    for run_dir, results in loaded:
        target = store_path(out, results)
        target.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target / "results.json", json.dumps(results, indent=2, sort_keys=True) + "\n")
        routing = (run_dir if run_dir.is_dir() else run_dir.parent) / "routing.json"
        if routing.is_file():
            shutil.copyfile(routing, target / "routing.json.tmp")
            (target / "routing.json.tmp").replace(target / "routing.json")
        added.append(target)
    return added


def load_groups(out: Path) -> list[Group]:
    groups: dict[tuple[str, str, str], Group] = {}
    for path in sorted((out / "runs").glob("*/*/*/results.json")):
        r = json.loads(path.read_text())
        label = method_label(r)
        key = (r["stream"]["fingerprint"], r["model"], label)
        g = groups.setdefault(key, Group(r["stream"]["name"], r["stream"]["fingerprint"], r["model"], label))
        (g.complete if r.get("complete") else g.incomplete).append(r)
        routing = path.parent / "routing.json"
        if routing.is_file():
            g.routing[r["seed"]] = json.loads(routing.read_text())
    return sorted(groups.values(), key=lambda g: (g.stream, g.fingerprint, g.model, g.method))


REFERENCE = "lora"
UPPER_BOUND = "joint"


def comparisons(gs: list[Group], reference: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Each complete group of a section against the reference group (paired)."""
    ref = next((g for g in gs if g.method == reference and g.complete), None)
    if ref is None:
        return {}
    return {g.method: paired(g.complete, ref.complete) for g in gs if g.complete and g is not ref}


def _diff_text(d: dict[str, Any] | None) -> str:
    if not d:
        return "–"
    lo, hi = d["ci95"]
    verdict = "" if d["separated"] else " (not separated)"
    return f"{d['mean_diff']:+.2f} [{lo:+.1f}, {hi:+.1f}], p={d['p_value']:.3f}{verdict}"


def sections(groups: list[Group]) -> dict[tuple[str, str, str], list[Group]]:
    out: dict[tuple[str, str, str], list[Group]] = {}
    for g in groups:
        out.setdefault((g.stream, g.fingerprint, g.model), []).append(g)
    return out


HOW_TO_READ = (
    "Accuracies in percent. A row with n ≥ 2 seeds shows mean ± the half-width of its 95 % "
    "t-interval over seeds; a row with one seed shows its 95 % bootstrap interval over test items "
    "in brackets (test-set noise only: one seed says nothing about training noise). Differences "
    "against the reference are paired (same seeds, or the same test items); one whose 95 % interval "
    "covers 0 is marked *not separated* and is no evidence of a difference. `joint` is the i.i.d. "
    "upper bound on the same budget, not a stream method. Metric definitions: docs/metrics.md.")


def markdown(groups: list[Group], command: str, reference: str = REFERENCE) -> str:
    lines = ["# strcvit-bench leaderboard", "", HOW_TO_READ, "", f"Produced by `{command}`.", ""]
    for (stream, fp, model), gs in sections(groups).items():
        lines += [f"## stream `{stream}` (fingerprint `{fp[:12]}`), model `{model}`", ""]
        header = ["method", "n"] + [label for _, label in METRIC_COLUMNS] + ["trainable params", "train time (s)"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for g in gs:
            if not g.complete:
                continue
            n = len(g.complete)
            cells = [g.method, str(n)] + [g.estimate(k).text() for k, _ in METRIC_COLUMNS]
            params = g.complete[0].get("trainable_params")
            train = statistics.fmean(r["timings"]["train_seconds"] for r in g.complete)
            cells += [f"{params:,}" if params else "–", f"{train:.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
        diffs = comparisons(gs, reference)
        if diffs:
            lines += ["", f"Paired differences against `{reference}` (method − {reference}; 95 % CI; "
                      "p two-sided):", "",
                      "| method | n | " + " | ".join(f"Δ {label}" for _, label in COMPARED) + " |",
                      "|" + "---|" * (len(COMPARED) + 2)]
            for method, d in diffs.items():
                n = next((v["n"] for v in d.values()), 0)
                lines.append(f"| {method} | {n} | " + " | ".join(_diff_text(d.get(k)) for k, _ in COMPARED) + " |")
        lines += ["", f"Seen-task average after each chunk, every method with its 95 % band: "
                  f"`plots/{section_key(stream, model)}__average.png`."]
        incomplete = [(g, r) for g in gs for r in g.incomplete]
        if incomplete:
            lines += ["", "Incomplete runs (not averaged in):", ""]
            for g, r in incomplete:
                done, total = r["completed_chunks"], r["stream"]["num_chunks"]
                lines.append(f"- {g.method}, seed {r['seed']}: {done}/{total} chunks")
        curves = {g.method: g.parameter_curve() for g in gs if g.complete and g.parameter_curve()}
        if curves:
            width = max(len(c) for c in curves.values())
            lines += ["", "Adapter parameters after each chunk (frozen experts included; the curve of "
                      f"`plots/{section_key(stream, model)}__parameters.png`):", "",
                      "| method | " + " | ".join(str(i) for i in range(width)) + " |",
                      "|" + "---|" * (width + 1)]
            for method, c in curves.items():
                lines.append(f"| {method} | " + " | ".join(f"{v:,.0f}" for v in c) + " |")
        commits = sorted({str(r["env"].get("commit")) for g in gs for r in g.complete + g.incomplete})
        lines += ["", f"Runs recorded at commit(s): {', '.join(commits)}.", ""]
    return "\n".join(lines) + "\n"


def csv_text(groups: list[Group]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    header = ["stream", "fingerprint", "model", "method", "n", "incomplete", "ci_basis"]
    for k, _ in METRIC_COLUMNS:
        header += [f"{k}_mean", f"{k}_std", f"{k}_ci95", f"{k}_ci95_lo", f"{k}_ci95_hi"]
    w.writerow(header + ["trainable_params", "train_seconds"])

    def num(v: float | None) -> str:
        return "" if v is None else f"{v:.4f}"

    for g in groups:
        basis = SEEDS if len(g.complete) > 1 else ITEMS if g.complete else ""
        row: list[Any] = [g.stream, g.fingerprint, g.model, g.method, len(g.complete), len(g.incomplete), basis]
        for k, _ in METRIC_COLUMNS:
            m, s = g.metric(k)
            e = g.estimate(k)
            row += [num(m), num(s), num(e.half), num(e.lo), num(e.hi)]
        params = (g.complete or g.incomplete)[0].get("trainable_params")
        train = statistics.fmean(r["timings"]["train_seconds"] for r in g.complete) if g.complete else None
        w.writerow(row + [params, "" if train is None else f"{train:.1f}"])
    return buf.getvalue()


def plots_for(g: Group) -> dict[str, bytes]:
    from strcvit_bench.reports.plots import curves_with_composition, heatmap

    runs = g.complete or g.incomplete
    ref = runs[0]
    tasks = [t["name"] for t in ref["tasks"]]
    first = [t["first_seen"] for t in ref["tasks"]]
    m = g.mean_matrix()
    out = {
        "accuracy": heatmap(m, tasks, f"{g.method}: accuracy after each chunk (%)"),
        "forgetting": heatmap(forgetting_matrix(m, first), tasks, f"{g.method}: forgetting (best so far − now)",
                              cmap="RdBu_r", center_zero=True),
    }
    composition = ref["stream"].get("composition")
    if composition:
        out["curves"] = curves_with_composition(m, tasks, composition[: len(m)],
                                                f"{g.method}: task accuracy along the stream")
    if g.routing:
        import tempfile

        from strcvit_bench.reports.routing import plot_routing

        seed = min(g.routing)
        with tempfile.TemporaryDirectory() as tmp:
            out["routing"] = plot_routing(g.routing[seed], Path(tmp) / "r.png",
                                          title=f"{g.method}: expert activation by task (seed {seed})").read_bytes()
    return out


def write(out: Path, command: str, reference: str = REFERENCE) -> dict[str, Any]:
    """Regenerate leaderboard.md/.csv, plots/ and index.html from the run store."""
    from strcvit_bench.reports.html import render_html

    groups = load_groups(out)
    if not groups:
        raise StrcvitError(f"{out} holds no runs; add some with `strcvit leaderboard RUNDIR... --out {out}`")
    atomic_write_text(out / "leaderboard.md", markdown(groups, command, reference))
    atomic_write_text(out / "leaderboard.csv", csv_text(groups))
    from strcvit_bench.reports.plots import average_curves, parameter_curves

    plots: dict[str, dict[str, bytes]] = {}
    for g in groups:
        plots[g.key] = plots_for(g)
        for kind, png in plots[g.key].items():
            atomic_write_bytes(out / "plots" / f"{g.key}__{kind}.png", png)
    for (stream, _, model), gs in sections(groups).items():
        key = section_key(stream, model)
        plots[key] = {}
        bands = {g.method: band for g in gs if g.complete and (band := average_curve(g.complete))}
        if bands:
            n = max(len(g.complete) for g in gs)
            plots[key]["average"] = average_curves(
                bands, f"{stream}, {model}: average over the tasks seen so far "
                       f"(95 % band: {'seeds' if n > 1 else 'test items'})")
        curves = {g.method: g.parameter_curve() for g in gs if g.complete and g.parameter_curve()}
        if curves:
            plots[key]["parameters"] = parameter_curves(curves, f"{stream}, {model}: adapter parameters")
        for kind, png in plots[key].items():
            atomic_write_bytes(out / "plots" / f"{key}__{kind}.png", png)
    atomic_write_text(out / "index.html", render_html(groups, plots, command, reference))
    return {"groups": len(groups), "runs": sum(len(g.complete) + len(g.incomplete) for g in groups)}


def update(run_dirs: list[Path], out: Path, command: str, reference: str = REFERENCE) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out / ".lock"), timeout=600):
        add_runs(run_dirs, out)
        return write(out, command, reference)

