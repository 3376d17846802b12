"""The chunk-composition view of a stream (the paper's stacked-bar figure)."""

from __future__ import annotations

from pathlib import Path

from strcvit_bench.io import atomic_write_bytes


def composition_rows(task_names: list[str], counts: list[dict[str, int]]) -> list[list[int]]:
    return [[c.get(t, 0) for t in task_names] for c in counts]


def plot_composition(task_names: list[str], counts: list[dict[str, int]], out: str | Path, title: str = "") -> Path:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = composition_rows(task_names, counts)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(rows) + 3), 3.6), dpi=120)
    bottoms = [0] * len(rows)
    cmap = plt.get_cmap("tab20" if len(task_names) > 10 else "tab10")
    for j, task in enumerate(task_names):
        values = [r[j] for r in rows]
        ax.bar(range(len(rows)), values, bottom=bottoms, label=task, color=cmap(j % cmap.N), width=0.85)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    ax.set_xlabel("chunk")
    ax.set_ylabel("samples")
    ax.set_xticks(range(len(rows)))
    ax.set_title(title or "chunk composition")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    out = Path(out)
    atomic_write_bytes(out, buf.getvalue())
    return out
