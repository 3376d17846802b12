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

Stage 1 and the stage-2 maps depend on the batch's t and the router weights only, never on the
layer's input, so the method's `RouterBank` computes them for all its layers at once, the
layers' weights stacked by input width, once per batch: layer by layer they were some fifty small
ops a layer, forward and backward, the larger part of StrLoRA's extra step time on a small
model; a generation's decoding steps reuse the prompt's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
        self.bank: RouterBank | None = None  # set by the method: the routers of all its layers

    def instruction(self) -> torch.Tensor:
        """(B, d_model): the batch's instruction representation t, set by the method."""
        return self.context["instruction"]

    def select(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage 1: (gates, hard gates, mask) per sample."""
        plan = self.plan()
        return plan.gates, plan.hard, plan.mask

    def plan(self) -> RoutePlan:
        """This batch's routing decisions that do not depend on the layer's input: the bank's
        (computed once for all the method's layers), or this layer's own if it has no bank."""
        bank = self.bank
        if bank is None:
            return RouterBank([self]).plans(self.instruction())[0]
        key = ("strlora-plans", id(bank), self.training, torch.is_grad_enabled())
        return self.context.shared(key, lambda: bank.plans(self.instruction()))[bank.index[id(self)]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self.plan()
        mask3 = plan.mask.unsqueeze(1)                                             # (B, 1, E)
        self._aux = None
        if self.token_weights:
            # each token's expert (straight-through top-1) and the routing-stability KL in one pass
            choice, kl = routing.TokenRouting.apply(x, plan.router_map, plan.teacher_map, mask3,
                                                    self.context.mask_for(x), self.tau)  # (B, L, E), ()
            if plan.teacher_map is not None:
                self._aux = kl  # the routing-stability KL
        else:  # ablation: the stage-1 gates weight every token of the sample
            choice = plan.gates.unsqueeze(1).expand(x.shape[0], x.shape[1], self.experts)
        weights = choice if plan.factor is None else choice * plan.factor.unsqueeze(1)
        if self.recording:
            self.record_tokens(weights.detach(), self.context.mask_for(x))
            if x.shape[1] > 1:
                self.record_selection(plan.mask.float())
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


@dataclass
class RoutePlan:
    """One layer's input-independent routing for a batch: stage 1's (gates, hard, mask) (B, E),
    the stage-2 maps of the router and of its EMA teacher (B, d_in, E; None when unused), and
    the factor g_e / sg(g_e) on the selected experts that hands W_r its gradient (None without
    it)."""

    gates: torch.Tensor
    hard: torch.Tensor
    mask: torch.Tensor
    router_map: torch.Tensor | None
    teacher_map: torch.Tensor | None
    factor: torch.Tensor | None


class RouterBank:
    """The routers of a set of StrLoRA layers, evaluated together: their weights stacked (per
    input width, the maps' shape) and stage 1 and the maps computed in batched products — the same
    formulas as one layer's, a handful of ops a batch instead of some fifty per layer."""

    def __init__(self, layers: list[StrLoRALinear]):
        self.layers = layers
        self.index = {id(layer): i for i, layer in enumerate(layers)}
        groups: dict[tuple, list[int]] = {}
        for i, layer in enumerate(layers):
            w = layer.router_Wq
            groups.setdefault((w.shape[1], w.dtype, w.device), []).append(i)
        self.groups = list(groups.values())
        first = layers[0]
        self.options = (first.experts, first.top_k, first.task_select, first.token_weights, first.stage1_grad)
        for layer in layers:  # one method's layers: made with the same options
            if (layer.experts, layer.top_k, layer.task_select, layer.token_weights, layer.stage1_grad) != self.options:
                raise ValueError("a RouterBank's layers must share their routing options")

    def plans(self, instruction: torch.Tensor) -> list[RoutePlan]:
        experts, top_k, task_select, token_weights, stage1_grad = self.options
        out: list[RoutePlan | None] = [None] * len(self.layers)
        for group in self.groups:
            layers = [self.layers[i] for i in group]
            n, first = len(layers), layers[0]
            t = instruction.to(first.router_Wr.dtype)
            if task_select:
                gates, hard, mask = routing.stage1(t, torch.stack([m.router_Wr for m in layers]), top_k)
            else:  # ablation: every expert is a candidate
                mask = torch.ones(n, t.shape[0], experts, dtype=torch.bool, device=t.device)
                gates = hard = torch.full(mask.shape, 1.0 / experts, device=t.device)
            maps = teachers = factors = None
            if token_weights:
                maps = routing.stage2_maps(t, torch.stack([m.router_Wq for m in layers]),
                                           torch.stack([m.router_Wk for m in layers]),
                                           torch.stack([m.router_P for m in layers])).unbind(0)
                if any(m.stability_active and m.training for m in layers):
                    with torch.no_grad():
                        teachers = routing.stage2_maps(t, torch.stack([m.ema_Wq for m in layers]),
                                                       torch.stack([m.ema_Wk for m in layers]),
                                                       torch.stack([m.ema_P for m in layers])).unbind(0)
                if task_select and stage1_grad:
                    safe = torch.where(mask, hard, torch.ones_like(hard))
                    factors = torch.where(mask, gates / safe, torch.zeros_like(gates)).unbind(0)  # == 1 on the subset
            for j, (i, layer) in enumerate(zip(group, layers, strict=True)):
                teacher = teachers[j] if teachers is not None and layer.stability_active and layer.training else None
                out[i] = RoutePlan(gates[j], hard[j], mask[j], maps[j] if maps is not None else None, teacher,
                                   factors[j] if factors is not None else None)
        return out  # type: ignore[return-value]
