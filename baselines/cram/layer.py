"""The CRAM layer: frozen experts of adaptive rank stacked on the rank axis, plus trainable buffer blocks."""

from __future__ import annotations

import torch
from torch import nn

from strcvit_bench.adapters import LoRALinear
from strcvit_bench.adapters.context import BatchContext, RoutedLayer
from strcvit_bench.adapters.experts import RoutingStats
from strcvit_bench.adapters.routing import masked_mean
from strcvit_bench.baselines.cram.formulas import orthogonality_penalty


class CRAMLinear(LoRALinear, RoutingStats, RoutedLayer):
    """Frozen experts of per-layer adaptive rank plus trainable buffer blocks.

    Experts are stacked along the rank axis (`expert_A` (R, d_in), `expert_B` (d_out, R),
    `expert_of` (R,) naming each row's expert), so all of them cost two matmuls. The buffer is
    `lora_A`/`lora_B` split into `blocks` blocks of rank `rank`, scale α/rank; each training row
    uses its expert's block. Per sample, from the batch context: `weights` (B, E) routing over
    experts, `block` (B,) (−1: none), `block_weight` (B,), the weight of the expert the block
    extends, `owner` (B,) that expert, `gamma` (B,) the routing mass on the others, and
    `penalty_mask` (B, L) the tokens the penalty averages.
    """

    def __init__(self, base: nn.Linear, rank: int, blocks: int, alpha: float, dropout: float,
                 context: BatchContext | None = None):
        super().__init__(base, rank * blocks, alpha, dropout)
        self.bind(context)
        self.scale = alpha / rank
        self.rank, self.blocks = rank, blocks
        like = {"dtype": base.weight.dtype, "device": base.weight.device}
        self.register_buffer("expert_A", torch.zeros(0, base.in_features, **like), persistent=False)
        self.register_buffer("expert_B", torch.zeros(base.out_features, 0, **like), persistent=False)
        self.register_buffer("expert_of", torch.zeros(0, dtype=torch.long, device=like["device"]), persistent=False)
        self.experts = 0
        self.penalty_basis: dict[int, torch.Tensor] = {}    # per chunk: expert -> its group's other experts' basis
        self.recording = False
        self.reset_stats()

    # --- the stored experts ---------------------------------------------------------------

    def factors(self, expert: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.expert_of == expert
        return self.expert_A[rows], self.expert_B[:, rows]

    def set_experts(self, factors: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Replace all experts by `factors` [(A_e, B_e)], expert ids = list positions."""
        like = {"dtype": self.lora_A.dtype, "device": self.lora_A.device}
        self.expert_A = torch.cat([A.to(**like) for A, _ in factors]) if factors else self.expert_A[:0]
        self.expert_B = torch.cat([B.to(**like) for _, B in factors], 1) if factors else self.expert_B[:, :0]
        self.expert_of = torch.cat([torch.full((A.shape[0],), e, dtype=torch.long) for e, (A, _) in
                                    enumerate(factors)]).to(like["device"]) if factors else self.expert_of[:0]
        self.experts = len(factors)
        self.reset_stats()

    def block_factors(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.rank
        return self.lora_A[k * r:(k + 1) * r], self.scale * self.lora_B[:, k * r:(k + 1) * r]

    def expert_columns(self, experts: set[int]) -> torch.Tensor:
        keep = torch.tensor([e in experts for e in self.expert_of.tolist()], dtype=torch.bool)
        return self.expert_B[:, keep.to(self.expert_B.device)]

    # --- forward --------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        xd = self.dropout(x)
        ctx = self.context
        w, block = ctx.get("weights"), ctx.get("block")
        if self.expert_A.shape[0] and w is not None and w.shape[0] == x.shape[0]:
            h = (xd @ self.expert_A.t()) * w[:, self.expert_of].to(x.dtype)[:, None, :]
            out = out + h @ self.expert_B.t()
        self._aux = None
        if block is not None and block.shape[0] == x.shape[0]:
            k = block.clamp_min(0)
            A = self.lora_A.view(self.blocks, self.rank, -1)[k]                              # (B, r, d_in)
            B = self.lora_B.view(-1, self.blocks, self.rank).permute(1, 0, 2)[k]            # (B, d_out, r)
            bw = (ctx["block_weight"] * (block >= 0)).to(x.dtype) * self.scale
            out = out + torch.bmm(torch.bmm(xd, A.transpose(1, 2)), B.transpose(1, 2)) * bw[:, None, None]
            gamma = ctx.get("gamma")
            if self.training and self.penalty_basis and gamma is not None:
                xbar = masked_mean(x.detach(), ctx.get("penalty_mask"))[:, None, :]
                z = torch.bmm(torch.bmm(xbar, A.transpose(1, 2)), B.transpose(1, 2))[:, 0] * self.scale
                total = z.new_zeros(())
                for e, basis in self.penalty_basis.items():
                    idx = ((ctx["owner"] == e) & (block >= 0)).nonzero().flatten()
                    if idx.numel():
                        total = total + orthogonality_penalty(z[idx], basis.to(z.device), gamma[idx]) * idx.numel()
                self._aux = total / x.shape[0]  # the orthogonality penalty
        if self.recording and self.experts and w is not None and w.shape[0] == x.shape[0]:
            self.record_tokens(w[:, None, :].expand(x.shape[0], x.shape[1], self.experts), ctx.mask_for(x))
        return out
