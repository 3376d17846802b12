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


def stage2_logits(x: torch.Tensor, t: torch.Tensor, W_q: torch.Tensor, W_k: torch.Tensor,
                  prototypes: torch.Tensor) -> torch.Tensor:
    """logit_{l,e} = Σ_d q_{l,d} k_d p̂_{e,d} / √D with q = W_q x_l, k = W_k LN(t), p̂ = P_e / ‖P_e‖.

    x: (B, L, d_in), t: (B, d); returns (B, L, E). LN has no affine parameters.
    """
    return logits_from_query(x @ W_q.t(), t, W_k, prototypes)


def logits_from_query(q: torch.Tensor, t: torch.Tensor, W_k: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Stage-2 logits from an already projected query q = W_q x (B, L, D)."""
    k = F.layer_norm(t, t.shape[-1:]) @ W_k.t()             # (B, D)
    p_hat = F.normalize(prototypes, dim=-1)                 # (E, D)
    return ((q * k.unsqueeze(1)) @ p_hat.t()) / math.sqrt(q.shape[-1])


class WeightOnlyGrad(torch.autograd.Function):
    """The value of an already computed q = x Wᵀ whose gradient reaches W only, never x.

    The stability loss must train the router without touching its inputs; recomputing
    x.detach() Wᵀ would cost another (B·L × d × D) matmul per layer, this costs none.
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.w_dtype = W.dtype
        return q.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        # under autocast the incoming gradient is bf16 while x kept its own dtype
        dtype = torch.promote_types(grad.dtype, x.dtype)
        grad_w = grad.reshape(-1, grad.shape[-1]).t().to(dtype) @ x.reshape(-1, x.shape[-1]).to(dtype)
        return None, None, grad_w.to(ctx.w_dtype)


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
