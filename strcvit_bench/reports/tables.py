"""The leaderboard as text: leaderboard.md and leaderboard.csv, rendered from the shared rows."""

from __future__ import annotations

import csv
import io
import statistics
from typing import Any

from strcvit_bench.reports.comparison import COMPARED
from strcvit_bench.reports.rows import (
    HOW_TO_READ,
    METRIC_COLUMNS,
    REFERENCE,
    Group,
    ci_basis,
    diff_rows,
    diff_text,
    made_on,
    metric_rows,
    section_key,
    sections,
)


def markdown(groups: list[Group], command: str, reference: str = REFERENCE) -> str:
    lines = ["# strcvit-bench leaderboard", "", HOW_TO_READ, "", f"Produced by `{command}`.", ""]
    for (stream, fp, model), gs in sections(groups).items():
        lines += [f"## stream `{stream}` (fingerprint `{fp[:12]}`), model `{model}`", ""]
        header = ["method", "n"] + [label for _, label in METRIC_COLUMNS] + ["trainable params", "train time (s)"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for row in metric_rows(gs):
            cells = [row.method, str(row.n)] + [row.estimates[k].text() for k, _ in METRIC_COLUMNS]
            cells += [f"{row.params:,}" if row.params else "–", f"{row.train_seconds:.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
        diffs = diff_rows(gs, reference)
        if diffs:
            lines += ["", f"Paired differences against `{reference}` (method − {reference}; 95 % CI; "
                      "p two-sided):", "",
                      "| method | n | " + " | ".join(f"Δ {label}" for _, label in COMPARED) + " |",
                      "|" + "---|" * (len(COMPARED) + 2)]
            for method, n, d in diffs:
                lines.append(f"| {method} | {n} | " + " | ".join(diff_text(d[k]) for k, _ in COMPARED) + " |")
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
        runs = [r for g in gs for r in g.complete + g.incomplete]
        commits = sorted({str(r["env"].get("commit")) for r in runs})
        lines += ["", f"Runs recorded at commit(s): {', '.join(commits)}; made on {'; '.join(made_on(runs))} "
                  "(float results are the same bits only on the same class of CPU, versions and thread count).", ""]
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
        basis = ci_basis(g)
        row: list[Any] = [g.stream, g.fingerprint, g.model, g.method, len(g.complete), len(g.incomplete), basis]
        for k, _ in METRIC_COLUMNS:
            m, s = g.metric(k)
            e = g.estimate(k)
            row += [num(m), num(s), num(e.half), num(e.lo), num(e.hi)]
        params = (g.complete or g.incomplete)[0].get("trainable_params")
        train = statistics.fmean(r["timings"]["train_seconds"] for r in g.complete) if g.complete else None
        w.writerow(row + [params, "" if train is None else f"{train:.1f}"])
    return buf.getvalue()
