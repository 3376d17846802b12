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
  image view (the decoder's mean input embedding at image positions; see methods/features.py).
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
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from baselines.moelora import topk_renormalise
from strcvit_bench.adapters import LoRALinear, inject
from strcvit_bench.adapters.experts import RoutingStats
from strcvit_bench.methods.base import MethodOptions, Rows
from strcvit_bench.methods.experts import ExpertMethod
from strcvit_bench.methods.features import ImageTap, SampleViews, masked_mean

# --- the pure parts: task keys, the selector, the freezing rule -----------------------------------


def alignment_loss(key: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """The paper's L_align for one key and its members' views: Σ_i (1 − cos(e_i, k))."""
    return (1 - F.cosine_similarity(members, key.unsqueeze(0), dim=-1)).sum()


class TaskKeys:
    """Text and image keys per cluster; key = normalised mean of the members' normalised views."""

    def __init__(self) -> None:
        self.text_sum: torch.Tensor | None = None   # (C, d_text)
        self.image_sum: torch.Tensor | None = None  # (C, d_image)
        self.counts: list[int] = []

    def __len__(self) -> int:
        return len(self.counts)

    def similarity(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """(B, C): mean of the text and image cosines to every cluster's keys."""
        assert self.text_sum is not None and self.image_sum is not None
        t = F.normalize(text.float(), dim=-1) @ F.normalize(self.text_sum, dim=-1).t().to(text.device)
        v = F.normalize(image.float(), dim=-1) @ F.normalize(self.image_sum, dim=-1).t().to(image.device)
        return (t + v) / 2

    def select(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """The task selector: each sample's most similar cluster."""
        return self.similarity(text, image).argmax(-1)

    def add(self, c: int, text: torch.Tensor, image: torch.Tensor) -> None:
        t, v = F.normalize(text.float(), dim=-1), F.normalize(image.float(), dim=-1)
        if c == len(self.counts):
            self.text_sum = t[None] if self.text_sum is None else torch.cat([self.text_sum, t[None]])
            self.image_sum = v[None] if self.image_sum is None else torch.cat([self.image_sum, v[None]])
            self.counts.append(1)
            return
        self.text_sum[c] += t  # type: ignore[index]
        self.image_sum[c] += v  # type: ignore[index]
        self.counts[c] += 1

    def assign(self, text: torch.Tensor, image: torch.Tensor, threshold: float,
               max_clusters: int) -> tuple[list[int], list[int]]:
        """Rows in order: join the most similar cluster, or open one below `threshold` (leader
        clustering; deterministic). Returns each row's cluster and the clusters opened."""
        assigned, opened = [], []
        for t, v in zip(text, image, strict=True):
            if len(self):
                sims = self.similarity(t[None], v[None])[0]
                c = int(sims.argmax())
                if float(sims[c]) < threshold and len(self) < max_clusters:
                    c = len(self)
            else:
                c = 0
            if c == len(self):
                opened.append(c)
            self.add(c, t, v)
            assigned.append(c)
        return assigned, opened


def refreeze(frozen: list[int], usage: torch.Tensor, k: int, min_tunable: int) -> list[int]:
    """After a phase: the k most used branches become the newest frozen ones; if fewer than
    `min_tunable` branches stay tunable, the branch frozen longest ago is thawed first."""
    top = [int(i) for i in usage.argsort(descending=True, stable=True)[:k]]
    order = [b for b in frozen if b not in top] + sorted(top, key=lambda b: -float(usage[b]))[::-1]
    while len(usage) - len(order) < min_tunable and order:
        order.pop(0)
    return order


# --- the layer ---------------------------------------------------------------------------------------


class BranchLoRALinear(LoRALinear, RoutingStats):
    """Shared trunk `lora_A` (r × d_in), branches `lora_B{i}` (d_out × r), one router per cluster."""

    def __init__(self, base: nn.Linear, branches: int, rank: int, alpha: float, dropout: float, top_k: int):
        super().__init__(base, rank, alpha, dropout)
        del self.lora_B  # one B per branch instead
        like = {"dtype": base.weight.dtype, "device": base.weight.device}
        for i in range(branches):
            self.register_parameter(f"lora_B{i}", nn.Parameter(torch.zeros(base.out_features, rank, **like)))
        self.experts = branches
        self.top_k = top_k
        self.routers = 0
        self.cluster: torch.Tensor | None = None      # (B,) each sample's router
        self.cluster_index: tuple[torch.Tensor, torch.Tensor] | None = None  # its unique values, inverse
        self.prompt_mask: torch.Tensor | None = None  # (B, L) the tokens the router reads
        self._gates: torch.Tensor | None = None
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
        """(B, N) top-k gates of each sample's own router, read from its prompt tokens; kept
        for the single-token decoding steps that follow the prompt."""
        if x.shape[1] == 1 and self._gates is not None and self._gates.shape[0] == x.shape[0]:
            return self._gates
        if self.routers == 0 or self.cluster is None:
            return x.new_zeros(x.shape[0], self.experts)
        uniq, inverse = self.cluster_index if self.cluster_index is not None else self.cluster.unique(
            return_inverse=True)
        W = torch.stack([self.router(int(c)) for c in uniq.tolist()])[inverse]  # (B, N, d_in)
        logits = torch.einsum("bnd,bd->bn", W, masked_mean(x, self.prompt_mask))
        self._gates = topk_renormalise(torch.softmax(logits.float(), -1), self.top_k).to(x.dtype)
        return self._gates

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
            mask = self.prompt_mask if self.prompt_mask is not None and self.prompt_mask.shape == x.shape[:2] else None
            self.record_tokens(g[:, None, :].expand(x.shape[0], x.shape[1], self.experts), mask)
            if x.shape[1] > 1:
                self.record_selection((g > 0).to(g.dtype))
        return out


# --- the method --------------------------------------------------------------------------------------


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
               lambda name, layer: BranchLoRALinear(layer, o.experts, o.rank, o.alpha, o.dropout, o.top_k))
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
        index = clusters.unique(return_inverse=True)  # once per batch, for every layer
        for _, layer in self.named_layers():
            layer.cluster, layer.cluster_index = clusters, index
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
        for _, layer in self.named_layers():
            layer.prompt_mask = mask
            layer._gates = None
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
