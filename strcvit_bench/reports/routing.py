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
        panels.append(("selection_frequency", "experts selected per sample"))
    for key, label in (("router_choice", "router chosen by the task selector"),
                       ("group_choice", "semantic group chosen (level 1)")):
        if all(key in v for v in per_task.values()):
            panels.append((key, label))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.4), dpi=120, squeeze=False)
    cmap = plt.get_cmap("tab20")  # groups and routers can outnumber ten
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        experts = max(len(v.get(key, [])) for v in per_task.values())
        bottoms = [0.0] * len(tasks)
        name = {"router_choice": "router", "group_choice": "group"}.get(key, "expert")
        for e in range(experts):
            vals = [(per_task[t].get(key, []) + [0.0] * experts)[e] for t in tasks]
            ax.bar(range(len(tasks)), vals, bottom=bottoms, color=cmap(e % 20), label=f"{name} {e}", width=0.7)
            bottoms = [b + v for b, v in zip(bottoms, vals, strict=True)]
        ax.set_xticks(range(len(tasks)))
        ax.set_xticklabels(tasks, rotation=30, ha="right", fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=6, frameon=False)
    fig.suptitle(title or f"{routing.get('method', '')}: expert activation by task ({point})", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())
    return Path(out)
