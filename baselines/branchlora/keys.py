"""BranchLoRA's pure parts: task keys, the task selector and the freezing rule (unit-tested by hand)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def alignment_loss(key: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """The paper's L_align for one key and its members' views: Σ_i (1 − cos(e_i, k))."""
    return (1 - F.cosine_similarity(members, key.unsqueeze(0), dim=-1)).sum()


class TaskKeys:
    """Text and image keys per cluster; key = normalised mean of the members' normalised views."""

    def __init__(self) -> None:
        self.text_sum: torch.Tensor | None = None   # (C, d_text)
        self.image_sum: torch.Tensor | None = None  # (C, d_image)
        self.counts: list[int] = []

    def __len__(self) -> int:
        return len(self.counts)

    def similarity(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """(B, C): mean of the text and image cosines to every cluster's keys."""
        assert self.text_sum is not None and self.image_sum is not None
        t = F.normalize(text.float(), dim=-1) @ F.normalize(self.text_sum, dim=-1).t().to(text.device)
        v = F.normalize(image.float(), dim=-1) @ F.normalize(self.image_sum, dim=-1).t().to(image.device)
        return (t + v) / 2

    def select(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """The task selector: each sample's most similar cluster."""
        return self.similarity(text, image).argmax(-1)

    def add(self, c: int, text: torch.Tensor, image: torch.Tensor) -> None:
        t, v = F.normalize(text.float(), dim=-1), F.normalize(image.float(), dim=-1)
        if c == len(self.counts):
            self.text_sum = t[None] if self.text_sum is None else torch.cat([self.text_sum, t[None]])
            self.image_sum = v[None] if self.image_sum is None else torch.cat([self.image_sum, v[None]])
            self.counts.append(1)
            return
        self.text_sum[c] += t  # type: ignore[index]
        self.image_sum[c] += v  # type: ignore[index]
        self.counts[c] += 1

    def assign(self, text: torch.Tensor, image: torch.Tensor, threshold: float,
               max_clusters: int) -> tuple[list[int], list[int]]:
        """Rows in order: join the most similar cluster, or open one below `threshold` (leader
        clustering; deterministic). Returns each row's cluster and the clusters opened."""
        assigned, opened = [], []
        for t, v in zip(text, image, strict=True):
            if len(self):
                sims = self.similarity(t[None], v[None])[0]
                c = int(sims.argmax())
                if float(sims[c]) < threshold and len(self) < max_clusters:
                    c = len(self)
            else:
                c = 0
            if c == len(self):
                opened.append(c)
            self.add(c, t, v)
            assigned.append(c)
        return assigned, opened


def refreeze(frozen: list[int], usage: torch.Tensor, k: int, min_tunable: int) -> list[int]:
    """After a phase: the k most used branches become the newest frozen ones; if fewer than
    `min_tunable` branches stay tunable, the branch frozen longest ago is thawed first."""
    top = [int(i) for i in usage.argsort(descending=True, stable=True)[:k]]
    order = [b for b in frozen if b not in top] + sorted(top, key=lambda b: -float(usage[b]))[::-1]
    while len(usage) - len(order) < min_tunable and order:
        order.pop(0)
    return order
