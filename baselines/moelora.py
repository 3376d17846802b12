"""MoELoRA (CoIN, Chen et al. 2024): E LoRA experts per target layer mixed by a token-level router.

g = softmax(W_r x) for every token x; y = W0 x + (α/r) Σ_e g_e B_e A_e x. `top_k = 0` keeps the
dense softmax (as CoIN and the StrCVIT authors run it); `top_k = k` keeps the k largest gates
per token, renormalised. The router is trained with the experts; CoIN adds no balance loss,
and neither do we. CoIN's own setting is 8 experts of rank 128 on a 7B model; the StrCVIT
comparison uses 4 x 16. Here the default is 4 experts sharing the LoRA baseline's total rank.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn

from strcvit_bench.adapters import inject
from strcvit_bench.adapters.experts import ExpertLoRA
from strcvit_bench.methods.base import Rows
from strcvit_bench.methods.experts import ExpertMethod, ExpertOptions


def topk_renormalise(gates: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest gates on the last axis and rescale them to sum to 1."""
    if k <= 0 or k >= gates.shape[-1]:
        return gates
    values, idx = gates.topk(k, dim=-1)
    kept = torch.zeros_like(gates).scatter(-1, idx, values)
    return kept / kept.sum(-1, keepdim=True)


class MoELoRALinear(ExpertLoRA):
    def __init__(self, base: nn.Linear, experts: int, rank_per_expert: int, alpha: float, dropout: float,
                 top_k: int = 0):
        super().__init__(base, experts, rank_per_expert, alpha, dropout)
        self.top_k = top_k
        self.router_W = nn.Parameter(torch.empty(experts, base.in_features, dtype=base.weight.dtype,
                                                 device=base.weight.device))
        nn.init.kaiming_uniform_(self.router_W, a=math.sqrt(5))  # nn.Linear's default
        self.token_mask: torch.Tensor | None = None

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.softmax((x @ self.router_W.t()).float(), dim=-1).to(x.dtype)
        return topk_renormalise(g, self.top_k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gates(x)
        mask = self.token_mask if self.token_mask is not None and self.token_mask.shape == g.shape[:-1] else None
        self.record_tokens(g, mask)
        return self.base(x) + self.expert_delta(x, g)


class MoELoRAOptions(ExpertOptions):
    top_k: int = Field(0, ge=0, description="experts kept per token (0 = dense softmax)")


class MoELoRA(ExpertMethod):
    name = "moelora"
    description = "mixture of LoRA experts with a token-level softmax router (CoIN's MoELoRA)"
    Options = MoELoRAOptions

    def attach(self) -> None:
        o = self.options
        inject(self.model, self.ctx.bundle.target_modules,
               lambda name, layer: MoELoRALinear(layer, o.experts, o.per_expert, o.alpha, o.dropout, o.top_k))

    def before_forward(self, batch: dict[str, torch.Tensor], rows: Rows) -> None:
        for layer in self.expert_layers():
            layer.token_mask = batch.get("attention_mask")
