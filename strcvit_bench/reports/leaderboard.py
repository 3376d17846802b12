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
        vals = [r["metrics"].get(name) for r in self.complete]
        vals = [v for v in vals if v is not None]
        if not vals:
            return None, None
        return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)

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


def _read_results(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "results.json" if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise StrcvitError(f"{run_dir} holds no results.json; pass run directories made by `strcvit run`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise StrcvitError(f"{path} is not valid JSON ({exc})") from None


def add_runs(run_dirs: list[Path], out: Path) -> list[Path]:
    """Copy runs into the leaderboard's store (replacing the same stream/model/method/seed)."""
    added = []
    for run_dir in run_dirs:
        results = _read_results(run_dir)
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


def _fmt(mean: float | None, std: float | None, n: int) -> str:
    if mean is None:
        return "–"
    return f"{mean:.2f}" if n < 2 else f"{mean:.2f} ± {std:.2f}"


def sections(groups: list[Group]) -> dict[tuple[str, str, str], list[Group]]:
    out: dict[tuple[str, str, str], list[Group]] = {}
    for g in groups:
        out.setdefault((g.stream, g.fingerprint, g.model), []).append(g)
    return out


def markdown(groups: list[Group], command: str) -> str:
    lines = ["# strcvit-bench leaderboard", "",
             "Accuracies in percent; mean ± std over seeds (n). Metrics: DESIGN/README. "
             f"Produced by `{command}`.", ""]
    for (stream, fp, model), gs in sections(groups).items():
        lines += [f"## stream `{stream}` (fingerprint `{fp[:12]}`), model `{model}`", ""]
        header = ["method", "n"] + [label for _, label in METRIC_COLUMNS] + ["trainable params", "train time (s)"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for g in gs:
            if not g.complete:
                continue
            n = len(g.complete)
            cells = [g.method, str(n)] + [_fmt(*g.metric(k), n) for k, _ in METRIC_COLUMNS]
            params = g.complete[0].get("trainable_params")
            train = statistics.fmean(r["timings"]["train_seconds"] for r in g.complete)
            cells += [f"{params:,}" if params else "–", f"{train:.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
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
    header = ["stream", "fingerprint", "model", "method", "n", "incomplete"]
    for k, _ in METRIC_COLUMNS:
        header += [f"{k}_mean", f"{k}_std"]
    w.writerow(header + ["trainable_params", "train_seconds"])
    for g in groups:
        row: list[Any] = [g.stream, g.fingerprint, g.model, g.method, len(g.complete), len(g.incomplete)]
        for k, _ in METRIC_COLUMNS:
            m, s = g.metric(k)
            row += ["" if m is None else f"{m:.4f}", "" if s is None else f"{s:.4f}"]
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


def write(out: Path, command: str) -> dict[str, Any]:
    """Regenerate leaderboard.md/.csv, plots/ and index.html from the run store."""
    from strcvit_bench.reports.html import render_html

    groups = load_groups(out)
    if not groups:
        raise StrcvitError(f"{out} holds no runs; add some with `strcvit leaderboard RUNDIR... --out {out}`")
    atomic_write_text(out / "leaderboard.md", markdown(groups, command))
    atomic_write_text(out / "leaderboard.csv", csv_text(groups))
    from strcvit_bench.reports.plots import parameter_curves

    plots: dict[str, dict[str, bytes]] = {}
    for g in groups:
        plots[g.key] = plots_for(g)
        for kind, png in plots[g.key].items():
            atomic_write_bytes(out / "plots" / f"{g.key}__{kind}.png", png)
    for (stream, _, model), gs in sections(groups).items():
        curves = {g.method: g.parameter_curve() for g in gs if g.complete and g.parameter_curve()}
        if curves:
            key = section_key(stream, model)
            plots[key] = {"parameters": parameter_curves(curves, f"{stream}, {model}: adapter parameters")}
            atomic_write_bytes(out / "plots" / f"{key}__parameters.png", plots[key]["parameters"])
    atomic_write_text(out / "index.html", render_html(groups, plots, command))
    return {"groups": len(groups), "runs": sum(len(g.complete) + len(g.incomplete) for g in groups)}


def update(run_dirs: list[Path], out: Path, command: str) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out / ".lock"), timeout=600):
        add_runs(run_dirs, out)
        return write(out, command)

