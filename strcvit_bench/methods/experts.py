"""What every mixture-of-LoRA-experts method shares: expert sizing and routing analysis."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, model_validator

from strcvit_bench.adapters.experts import RoutingStats
from strcvit_bench.methods.base import Method, MethodOptions


class ExpertOptions(MethodOptions):
    experts: int = Field(4, ge=1, description="experts per target layer")
    rank_per_expert: int | None = Field(None, ge=1,
                                        description="rank of each expert (default: rank / experts, LoRA's budget)")

    @model_validator(mode="after")
    def _budget(self) -> ExpertOptions:
        if self.rank_per_expert is None and self.rank % self.experts:
            raise ValueError(f"rank {self.rank} is not divisible by experts {self.experts}; "
                             f"set rank_per_expert or a rank that divides")
        # a top-k above the experts would be clamped by the layer yet recorded as given, and
        # so make a leaderboard row of its own for a run identical to another
        for key in ("top_k", "freeze_top_k"):
            k = getattr(self, key, None)
            if isinstance(k, int) and k > self.experts:
                raise ValueError(f"{key} {k} exceeds experts {self.experts}")
        return self

    @property
    def per_expert(self) -> int:
        return self.rank_per_expert or self.rank // self.experts


class ExpertMethod(Method):
    """Base of the routed methods (MoELoRA, SMoLoRA, StrLoRA, BranchLoRA, CRAM): routing
    statistics over every adapted layer that keeps them."""

    def expert_layers(self) -> list[RoutingStats]:
        if getattr(self, "_expert_layers", None) is None:  # walked once, used for every batch
            self._expert_layers = [m for _, m in self.adapters(RoutingStats)]
        return self._expert_layers  # type: ignore[return-value]

    def routing_reset(self) -> None:
        for layer in self.expert_layers():
            layer.reset_stats()
            layer.recording = True

    def _reduce_stats(self, layers: list[RoutingStats], extra: torch.Tensor | None = None) -> torch.Tensor | None:
        """Sum every layer's counters (and `extra`) over ranks, in one collective."""
        p = self.ctx.parallel
        if not p.enabled:
            return extra
        parts = [t for layer in layers for t in (layer.stat_weight, layer.stat_select,
                                                   torch.tensor([layer.stat_tokens, layer.stat_samples],
                                                                dtype=torch.float64))]
        flat = p.sum_(torch.cat(parts + ([extra.double()] if extra is not None else [])))
        offset = 0
        for layer in layers:
            e = layer.experts
            layer.stat_weight = flat[offset: offset + e].clone()
            layer.stat_select = flat[offset + e: offset + 2 * e].clone()
            layer.stat_tokens, layer.stat_samples = int(flat[offset + 2 * e]), int(flat[offset + 2 * e + 1])
            offset += 2 * e + 2
        return flat[offset:].clone() if extra is not None else None

    def routing_summary(self) -> dict[str, Any] | None:
        layers = self.expert_layers()
        self._reduce_stats(layers)
        for layer in layers:
            layer.recording = False
        tokens = sum(layer.stat_tokens for layer in layers)
        if not layers or tokens == 0:
            return None
        weight = sum(layer.stat_weight for layer in layers) / tokens
        out: dict[str, Any] = {"mean_weight": [round(float(v), 6) for v in weight], "tokens": tokens}
        # per adapted layer too: an average over layers can hide layers that do separate tasks
        out["per_layer_mean_weight"] = [
            [round(float(v), 4) for v in layer.stat_weight / max(1, layer.stat_tokens)] for layer in layers]
        samples = sum(layer.stat_samples for layer in layers)
        if samples:
            select = sum(layer.stat_select for layer in layers) / samples
            out["selection_frequency"] = [round(float(v), 6) for v in select]
        return out
