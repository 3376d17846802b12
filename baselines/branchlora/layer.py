"""The BranchLoRA layer: one shared trunk A, N branches B_i, a router per cluster."""

from __future__ import annotations

import torch
from torch import nn

from strcvit_bench.adapters import LoRALinear
from strcvit_bench.adapters.context import BatchContext, RoutedLayer
from strcvit_bench.adapters.experts import RoutingStats
from strcvit_bench.adapters.routing import masked_mean, topk_gates


class BranchLoRALinear(LoRALinear, RoutingStats, RoutedLayer):
    """Shared trunk `lora_A` (r × d_in), branches `lora_B{i}` (d_out × r), one router per cluster."""

    def __init__(self, base: nn.Linear, branches: int, rank: int, alpha: float, dropout: float, top_k: int,
                 context: BatchContext | None = None):
        super().__init__(base, rank, alpha, dropout)
        self.bind(context)
        del self.lora_B  # one B per branch instead
        like = {"dtype": base.weight.dtype, "device": base.weight.device}
        for i in range(branches):
            self.register_parameter(f"lora_B{i}", nn.Parameter(torch.zeros(base.out_features, rank, **like)))
        self.experts = branches
        self.top_k = top_k
        self.routers = 0
        self.usage = torch.zeros(branches, device=base.weight.device)
        self.recording = False
        self.reset_stats()

    def branch(self, i: int) -> nn.Parameter:
        return getattr(self, f"lora_B{i}")

    def router(self, c: int) -> nn.Parameter:
        return getattr(self, f"router_W{c}")

    def add_router(self) -> tuple[str, nn.Parameter]:
        w = self.lora_A
        p = nn.Parameter(torch.empty(self.experts, self.in_features, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(p, a=5 ** 0.5)  # nn.Linear's default
        name = f"router_W{self.routers}"
        self.register_parameter(name, p)
        self.routers += 1
        return name, p

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N) top-k gates of each sample's own router (the batch context's `clusters`: their
        unique values and inverse), read from its prompt tokens (`token_mask`: the prompt only);
        kept for the single-token decoding steps that follow the prompt."""
        clusters = self.context.get("clusters")
        if self.routers == 0 or clusters is None:
            return x.new_zeros(x.shape[0], self.experts)
        return self.context.on_prompt(self, x, lambda: self._route(x, *clusters))

    def _route(self, x: torch.Tensor, uniq: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        W = torch.stack([self.router(int(c)) for c in uniq.tolist()])[inverse]  # (B, N, d_in)
        logits = torch.einsum("bnd,bd->bn", W, masked_mean(x, self.context.token_mask))
        return topk_gates(torch.softmax(logits.float(), -1), self.top_k).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gates(x)
        h = self.dropout(x) @ self.lora_A.t()                                          # (B, L, r)
        # Σ_i g_i s B_i h as one matmul: weight the rank side per branch, then all branches at
        # once (a frozen branch gets no gradient through the concatenation)
        hg = (h.unsqueeze(-2) * (g * self.scale)[:, None, :, None]).flatten(-2)      # (B, L, N·r)
        out = self.base(x) + hg @ torch.cat([self.branch(i) for i in range(self.experts)], dim=1).t()
        if self.training:
            self.usage += g.detach().float().sum(0)
        if self.recording:
            self.record_tokens(g[:, None, :].expand(x.shape[0], x.shape[1], self.experts), self.context.mask_for(x))
            if x.shape[1] > 1:
                self.record_selection((g > 0).to(g.dtype))
        return out
