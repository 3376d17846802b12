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
from strcvit_bench.adapters.context import BatchContext
from strcvit_bench.adapters.experts import ExpertLoRA
from strcvit_bench.adapters.routing import topk_gates
from strcvit_bench.methods.base import Rows
from strcvit_bench.methods.experts import ExpertMethod, ExpertOptions


class MoELoRALinear(ExpertLoRA):
    def __init__(self, base: nn.Linear, experts: int, rank_per_expert: int, alpha: float, dropout: float,
                 top_k: int = 0, context: BatchContext | None = None):
        super().__init__(base, experts, rank_per_expert, alpha, dropout, context=context)
        self.top_k = top_k
        self.router_W = nn.Parameter(torch.empty(experts, base.in_features, dtype=base.weight.dtype,
                                                 device=base.weight.device))
        nn.init.kaiming_uniform_(self.router_W, a=math.sqrt(5))  # nn.Linear's default

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.softmax((x @ self.router_W.t()).float(), dim=-1).to(x.dtype)
        return topk_gates(g, self.top_k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gates(x)
        self.record_tokens(g, self.context.mask_for(x))
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
               lambda name, layer: MoELoRALinear(layer, o.experts, o.per_expert, o.alpha, o.dropout, o.top_k,
                                                 self.batch_context))

    def before_forward(self, batch: dict[str, torch.Tensor], rows: Rows) -> None:
        self.batch_context.begin(batch.get("attention_mask"))
