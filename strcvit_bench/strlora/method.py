"""The StrLoRA method: wires the two-stage router, the EMA reference and the stability loss.

Defaults follow the authors (docs/methods.md) except where we differ on purpose: the
instruction is mean-pooled over its real tokens (`pooling=with_padding` averages padding rows
too, as their training code does), stage 1 learns through its straight-through top-k
(`stage1_grad=false` reproduces their mask-only W_r), and router freezing after a chunk is an
explicit option (`freeze_router_after=4` is their `--freeze_attn`, below), off by default. The
rank budget defaults to the LoRA baseline's (4 experts x rank/4); the authors use 4 x 16 with
alpha 128 on 8B models (`--preset authors`, or `--opt rank=64 --opt alpha=128`).

`freeze_router_after` is the first 0-based chunk whose router is frozen: the released scripts
freeze it from their data_005 on (`idx_num -gt 4` → `--freeze_attn`), i.e. `freeze_router_after=4`.

The stage-2 query/key width defaults to 64 · hidden / 4096 (at least 4): the authors' 64 was
chosen for 4096-wide LLMs, and kept at 64 on a 256-wide model the router alone is five times
LoRA's adapter, so a comparison would measure size, not routing. `router_dim=64` is theirs.

The routing-stability teacher is an EMA copy of the stage-2 router (W_q, W_k, P) born as in the
release (sft.py `init_router_distill_ema_from_loaded_adapter`): at the first chunk where the
loss is on (chunk 1) it is a copy of the router trained so far, then it follows every optimiser
step and is carried across chunks; it is never updated while the loss is off. A teacher that
started from the random initialisation would still be ~88 % initialisation after chunk 0's
~125 steps at β = 0.999, and the loss would pull the routing back toward random. The KL is
averaged over each batch's real tokens (the release averages over all positions, padding
included, which weights a sample by its padding).

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
from strcvit_bench.models.views import text_view
from strcvit_bench.strlora import routing
from strcvit_bench.strlora.layer import RouterBank, StrLoRALinear


class StrLoRAOptions(ExpertOptions):
    top_k: int = Field(2, ge=1, description="experts selected per sample by stage 1")
    router_dim: int | None = Field(None, ge=1, description="query/key/prototype dimension of stage 2 "
                                   "(default: 64 * hidden / 4096, at least 4; the authors: 64)")
    init_std: float = Field(0.01, gt=0, description="std of the experts' A init")
    ema_momentum: float = Field(0.999, ge=0, lt=1, description="momentum β of the EMA router reference")
    stability_weight: float = Field(0.1, ge=0, description="λ of the routing-stability KL")
    tau: float = Field(1.0, gt=0, description="temperature of the routing softmax")
    task_select: bool = Field(True, description="stage 1: task-aware expert selection (ablation switch)")
    token_weights: bool = Field(True, description="stage 2: token-wise weighting (ablation switch)")
    stability: bool = Field(True, description="routing-stability regularisation (ablation switch)")
    stage1_grad: bool = Field(True, description="train W_r through its straight-through top-k (false: authors)")
    pooling: Literal["masked", "with_padding"] = Field("masked", description="instruction pooling")
    freeze_router_after: int | None = Field(None, ge=0, description="first 0-based chunk whose router is frozen "
                                            "(the authors: 4)")

def default_router_dim(hidden: int) -> int:
    """The authors' width 64 at hidden 4096, scaled with the LLM's width."""
    return max(4, round(64 * hidden / 4096))


class StrLoRA(ExpertMethod):
    name = "strlora"
    description = ("StrLoRA: instruction-driven top-k expert selection, token-wise cross-modal weighting, "
                   "EMA routing-stability KL")
    Options = StrLoRAOptions

    def __init__(self, options: StrLoRAOptions, ctx) -> None:
        super().__init__(options, ctx)
        self.teacher_born: int | None = None  # the chunk whose start copied the router into the teacher
        self.stability_on = False
        self._step_kls: list[torch.Tensor] = []
        self._chunk_kls: list[torch.Tensor] = []

    def attach(self) -> None:
        o = self.options
        d_model = self.ctx.bundle.input_embeddings().weight.shape[1]
        self.router_dim = o.router_dim or default_router_dim(d_model)
        inject(self.model, self.ctx.bundle.target_modules,
               lambda name, layer: StrLoRALinear(
                   layer, d_model, o.experts, o.per_expert, o.alpha, o.dropout, o.top_k, self.router_dim, o.init_std,
                   o.task_select, o.token_weights, o.stage1_grad, o.tau, self.batch_context))
        self._layers = None
        bank = RouterBank(self.layers())  # all routers at once, once per batch
        for layer in self.layers():
            layer.bank = bank
        # decided when the model's forward starts, before any layer runs: under gradient
        # checkpointing a block's recomputation must find them made, as its first pass did
        self.model.register_forward_pre_hook(self._decide_routing)

    def _decide_routing(self, module: torch.nn.Module, args: Any) -> None:
        self.layers()[0].plan()  # the bank's plans for every layer, kept in the batch context

    def layers(self) -> list[StrLoRALinear]:
        if getattr(self, "_layers", None) is None:  # walked once: this runs for every batch and step
            self._layers = [m for _, m in self.adapters(StrLoRALinear)]
        return self._layers  # type: ignore[return-value]

    def before_chunk(self, index: int, rows: Rows) -> None:
        o = self.options
        active = o.stability and o.stability_weight > 0 and index >= 1  # off in the first chunk
        frozen = o.freeze_router_after is not None and index >= o.freeze_router_after
        if active and self.teacher_born is None:
            for layer in self.layers():
                layer.copy_router_to_teacher()
            self.teacher_born = index
        self.stability_on = active
        self._step_kls, self._chunk_kls = [], []
        for layer in self.layers():
            layer.stability_active = active
            for name, p in layer.named_parameters(recurse=False):
                if name.startswith("router_"):
                    p.requires_grad_(not frozen)

    def before_forward(self, batch: dict[str, torch.Tensor], rows: Rows) -> None:
        t = text_view(self.ctx.bundle, batch, masked=self.options.pooling == "masked")
        self.batch_context.begin(batch.get("attention_mask"), instruction=t)

    def loss(self, task_loss: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        kls = self.aux_losses()
        if not kls:
            return task_loss
        kl = torch.stack(kls).mean()
        self._step_kls.append(kl.detach())
        return task_loss + self.options.stability_weight * kl

    def after_step(self) -> None:
        if self._step_kls:  # the step's KL, over its micro-batches
            self._chunk_kls.append(torch.stack(self._step_kls).mean())
            self._step_kls = []
        if not self.stability_on:
            return  # the teacher does not exist yet, or the loss is off: it stays as it is
        layers = self.layers()
        routing.ema_update_all([b for m in layers for b in (m.ema_Wq, m.ema_Wk, m.ema_P)],
                               [p for m in layers for p in (m.router_Wq, m.router_Wk, m.router_P)],
                               self.options.ema_momentum)

    def chunk_stats(self) -> dict[str, Any]:
        """The stability KL at the chunk's first optimiser step (0 right after the teacher is
        copied) and over the chunk: whether the loss anchors the routing to what was learned."""
        kls = [float(k) for k in self._chunk_kls]
        return {"stability_kl_first_step": kls[0] if kls else None,
                "stability_kl_mean": sum(kls) / len(kls) if kls else None,
                "teacher_born_chunk": self.teacher_born}

    def info(self) -> dict[str, Any]:
        return {"router_dim": self.router_dim, "teacher_born_chunk": self.teacher_born}

    def synchronize(self) -> None:
        """The EMA references follow identical parameters on every rank; averaging them once per
        chunk keeps float drift from ever separating the ranks' stability targets."""
        if self.teacher_born is None:
            return
        for layer in self.layers():
            for buf in (layer.ema_Wq, layer.ema_Wk, layer.ema_P):
                self.ctx.parallel.mean_(buf)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The teacher once it exists; before that nothing (a resumed run copies the router at
        the chunk where the loss turns on, as an uninterrupted one does)."""
        tensors = {}
        if self.teacher_born is not None:
            for name, layer in self.adapters(StrLoRALinear):
                for buf in ("ema_Wq", "ema_Wk", "ema_P"):
                    tensors[f"{name}.{buf}"] = getattr(layer, buf)
        return tensors, {"teacher_born_chunk": self.teacher_born}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.teacher_born = meta.get("teacher_born_chunk")
        if self.teacher_born is None:
            return
        with torch.no_grad():
            for name, layer in self.adapters(StrLoRALinear):
                for buf in ("ema_Wq", "ema_Wk", "ema_P"):
                    getattr(layer, buf).copy_(tensors[f"{name}.{buf}"])
