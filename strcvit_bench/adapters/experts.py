"""A bank of E LoRA experts on one frozen linear layer, mixed by per-token weights.

y = W0 x + (α/r) Σ_e w_e · B_e A_e drop(x), with r the total rank (E × rank per expert), so
a mixture with E experts of rank r/E has the same parameter budget and the same scale as
one LoRA of rank r. All experts run as two matmuls (A stacked, B concatenated): weighting
the stacked rank dimension by w before B is exactly Σ_e w_e B_e A_e x, at LoRA's cost.

Routing statistics (mean weight and selection count per expert) accumulate while
`recording` is on, for the runner's routing analysis; `RoutingStats` is the part any routed
layer shares, whatever its structure (BranchLoRA's shared trunk, CRAM's growing experts).
"""

from __future__ import annotations

import torch
from torch import nn

from strcvit_bench.adapters.context import BatchContext, RoutedLayer
from strcvit_bench.adapters.lora import LoRALinear


class RoutingStats:
    """Per-expert routing statistics of one layer, collected while `recording` is on.

    `experts` may grow during a run (CRAM adds experts); `reset_stats` sizes the counters to it.
    """

    experts: int
    recording: bool = False

    def reset_stats(self) -> None:
        self.stat_weight = torch.zeros(self.experts, dtype=torch.float64)
        self.stat_tokens = 0
        self.stat_select = torch.zeros(self.experts, dtype=torch.float64)
        self.stat_samples = 0

    def record_tokens(self, weights: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Accumulate per-token expert weights (B, L, E) over the prompt; `mask` (B, L) marks real
        tokens. Decoding steps (L = 1) are left out: how many there are for a row depends on the
        other rows of its batch, and statistics must not depend on how evaluation is batched."""
        if not self.recording or (weights.dim() >= 3 and weights.shape[-2] == 1):
            return
        w = weights.detach().to(torch.float64).reshape(-1, self.experts)
        if mask is not None:
            w = w[mask.reshape(-1).bool()]
        self.stat_weight += w.sum(0).cpu()
        self.stat_tokens += w.shape[0]

    def record_selection(self, selected: torch.Tensor) -> None:
        """Accumulate per-sample expert selections (B, E) of 0/1."""
        if not self.recording:
            return
        self.stat_select += selected.detach().to(torch.float64).sum(0).cpu()
        self.stat_samples += selected.shape[0]


class ExpertLoRA(LoRALinear, RoutingStats, RoutedLayer):
    """A LoRA of rank E × rank_per_expert whose rank blocks are the experts (A's init bound
    depends only on the input width, so each block is initialised like a LoRA of its own)."""

    def __init__(self, base: nn.Linear, experts: int, rank_per_expert: int, alpha: float, dropout: float,
                 init_std: float | None = None, context: BatchContext | None = None):
        super().__init__(base, experts * rank_per_expert, alpha, dropout, init_std)
        self.bind(context)
        self.experts = experts
        self.rank_per_expert = rank_per_expert
        self.recording = False
        self.reset_stats()

    def expert_delta(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """(α/r) Σ_e w_e B_e A_e drop(x); `weights` broadcasts to x's leading shape + (E,)."""
        h = self.dropout(x) @ self.lora_A.t()
        h = (h.unflatten(-1, (self.experts, self.rank_per_expert)) * (weights * self.scale).unsqueeze(-1)).flatten(-2)
        return h @ self.lora_B.t()

    def expert_outputs(self, x: torch.Tensor, idx: list[int]) -> list[torch.Tensor]:
        """Unweighted (α/r) B_e A_e drop(x) for the experts in `idx` (for methods that mix outputs)."""
        h = self.dropout(x) @ self.lora_A.t()
        h = h.unflatten(-1, (self.experts, self.rank_per_expert))
        blocks = self.lora_B.unflatten(1, (self.experts, self.rank_per_expert))
        return [(h[..., e, :] * self.scale) @ blocks[:, e, :].t() for e in idx]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - subclasses route
        raise NotImplementedError
