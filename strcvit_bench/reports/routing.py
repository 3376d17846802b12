"""Expert activation by task (the StrLoRA paper's Figure 5) from a run's routing.json."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from strcvit_bench.io import atomic_write_bytes


def last_point(routing: dict[str, Any]) -> str:
    points = [p for p in routing["points"] if p != "base"]
    return max(points) if points else "base"


def plot_routing(routing: dict[str, Any], out: str | Path, point: str | None = None, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    point = point or last_point(routing)
    per_task = routing["points"][point]
    tasks = list(per_task)
    panels = [("mean_weight", "share of tokens / weight per expert")]
    if any("selection_frequency" in v for v in per_task.values()):
        panels.append(("selection_frequency", "stage-1 selection frequency per expert"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 1.5, 3.4), dpi=120, squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        experts = len(next(iter(per_task.values()))[key])
        bottoms = [0.0] * len(tasks)
        for e in range(experts):
            vals = [per_task[t].get(key, [0.0] * experts)[e] for t in tasks]
            ax.bar(range(len(tasks)), vals, bottom=bottoms, color=cmap(e % 10), label=f"expert {e}", width=0.7)
            bottoms = [b + v for b, v in zip(bottoms, vals, strict=True)]
        ax.set_xticks(range(len(tasks)))
        ax.set_xticklabels(tasks, rotation=30, ha="right", fontsize=8)
        ax.set_title(label, fontsize=9)
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.suptitle(title or f"{routing.get('method', '')}: expert activation by task ({point})", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())
    return Path(out)
