"""StrLoRA's routing formulas as pure tensor functions (each unit-tested by hand)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def topk_renormalised(probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest probabilities of each row rescaled to sum to 1, and the boolean mask of them."""
    values, idx = probs.topk(k, dim=-1)
    mask = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, idx, True)
    kept = torch.zeros_like(probs).scatter(-1, idx, values)
    return kept / kept.sum(-1, keepdim=True), mask


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Forward value `hard`, gradient of `soft` (none through `hard` itself)."""
    return hard.detach() + soft - soft.detach()


def stage1(t: torch.Tensor, W_r: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Task-aware selection from the instruction representation t (B, d).

    Returns (gates, hard, mask): `gates` is the straight-through top-k of softmax(W_r t) —
    forward the renormalised top-k, backward the dense softmax — `hard` its forward value and
    `mask` (B, E) the k selected experts.
    """
    probs = torch.softmax((t @ W_r.t()).float(), dim=-1)
    hard, mask = topk_renormalised(probs, k)
    return straight_through(hard, probs), hard.detach(), mask


def stage2_map(t: torch.Tensor, W_q: torch.Tensor, W_k: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """The per-sample matrix M_b = W_qᵀ diag(k_b) p̂ᵀ / √D (B, d_in, E) with stage-2 logits x_l M_b.

    logit_{l,e} = (W_q x_l ⊙ k) · p̂_e / √D is linear in x_l, so the query projection and the
    key and prototypes fold into one d_in × E matrix per sample: every token then costs a
    d_in × E product instead of a d_in × D projection (D = 64 against E = 4 by default), and
    the router no longer dominates a layer's arithmetic. Same function, summed in another order.
    """
    k = F.layer_norm(t, t.shape[-1:]) @ W_k.t()             # (B, D)
    p_hat = F.normalize(prototypes, dim=-1)                 # (E, D)
    kp = k.unsqueeze(1) * (p_hat / math.sqrt(p_hat.shape[-1]))  # (B, E, D)
    # (B, E, D) @ (D, d_in) is one (B·E × D) @ (D × d_in) product; W_qᵀ @ kp would copy W_q B times
    return (kp @ W_q).transpose(-1, -2)


def stage2_logits(x: torch.Tensor, t: torch.Tensor, W_q: torch.Tensor, W_k: torch.Tensor,
                  prototypes: torch.Tensor) -> torch.Tensor:
    """logit_{l,e} = Σ_d q_{l,d} k_d p̂_{e,d} / √D with q = W_q x_l, k = W_k LN(t), p̂ = P_e / ‖P_e‖.

    x: (B, L, d_in), t: (B, d); returns (B, L, E). LN has no affine parameters.
    """
    return x @ stage2_map(t, W_q, W_k, prototypes)


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Softmax over the allowed experts only (−inf elsewhere); rows sum to 1 over the mask."""
    return torch.softmax((logits.float() / tau).masked_fill(~mask, float("-inf")), dim=-1)


def top1_straight_through(p: torch.Tensor) -> torch.Tensor:
    """Forward one-hot of the argmax, backward the gradient of p."""
    hard = torch.zeros_like(p).scatter(-1, p.argmax(-1, keepdim=True), 1.0)
    return straight_through(hard, p)


def stability_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, mask: torch.Tensor,
                 tau: float = 1.0) -> torch.Tensor:
    """Per-token KL(p_teacher ‖ p_student), both the masked softmax over the selected subset."""
    neg = float("-inf")
    log_t = torch.log_softmax((teacher_logits.float() / tau).masked_fill(~mask, neg), dim=-1)
    log_s = torch.log_softmax((student_logits.float() / tau).masked_fill(~mask, neg), dim=-1)
    terms = torch.where(mask, log_t.exp() * (log_t - log_s), torch.zeros_like(log_t))
    return terms.sum(-1)


@torch.no_grad()
def ema_update(average: torch.Tensor, current: torch.Tensor, momentum: float) -> None:
    """average ← m · average + (1 − m) · current, in place."""
    average.mul_(momentum).add_(current.detach(), alpha=1.0 - momentum)
