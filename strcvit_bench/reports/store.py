"""The leaderboard's run store: results.json files validated, then copied under OUT/runs/, so
a committed leaderboard is self-contained and adding runs is incremental."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from strcvit_bench.errors import StrcvitError
from strcvit_bench.io import atomic_write_text
from strcvit_bench.reports.rows import Group, method_label, slug


def store_path(out: Path, results: dict[str, Any]) -> Path:
    s = results["stream"]
    return (out / "runs" / f"{slug(s['name'])}__{s['fingerprint'][:12]}" / slug(results["model"])
            / f"{slug(method_label(results))}__s{results['seed']}")


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
