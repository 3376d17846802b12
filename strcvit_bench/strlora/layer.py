"""The StrLoRA adapter layer: two-stage routing over E LoRA experts.

Per target layer (docs/methods.md): stage 1 picks k experts per *sample* from the instruction
representation t (task-aware selection); stage 2 weights them per *token* by attention
between the token's query W_q x_l and the instruction key W_k LN(t), through learnable
L2-normalised prototypes, and sends each token to one expert (straight-through top-1). An EMA
copy of the stage-2 router (W_q, W_k, P) is the reference of the routing-stability loss.

y_l = W0 x_l + (α/r) Σ_e c_{l,e} B_e A_e drop(x_l), with c_{l,·} the token's one-hot choice.
When stage 1 is trainable (our default, `stage1_grad`), c_{l,e} is multiplied by g_e / sg(g_e)
— exactly 1 in the forward pass, but it hands the selected experts' gradient to W_r through the
straight-through top-k. Without it (the authors' release) W_r only masks and never learns.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from strcvit_bench.adapters.context import BatchContext
from strcvit_bench.adapters.experts import ExpertLoRA
from strcvit_bench.strlora import routing


class StrLoRALinear(ExpertLoRA):
    def __init__(self, base: nn.Linear, d_model: int, experts: int = 4, rank_per_expert: int = 16,
                 alpha: float = 128.0, dropout: float = 0.05, top_k: int = 2, router_dim: int = 64,
                 init_std: float = 0.01, task_select: bool = True, token_weights: bool = True,
                 stage1_grad: bool = True, tau: float = 1.0, context: BatchContext | None = None):
        super().__init__(base, experts, rank_per_expert, alpha, dropout, init_std=init_std, context=context)
        like = {"dtype": base.weight.dtype, "device": base.weight.device}
        self.router_Wr = nn.Parameter(torch.empty(experts, d_model, **like))
        self.router_Wq = nn.Parameter(torch.empty(router_dim, base.in_features, **like))
        self.router_Wk = nn.Parameter(torch.empty(router_dim, d_model, **like))
        self.router_P = nn.Parameter(torch.empty(experts, router_dim, **like))
        nn.init.kaiming_uniform_(self.router_Wr, a=math.sqrt(5))  # an nn.Linear's default, as released
        for p in (self.router_Wq, self.router_Wk):  # xavier_uniform, as released
            nn.init.xavier_uniform_(p)
        nn.init.normal_(self.router_P, std=router_dim ** -0.5)
        self.register_buffer("ema_Wq", self.router_Wq.detach().clone(), persistent=False)
        self.register_buffer("ema_Wk", self.router_Wk.detach().clone(), persistent=False)
        self.register_buffer("ema_P", self.router_P.detach().clone(), persistent=False)
        if not 1 <= top_k <= experts:
            raise ValueError(f"top_k must be in 1..{experts}, got {top_k}")
        self.top_k = top_k
        self.task_select, self.token_weights, self.stage1_grad, self.tau = task_select, token_weights, stage1_grad, tau
        self.stability_active = False  # set per chunk: the KL is on from chunk 1

    def instruction(self) -> torch.Tensor:
        """(B, d_model): the batch's instruction representation t, set by the method."""
        return self.context["instruction"]

    def select(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage 1: (gates, hard gates, mask) per sample."""
        t = self.instruction().to(self.router_Wr.dtype)
        if not self.task_select:  # ablation: every expert is a candidate
            mask = torch.ones(t.shape[0], self.experts, dtype=torch.bool, device=t.device)
            uniform = torch.full(mask.shape, 1.0 / self.experts, device=t.device)
            return uniform, uniform, mask
        return routing.stage1(t, self.router_Wr, self.top_k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates, hard, mask = self.select()
        t = self.instruction().to(x.dtype)
        mask3 = mask.unsqueeze(1)                                                  # (B, 1, E)
        self._aux = None
        if self.token_weights:
            router_map = routing.stage2_map(t, self.router_Wq, self.router_Wk, self.router_P)  # (B, d_in, E)
            teacher_map = None
            if self.stability_active and self.training:
                with torch.no_grad():
                    teacher_map = routing.stage2_map(t, self.ema_Wq, self.ema_Wk, self.ema_P)
            # each token's expert (straight-through top-1) and the routing-stability KL in one pass
            choice, kl = routing.TokenRouting.apply(x, router_map, teacher_map, mask3, self.context.mask_for(x),
                                                    self.tau)                      # (B, L, E), ()
            if teacher_map is not None:
                self._aux = kl  # the routing-stability KL
        else:  # ablation: the stage-1 gates weight every token of the sample
            choice = gates.unsqueeze(1).expand(x.shape[0], x.shape[1], self.experts)
        weights = choice
        if self.token_weights and self.task_select and self.stage1_grad:
            safe = torch.where(mask, hard, torch.ones_like(hard))
            factor = torch.where(mask, gates / safe, torch.zeros_like(gates))     # == 1 on the subset
            weights = choice * factor.unsqueeze(1)
        if self.recording:
            self.record_tokens(weights.detach(), self.context.mask_for(x))
            if x.shape[1] > 1:
                self.record_selection(mask.float())
        return self.base(x) + self.expert_delta(x, weights.to(x.dtype))

    @torch.no_grad()
    def copy_router_to_teacher(self) -> None:
        """The teacher is born as the router trained so far (the buffers hold nothing before)."""
        self.ema_Wq.copy_(self.router_Wq)
        self.ema_Wk.copy_(self.router_Wk)
        self.ema_P.copy_(self.router_P)

    def update_ema(self, momentum: float) -> None:
        routing.ema_update(self.ema_Wq, self.router_Wq, momentum)
        routing.ema_update(self.ema_Wk, self.router_Wk, momentum)
        routing.ema_update(self.ema_P, self.router_P, momentum)
