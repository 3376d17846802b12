"""StrLoRA's routing formulas as pure tensor functions (each unit-tested by hand)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from strcvit_bench.adapters.routing import one_hot_argmax, straight_through, topk_renormalised

__all__ = ["TokenRouting", "ema_update", "ema_update_all", "masked_softmax", "stability_kl", "stage1", "stage2_logits",
           "stage2_map", "stage2_maps",
           "straight_through", "top1_straight_through", "topk_renormalised"]


def stage1(t: torch.Tensor, W_r: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Task-aware selection from the instruction representation t (B, d).

    Returns (gates, hard, mask): `gates` is the straight-through top-k of softmax(W_r t) —
    forward the renormalised top-k, backward the dense softmax — `hard` its forward value and
    `mask` (B, E) the k selected experts. With W_r stacked (N, E, d) for N layers, all are (N, B, E).
    """
    probs = torch.softmax((t @ W_r.transpose(-1, -2)).float(), dim=-1)
    hard, mask = topk_renormalised(probs, k)
    return straight_through(hard, probs), hard.detach(), mask


def stage2_map(t: torch.Tensor, W_q: torch.Tensor, W_k: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """The per-sample matrix M_b = W_qᵀ diag(k_b) p̂ᵀ / √D (B, d_in, E) with stage-2 logits x_l M_b.

    logit_{l,e} = (W_q x_l ⊙ k) · p̂_e / √D is linear in x_l, so the query projection and the
    key and prototypes fold into one d_in × E matrix per sample: every token then costs a
    d_in × E product instead of a d_in × D projection (D = 64 against E = 4 by default), and
    the router no longer dominates a layer's arithmetic. Same function, summed in another order.
    """
    return stage2_maps(t, W_q.unsqueeze(0), W_k.unsqueeze(0), prototypes.unsqueeze(0))[0]


def stage2_maps(t: torch.Tensor, W_q: torch.Tensor, W_k: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """`stage2_map` of N layers at once, their weights stacked: W_q (N, D, d_in), W_k (N, D, d),
    prototypes (N, E, D); returns (N, B, d_in, E). The maps depend on the batch's t and the
    router weights only, never on the layer's input, so a model's layers can fold them together
    in a few batched products (layer.RouterBank)."""
    k = F.layer_norm(t, t.shape[-1:]) @ W_k.transpose(-1, -2)          # (N, B, D)
    p_hat = F.normalize(prototypes, dim=-1)                            # (N, E, D)
    kp = k.unsqueeze(-2) * (p_hat / math.sqrt(p_hat.shape[-1])).unsqueeze(-3)  # (N, B, E, D)
    n, b, e, d = kp.shape
    # (N, B·E, D) @ (N, D, d_in): W_qᵀ @ kp would copy W_q B times
    return (kp.reshape(n, b * e, d) @ W_q).reshape(n, b, e, -1).transpose(-1, -2)


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
    return straight_through(one_hot_argmax(p), p)


def stability_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, mask: torch.Tensor,
                 tau: float = 1.0) -> torch.Tensor:
    """Per-token KL(p_teacher ‖ p_student), both the masked softmax over the selected subset."""
    neg = float("-inf")
    log_t = torch.log_softmax((teacher_logits.float() / tau).masked_fill(~mask, neg), dim=-1)
    log_s = torch.log_softmax((student_logits.float() / tau).masked_fill(~mask, neg), dim=-1)
    terms = torch.where(mask, log_t.exp() * (log_t - log_s), torch.zeros_like(log_t))
    return terms.sum(-1)


class TokenRouting(torch.autograd.Function):
    """Stage-2 token choice and the stability KL of one layer in one pass, backward by hand.

    Forward: the straight-through top-1 of p = masked_softmax(x M) (value one-hot, gradient p's)
    and, given the EMA teacher's map, kl = the token-mask mean of stability_kl(x M_ema, x M) with
    the student's gradient reaching M only (x detached). The same values and gradients as autograd
    through those definitions (tested against them). Why by hand: the student's logits are the
    routing logits themselves, so one product x [M, M_ema] serves both and one xᵀ(g_route + g_kl)
    gives M its gradient: three token-wide products a layer instead of five, and a dozen small
    ops instead of about sixty, in each of the layers StrLoRA adapts.

    x: (B, L, d_in); M, M_ema: (B, d_in, E) (M_ema None: no KL); mask: (B, 1, E) bool;
    token_mask: (B, L) or None (all tokens). Returns the choice (B, L, E) float32 and kl (a
    scalar; 0 without a teacher).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, M: torch.Tensor, M_ema: torch.Tensor | None, mask: torch.Tensor,
                token_mask: torch.Tensor | None, tau: float):
        E = M.shape[-1]
        maps = M if M_ema is None else torch.cat([M, M_ema.to(M.dtype)], dim=-1)
        logits = (x @ maps).float() / tau
        neg = float("-inf")
        log_p = torch.log_softmax(logits[..., :E].masked_fill(~mask, neg), dim=-1)
        p = log_p.exp()
        kl = p.new_zeros(())
        q = w = None
        if M_ema is not None:
            log_q = torch.log_softmax(logits[..., E:].masked_fill(~mask, neg), dim=-1)
            q = log_q.exp()
            per_token = torch.where(mask, q * (log_q - log_p), torch.zeros_like(q)).sum(-1)  # (B, L)
            w = torch.ones_like(per_token) if token_mask is None else token_mask.to(per_token.dtype)
            w = w / w.sum().clamp_min(1.0)
            kl = (per_token * w).sum()
        ctx.save_for_backward(x, M, p, q, w)
        ctx.tau = tau
        choice = torch.zeros_like(p).scatter_(-1, p.argmax(-1, keepdim=True), 1.0)
        return choice, kl

    @staticmethod
    def backward(ctx, g_choice: torch.Tensor | None, g_kl: torch.Tensor | None):
        x, M, p, q, w = ctx.saved_tensors
        g_p = torch.zeros_like(p) if g_choice is None else g_choice.float()  # straight through to p
        g_route = p * (g_p - (p * g_p).sum(-1, keepdim=True)) / ctx.tau    # softmax backward; 0 off the mask
        g_logits = g_route
        if q is not None and g_kl is not None:  # d KL / d student logits = w (p - q) / tau, to M only
            g_logits = g_route + (g_kl.float() * w).unsqueeze(-1) * (p - q) / ctx.tau
        dtype = torch.promote_types(x.dtype, M.dtype)
        grad_x = grad_M = None
        if ctx.needs_input_grad[0]:
            grad_x = (g_route.to(dtype) @ M.to(dtype).transpose(-1, -2)).to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_M = (x.to(dtype).transpose(-1, -2) @ g_logits.to(dtype)).to(M.dtype)
        return grad_x, grad_M, None, None, None, None


@torch.no_grad()
def ema_update(average: torch.Tensor, current: torch.Tensor, momentum: float) -> None:
    """average ← m · average + (1 − m) · current, in place."""
    average.mul_(momentum).add_(current.detach(), alpha=1.0 - momentum)


@torch.no_grad()
def ema_update_all(averages: list[torch.Tensor], currents: list[torch.Tensor], momentum: float) -> None:
    """`ema_update` of many tensors in two foreach kernels (the same arithmetic, element by
    element): StrLoRA updates three tensors in every adapted layer after every step."""
    torch._foreach_mul_(averages, momentum)
    torch._foreach_add_(averages, [c.detach() for c in currents], alpha=1.0 - momentum)
