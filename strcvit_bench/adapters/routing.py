"""Routing helpers every routed adapter shares (MoELoRA, SMoLoRA, StrLoRA, BranchLoRA, CRAM)."""

from __future__ import annotations

import torch


def topk_renormalised(probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest probabilities of each row rescaled to sum to 1, and the boolean mask of them."""
    values, idx = probs.topk(k, dim=-1)
    mask = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, idx, True)
    kept = torch.zeros_like(probs).scatter(-1, idx, values)
    return kept / kept.sum(-1, keepdim=True), mask


def topk_gates(gates: torch.Tensor, k: int) -> torch.Tensor:
    """Gates kept to their k largest and renormalised; `k` of 0 or ≥ the experts keeps them dense
    (untouched, not renormalised: a dense softmax already sums to 1)."""
    if k <= 0 or k >= gates.shape[-1]:
        return gates
    return topk_renormalised(gates, k)[0]


def one_hot_argmax(logits: torch.Tensor) -> torch.Tensor:
    """The one-hot of each row's argmax (a hard choice that passes no gradient)."""
    return torch.zeros_like(logits).scatter(-1, logits.argmax(-1, keepdim=True), 1.0)


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Forward value `hard`, gradient of `soft` (none through `hard` itself)."""
    return hard.detach() + soft - soft.detach()


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the sequence axis of (B, L, d) restricted to `mask` (B, L); all tokens without one."""
    if mask is None or mask.shape != x.shape[:2]:
        return x.mean(1)
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)
