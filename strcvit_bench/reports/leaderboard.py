"""The leaderboard: validated runs into the store, then leaderboard.md/.csv, plots and a static
index.html regenerated from it.

Everything is regenerated from the store under a file lock, with atomic writes, so two
processes can add runs at once. Runs of different streams or models never share a table;
incomplete runs are listed apart, never averaged in. `rows` groups runs and builds the rows,
`tables` and `html` render them, `store` keeps the runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from filelock import FileLock

from strcvit_bench.errors import StrcvitError
from strcvit_bench.evaluation.metrics import forgetting_matrix
from strcvit_bench.io import atomic_write_bytes, atomic_write_text
from strcvit_bench.reports.comparison import average_curve
from strcvit_bench.reports.rows import REFERENCE, Group, section_key, sections
from strcvit_bench.reports.store import add_runs, load_groups, read_results, validate_results
from strcvit_bench.reports.tables import csv_text, markdown

__all__ = ["REFERENCE", "add_runs", "load_groups", "read_results", "update", "validate_results", "write"]


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
