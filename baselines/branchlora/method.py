"""BranchLoRA (Zhang et al., ACL 2025, arXiv 2506.02041), adapted to streams.

What the paper specifies. An asymmetric MoELoRA: one shared trunk A (MoELoRA's per-expert A
matrices converge, so one suffices) and N branch matrices B_i; y = W0 x + (α/r) Σ_{i∈top-k}
g_i B_i A x with g the top-k (k = 2 of N = 8) renormalised softmax of a router W_r. After a
task, the k branches its router used most are frozen (tuning-freezing: later tasks may route to
frozen branches, but only tunable ones learn). A new router is added for every task, so old
tasks keep the branch mixture they were trained with instead of one that drifts to the newest
task. A task selector picks the router at test time from learned task keys (an image key and a
text key per task, trained by L_align = Σ(1 − cos(e_img, k_img)) + Σ(1 − cos(e_txt, k_txt))).

What a stream changes, and what we do:
- A phase is a chunk (the obvious reading). Freezing happens after every chunk.
- A chunk mixes tasks and task ids are hidden, so a "task" is a cluster of what the deployed
  model sees: each sample's text view (the instruction's MiniLM embedding, `text_encoder`) and
  image view (the decoder's mean input embedding at image positions; see models/views.py).
  At a chunk's start every row is assigned to the cluster whose keys are most similar
  (mean of the two cosines); a row below `key_threshold` opens a new cluster, and a new cluster
  gets a new router in every layer. The paper's "router per task" is our "router per cluster".
- Keys are the normalised mean of their members' normalised views, which is the closed-form
  minimiser of the paper's L_align, so no gradient steps are spent on them. Training rows use
  the router of their assigned cluster (the paper: of the current task); test rows go through
  the selector (nearest keys), exactly as the paper's inference.
- A cluster's router trains whenever the cluster has rows in the chunk (recurring tasks return
  to their router); routers of absent clusters are frozen.
- A stream has more phases than branches (25 chunks, 4–8 branches): freezing k per chunk would
  freeze everything by chunk N/k. The frozen set is therefore bounded: when fewer than
  `min_tunable` branches remain tunable, the branch frozen longest ago is thawed. A branch that
  is again among the most used is re-frozen as the newest.
- The router reads the sample's mean layer input over its prompt tokens. The paper routes on
  the first token, which in a causal decoder behind a fixed BOS is the same for every input.
- Rank budget: the trunk has LoRA's rank r and each branch maps it back (r columns), so the
  update has the same rank budget as LoRA's; the parameter count (trunk + N branches + routers)
  is reported. The paper's setting is N = 8, r = 128, α = 256, k = 2.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from strcvit_bench.adapters import inject
from strcvit_bench.baselines.branchlora.keys import TaskKeys, refreeze
from strcvit_bench.baselines.branchlora.layer import BranchLoRALinear
from strcvit_bench.methods.base import MethodOptions, Rows
from strcvit_bench.methods.experts import ExpertMethod
from strcvit_bench.models.views import ImageTap, SampleViews


class BranchLoRAOptions(MethodOptions):
    experts: int = Field(4, ge=1, description="branches B_i sharing one trunk A (the paper: 8)")
    top_k: int = Field(2, ge=1, description="branches mixed per sample")
    freeze_top_k: int | None = Field(None, ge=0, description="most used branches frozen after each chunk "
                                                               "(default: top_k)")
    min_tunable: int | None = Field(None, ge=0, description="branches kept tunable; the oldest frozen are "
                                                             "thawed below it (default: top_k)")
    key_threshold: float = Field(0.4, ge=-1, le=1, description="a row less similar than this to every cluster's "
                                                                "keys opens a new cluster (and router)")
    max_routers: int = Field(16, ge=1, description="clusters (routers) at most")
    text_encoder: Literal["minilm", "llm_embeddings"] = Field(
        "minilm", description="text view for the task keys: all-MiniLM-L6-v2 or the LLM's input embeddings")

    @model_validator(mode="after")
    def _sizes(self) -> BranchLoRAOptions:
        for key in ("top_k", "freeze_top_k", "min_tunable"):
            value = getattr(self, key)
            if value is not None and value > self.experts:
                raise ValueError(f"{key}={value} exceeds experts={self.experts}")
        return self


class BranchLoRA(ExpertMethod):
    name = "branchlora"
    description = "shared LoRA trunk with branch B's, per-cluster routers, top-k branch freezing (BranchLoRA)"
    Options = BranchLoRAOptions

    def attach(self) -> None:
        o = self.options
        inject(self.model, self.ctx.bundle.target_modules,
               lambda name, layer: BranchLoRALinear(layer, o.experts, o.rank, o.alpha, o.dropout, o.top_k,
                                                    self.batch_context))
        self.views = SampleViews(self.ctx.bundle, o.text_encoder)
        self.keys = TaskKeys()
        self.assigned: dict[str, int] = {}
        self.frozen: dict[str, list[int]] = {name: [] for name, _ in self.named_layers()}
        self.choices: torch.Tensor | None = None
        self._pending_text: torch.Tensor | None = None
        self.tap = ImageTap(self.ctx.bundle, self._on_image)

    def named_layers(self) -> list[tuple[str, BranchLoRALinear]]:
        if getattr(self, "_named", None) is None:
            self._named = self.adapters(BranchLoRALinear)
        return self._named  # type: ignore[return-value]

    def _add_router(self) -> None:
        self.add_params({f"{name}.{pname}": p for name, layer in self.named_layers()
                         for pname, p in [layer.add_router()]})

    def _set_clusters(self, clusters: torch.Tensor) -> None:
        self.batch_context.update(clusters=clusters.unique(return_inverse=True))  # once per batch, every layer
        if any(layer.recording for _, layer in self.named_layers()):
            counts = torch.bincount(clusters.cpu(), minlength=len(self.keys)).double()
            self.choices = counts if self.choices is None else self.choices + counts

    def before_chunk(self, index: int, rows: Rows) -> None:
        o = self.options
        text, image = self.views.rows(rows)
        assigned, opened = self.keys.assign(text, image, o.key_threshold, o.max_routers)
        for _ in opened:
            self._add_router()
        self.assigned = {r["id"]: c for r, c in zip(rows, assigned, strict=True)}
        present = set(assigned)
        for name, layer in self.named_layers():
            for c in range(layer.routers):
                layer.router(c).requires_grad_(c in present)
            for i in range(layer.experts):
                layer.branch(i).requires_grad_(i not in self.frozen[name])
            layer.usage.zero_()

    def before_forward(self, batch: dict[str, torch.Tensor], rows: Rows) -> None:
        mask = batch["attention_mask"].bool()
        if "labels" in batch:  # route on the prompt only, as at generation time
            mask = mask & (batch["labels"] == -100)
        self.batch_context.begin(mask)  # the router reads the prompt's tokens
        ids = [r.get("id") for r in rows]
        self._pending_text = None
        if ids and all(i in self.assigned for i in ids):  # this chunk's rows: their assigned cluster
            self._set_clusters(torch.tensor([self.assigned[i] for i in ids], device=mask.device))
        elif len(self.keys):  # anything else goes through the task selector once the image is seen
            self._pending_text = self.views.text(batch, rows)
        self.tap.set_batch(batch)

    def _on_image(self, image: torch.Tensor) -> None:
        if self._pending_text is not None:
            self._set_clusters(self.keys.select(self._pending_text, image))

    def after_chunk(self, index: int, rows: Rows) -> None:
        o = self.options
        k = o.top_k if o.freeze_top_k is None else o.freeze_top_k
        keep = o.top_k if o.min_tunable is None else o.min_tunable
        for name, layer in self.named_layers():
            usage = self.ctx.parallel.sum_(layer.usage)  # every rank saw a share of the chunk
            self.frozen[name] = refreeze(self.frozen[name], usage.cpu(), k, keep)

    # --- analysis and state ---------------------------------------------------------------------

    def routing_reset(self) -> None:
        super().routing_reset()
        self.choices = None

    def routing_summary(self) -> dict[str, Any] | None:
        out = super().routing_summary()
        n = len(self.keys)
        counts = self.choices if self.choices is not None else torch.zeros(n, dtype=torch.float64)
        counts = self.ctx.parallel.sum_(torch.nn.functional.pad(counts, (0, max(0, n - counts.numel()))))
        if out is not None and counts.sum() > 0:
            out["router_choice"] = [round(float(v), 6) for v in counts / counts.sum()]
        return out

    def info(self) -> dict[str, Any]:
        return {"routers": len(self.keys), "cluster_sizes": list(self.keys.counts),
                "frozen_branches_per_layer": sorted({len(v) for v in self.frozen.values()})}

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {}
        if len(self.keys):
            tensors = {"keys.text_sum": self.keys.text_sum, "keys.image_sum": self.keys.image_sum}
        return tensors, {"counts": self.keys.counts, "frozen": self.frozen}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.keys = TaskKeys()
        if meta["counts"]:
            self.keys.text_sum, self.keys.image_sum = tensors["keys.text_sum"], tensors["keys.image_sum"]
            self.keys.counts = list(meta["counts"])
        while self.named_layers()[0][1].routers < len(self.keys):
            self._add_router()
        self.frozen = {name: list(v) for name, v in meta["frozen"].items()}
