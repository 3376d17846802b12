"""Plots of one method on one stream (accuracy heatmap, task curves over the composition,
forgetting heatmap) and of all methods on it (adapter parameters along the stream). Each
returns PNG bytes so the HTML page can embed them."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

Matrix = Sequence[Sequence[float | None]]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _plt().close(fig)
    return buf.getvalue()


def _nan(m: Matrix) -> list[list[float]]:
    return [[math.nan if v is None else float(v) for v in row] for row in m]


def heatmap(m: Matrix, tasks: list[str], title: str, cmap: str = "viridis", center_zero: bool = False) -> bytes:
    import numpy as np

    plt = _plt()
    data = np.array(_nan(m))
    fig, ax = plt.subplots(figsize=(1.1 * len(tasks) + 2.2, 0.32 * len(m) + 1.6), dpi=110)
    if center_zero:
        lim = max(1.0, float(np.nanmax(np.abs(data))) if np.isfinite(data).any() else 1.0)
        im = ax.imshow(data, cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
    else:
        im = ax.imshow(data, cmap=cmap, vmin=0, vmax=100, aspect="auto")
    for (i, j), v in np.ndenumerate(data):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                    color="black" if center_zero else "white")
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels(tasks, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(m)))
    ax.set_ylabel("after chunk")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    return _png(fig)


def curves_with_composition(m: Matrix, tasks: list[str], composition: list[dict[str, int]], title: str) -> bytes:
    plt = _plt()
    data = _nan(m)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 5.0), dpi=110, sharex=True,
                                      gridspec_kw={"height_ratios": [2.2, 1]})
    cmap = plt.get_cmap("tab10")
    x = list(range(len(data)))
    for j, task in enumerate(tasks):
        top.plot(x, [row[j] for row in data], marker="o", ms=3, color=cmap(j % 10), label=task)
    top.set_ylabel("accuracy (%)")
    top.set_title(title, fontsize=9)
    top.legend(fontsize=7, ncol=min(4, len(tasks)), loc="upper left", frameon=False)
    top.grid(alpha=0.3)
    bottoms = [0] * len(composition)
    for j, task in enumerate(tasks):
        vals = [c.get(task, 0) for c in composition]
        bottom.bar(range(len(composition)), vals, bottom=bottoms, color=cmap(j % 10), width=0.8)
        bottoms = [b + v for b, v in zip(bottoms, vals, strict=True)]
    bottom.set_ylabel("samples")
    bottom.set_xlabel("chunk")
    bottom.set_xticks(range(len(composition)))
    fig.tight_layout()
    return _png(fig)


def parameter_curves(curves: dict[str, list[float]], title: str) -> bytes:
    """Adapter parameters after each chunk, one line per method."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=110)
    cmap = plt.get_cmap("tab10")
    for k, (method, curve) in enumerate(curves.items()):
        ax.plot(range(len(curve)), curve, marker="o", ms=3, color=cmap(k % 10), label=method)
    return _per_chunk_axes(fig, ax, "adapter parameters", title, ncol=2)


def _per_chunk_axes(fig, ax, ylabel: str, title: str, ncol: int) -> bytes:
    ax.set_xlabel("after chunk")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=ncol, frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def average_curves(bands: dict[str, tuple[list[float], list[float], list[float]]], title: str) -> bytes:
    """The paper's main curve: the seen-task average after each chunk, one line per method with
    its 95 % band, so the reader sees at once which gaps exceed the noise."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    cmap = plt.get_cmap("tab10")
    for k, (method, (mean, lo, hi)) in enumerate(bands.items()):
        x = list(range(len(mean)))
        style = "--" if method == "joint" else "-"
        ax.plot(x, mean, style, marker="o", ms=3, color=cmap(k % 10), label=method)
        ax.fill_between(x, lo, hi, color=cmap(k % 10), alpha=0.15, linewidth=0)
    return _per_chunk_axes(fig, ax, "average accuracy over seen tasks (%)", title, ncol=3)
