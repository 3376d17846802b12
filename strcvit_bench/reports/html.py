"""The leaderboard as one self-contained static page: inline CSS and JS, plots as data URIs,
so it opens from disk or a static host with no network."""

from __future__ import annotations

import base64
import html
from typing import Any

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>strcvit-bench leaderboard</title>
<style>
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:12px 0 24px;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f2f2f2;cursor:pointer;user-select:none}
td:first-child,th:first-child{text-align:left}
th.sorted-asc::after{content:" \\25B2"} th.sorted-desc::after{content:" \\25BC"}
details{margin:8px 0} summary{cursor:pointer;font-weight:600}
img{max-width:100%;margin:6px 4px;border:1px solid #eee}
.muted{color:#777;font-size:13px}
</style></head><body>
<h1>strcvit-bench leaderboard</h1>
<p class="muted">__HOWTO__ Click a column to sort. Produced by <code>__COMMAND__</code>.</p>
__BODY__
<script>
document.querySelectorAll("table.leaderboard").forEach(function(table){
  table.querySelectorAll("th").forEach(function(th, col){
    th.addEventListener("click", function(){
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var asc = !th.classList.contains("sorted-asc");
      table.querySelectorAll("th").forEach(function(h){h.classList.remove("sorted-asc","sorted-desc");});
      th.classList.add(asc ? "sorted-asc" : "sorted-desc");
      rows.sort(function(a, b){
        var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
        return asc ? c : -c;
      });
      rows.forEach(function(r){ body.appendChild(r); });
    });
  });
});
</script></body></html>
"""


def _table(head: list[str], rows: list[list[tuple[str, Any]]], css: str = "leaderboard") -> str:
    """A sortable table: each cell's text and the value it sorts by."""
    body = "".join("<tr>" + "".join(f'<td data-v="{html.escape(str(v))}">{html.escape(t)}</td>' for t, v in cells)
                   + "</tr>" for cells in rows)
    return (f"<table class='{css}'><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
            + "</tr></thead><tbody>" + body + "</tbody></table>")


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def render_html(groups: list[Any], plots: dict[str, dict[str, bytes]], command: str, reference: str = "lora") -> str:
    from strcvit_bench.reports.comparison import COMPARED
    from strcvit_bench.reports.rows import (
        HOW_TO_READ,
        METRIC_COLUMNS,
        diff_rows,
        diff_text,
        made_on,
        metric_rows,
        section_key,
        sections,
    )

    parts = []
    for (stream, fp, model), gs in sections(groups).items():
        parts.append(f"<h2>stream <code>{html.escape(stream)}</code> <span class='muted'>fingerprint "
                     f"{fp[:12]}</span>, model <code>{html.escape(model)}</code></h2>")
        head = ["method", "n"] + [label for _, label in METRIC_COLUMNS] + ["trainable params", "train time (s)"]
        rows = []
        for row in metric_rows(gs):
            cells = [(row.method, row.method), (str(row.n), row.n)]
            for key, _ in METRIC_COLUMNS:
                e = row.estimates[key]
                cells.append((e.text(), "" if e.mean is None else f"{e.mean:.6f}"))
            params = row.params or 0
            cells += [(f"{params:,}", params), (f"{row.train_seconds:.0f}", f"{row.train_seconds:.3f}")]
            rows.append(cells)
        parts.append(_table(head, rows))
        diffs = diff_rows(gs, reference)
        if diffs:
            head2 = ["method", "n"] + [f"Δ {label}" for _, label in COMPARED]
            body = []
            for method, n, d in diffs:
                body.append([(method, method), (str(n), n)] + [
                    (diff_text(d[k]), d[k]["mean_diff"] if d[k] else "") for k, _ in COMPARED])
            parts.append(f"<p>Paired differences against <code>{html.escape(reference)}</code> "
                         f"(method − {html.escape(reference)}; 95 % CI; p two-sided):</p>"
                         + _table(head2, body, "leaderboard paired"))
        average = plots.get(section_key(stream, model), {}).get("average")
        if average:
            parts.append(_img(average, "average accuracy over seen tasks, every method"))
        incomplete = [(g, r) for g in gs for r in g.incomplete]
        if incomplete:
            parts.append("<p class='muted'>Incomplete runs (not averaged in): " + ", ".join(
                f"{html.escape(g.method)} seed {r['seed']} ({r['completed_chunks']}/{r['stream']['num_chunks']})"
                for g, r in incomplete) + "</p>")
        growth = plots.get(section_key(stream, model), {}).get("parameters")
        if growth:
            parts.append("<p class='muted'>Adapter parameters after each chunk (frozen experts included):</p>"
                         + _img(growth, "adapter parameters along the stream"))
        runs = [r for g in gs for r in g.complete + g.incomplete]
        parts.append("<p class='muted'>Made on " + html.escape("; ".join(made_on(runs))) + " (float results are "
                     "the same bits only on the same class of CPU, versions and thread count).</p>")
        for g in gs:
            imgs = "".join(_img(png, f"{g.method} {kind}") for kind, png in plots.get(g.key, {}).items())
            parts.append(f"<details><summary>{html.escape(g.method)}: accuracy, curves, forgetting"
                         f"{', routing' if g.routing else ''}</summary>{imgs}</details>")
    return (PAGE.replace("__HOWTO__", html.escape(HOW_TO_READ)).replace("__COMMAND__", html.escape(command))
            .replace("__BODY__", "\n".join(parts)))
