"""The StrLoRA method: wires the two-stage router, the EMA reference and the stability loss.

Defaults follow the authors (DESIGN.md §3a) except where §7 says we differ on purpose: the
instruction is mean-pooled over its real tokens (`pooling=with_padding` averages padding rows
too, as their training code does), stage 1 learns through its straight-through top-k
(`stage1_grad=false` reproduces their mask-only W_r), and router freezing after a chunk is an
explicit option (`freeze_router_after=3` is their `--freeze_attn` after chunk 4, 1-based), off
by default. The rank budget defaults to the LoRA baseline's (4 experts x rank/4); the authors
use 4 x 16 with alpha 128 on 8B models (`--opt rank=64 alpha=128`).

Ablations: `task_select=false` (no stage 1: all experts are candidates), `token_weights=false`
(no stage 2: the sample's stage-1 gates weight all its tokens), `stability=false` (no KL).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from strcvit_bench.adapters import inject
from strcvit_bench.methods.base import Rows
from strcvit_bench.methods.experts import ExpertMethod, ExpertOptions
from strcvit_bench.strlora.layer import StrLoRALinear


class StrLoRAOptions(ExpertOptions):
    top_k: int = Field(2, ge=1, description="experts selected per sample by stage 1")
    router_dim: int = Field(64, ge=1, description="query/key/prototype dimension of stage 2")
    init_std: float = Field(0.01, gt=0, description="std of the experts' A init")
    ema_momentum: float = Field(0.999, ge=0, lt=1, description="momentum β of the EMA router reference")
    stability_weight: float = Field(0.1, ge=0, description="λ of the routing-stability KL")
    tau: float = Field(1.0, gt=0, description="temperature of the routing softmax")
    task_select: bool = Field(True, description="stage 1: task-aware expert selection (ablation switch)")
    token_weights: bool = Field(True, description="stage 2: token-wise weighting (ablation switch)")
    stability: bool = Field(True, description="routing-stability regularisation (ablation switch)")
    stage1_grad: bool = Field(True, description="train W_r through its straight-through top-k (false: authors)")
    pooling: Literal["masked", "with_padding"] = Field("masked", description="instruction pooling")
    freeze_router_after: int | None = Field(None, ge=0, description="freeze all router weights from this chunk on")


class StrLoRA(ExpertMethod):
    name = "strlora"
    description = ("StrLoRA: instruction-driven top-k expert selection, token-wise cross-modal weighting, "
                   "EMA routing-stability KL")
    Options = StrLoRAOptions

    def attach(self) -> None:
        o = self.options
        d_model = self.ctx.bundle.input_embeddings().weight.shape[1]
        inject(self.model, self.ctx.bundle.target_modules,
               lambda name, layer: StrLoRALinear(
                   layer, d_model, o.experts, o.per_expert, o.alpha, o.dropout, o.top_k, o.router_dim, o.init_std,
                   o.task_select, o.token_weights, o.stage1_grad, o.tau))

    def layers(self) -> list[StrLoRALinear]:
        if getattr(self, "_layers", None) is None:  # walked once: this runs for every batch and step
            self._layers = [m for _, m in self.adapters(StrLoRALinear)]
        return self._layers  # type: ignore[return-value]

    def before_chunk(self, index: int, rows: Rows) -> None:
        o = self.options
        active = o.stability and o.stability_weight > 0 and index >= 1  # off in the first chunk
        frozen = o.freeze_router_after is not None and index >= o.freeze_router_after
        for layer in self.layers():
            layer.stability_active = active
            for name, p in layer.named_parameters(recurse=False):
                if name.startswith("router_"):
                    p.requires_grad_(not frozen)

    def before_forward(self, batch: dict[str, torch.Tensor], rows: Rows) -> None:
        t = self.instruction_embedding(self.ctx.bundle, batch, masked=self.options.pooling == "masked")
        mask = batch.get("attention_mask")
        for layer in self.layers():
            layer.t = t
            layer.token_mask = mask

    def loss(self, task_loss: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        kls = [layer.kl for layer in self.layers() if layer.kl is not None]
        if not kls:
            return task_loss
        return task_loss + self.options.stability_weight * torch.stack(kls).mean()

    def after_step(self) -> None:
        for layer in self.layers():
            layer.update_ema(self.options.ema_momentum)

    def synchronize(self) -> None:
        """The EMA references follow identical parameters on every rank; averaging them once per
        chunk keeps float drift from ever separating the ranks' stability targets."""
        for layer in self.layers():
            for buf in (layer.ema_Wq, layer.ema_Wk, layer.ema_P):
                self.ctx.parallel.mean_(buf)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {}
        for name, layer in self.adapters(StrLoRALinear):
            for buf in ("ema_Wq", "ema_Wk", "ema_P"):
                tensors[f"{name}.{buf}"] = getattr(layer, buf)
        return tensors, {}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        with torch.no_grad():
            for name, layer in self.adapters(StrLoRALinear):
                for buf in ("ema_Wq", "ema_Wk", "ema_P"):
                    getattr(layer, buf).copy_(tensors[f"{name}.{buf}"])
