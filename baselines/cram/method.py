"""CRAM: Centroid-Routing and Adaptive MoE (Tang, Xie, Shi, Zhou; arXiv 2606.02502), adapted to streams.

What the paper (and its released code, LAMDA-CL/EMNLP2026-CRAM) specifies, per task:
- Isolation: every task gets its own expert (a LoRA slot); other tasks' experts are frozen.
- Adaptive-rank instantiation: a buffer LoRA learns the new task during a warm-up; its update
  ΔW = s·B A is decomposed by SVD and only the directions the new data needs and the existing
  experts lack become the expert (singular values above τ_alloc, directions novel with respect
  to the experts of the same semantic group, rank within [rank_min, rank_max]);
  A = √S Vᵀ, B = U √S. The expert then trains on, with the buffer frozen.
- Centroid-guided routing, two levels: level 1 puts the instruction (a CLIP text embedding) in
  a semantic group; level 2 mixes the group's experts by an RBF on the image feature,
  softmax_e(−‖v − c_e‖² / 2σ²), c_e the mean image feature of expert e's task.
- Orthogonality penalty: λ · γ · ‖Qᵀ z‖², z the new update's output on the mean layer input
  over visual tokens, Q an orthonormal basis of the group's other experts, γ the routing mass
  on them: new updates stay off directions old experts already write to.

What a stream changes, and what we do:
- A phase is a chunk; a task is a pseudo-task: a level-1 group (rows whose instruction's MiniLM
  embedding has cosine ≥ `group_threshold` to the group prototype; CRAM's own margin rule,
  meant for one decision per task, opens a group for every ambiguous row: applied to rows it
  fills all 10 groups in the demo's first chunk) together with a visual centroid. At a chunk's
  start, each group's rows are matched, by their mean image view, to the group's expert with
  the nearest centroid (cosine ≥ `reuse_threshold`): a recurring task reuses its expert, as
  the release does for a known task id; otherwise a new expert is opened for it.
- Image views are the frozen vision tower's features at the projector's input (the release
  uses a separate frozen CLIP tower; see models/views.py). Centroids are running means of
  an expert's rows (the release also trains them).
- Each chunk, every expert with rows trains a buffer block of its own (rank `rank`, at most
  `max_active` blocks), mixed into the routing with its expert's weight. At the chunk's end the
  block is consolidated: the gap is what the group's experts do not yet express,
  (I − QQᵀ) ΔW with Q their output directions; the expert grows by the number of its singular
  values above τ · σ_1(ΔW) (up to `rank_max` per layer), and the expert's update plus the
  block's is re-factorised at that rank, so a refinement inside existing directions costs no
  parameters. An expert whose update has no direction above the threshold in any layer is not
  kept: its rows are served by the experts that already cover them. The release instead
  consolidates after a 5 % warm-up and fine-tunes the truncated expert; consolidating at the
  chunk boundary keeps the trainable parameters fixed within a chunk (what data-parallel
  training needs) and lets the penalty act on the update while it is learned.
- The penalty reads the mean layer input over image tokens (detached: it shapes the new
  update, not the layers below), and Q spans the group's other experts' output directions in
  every layer (the release switches to their input directions on square layers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from strcvit_bench.adapters import inject
from strcvit_bench.baselines.cram.formulas import grow_expert, output_basis, rbf_weights
from strcvit_bench.baselines.cram.layer import CRAMLinear
from strcvit_bench.methods.base import MethodOptions, Rows
from strcvit_bench.methods.experts import ExpertMethod
from strcvit_bench.models.views import ImageTap, SampleViews, image_token_id
from strcvit_bench.seeding import derive_seed


@dataclass
class Expert:
    """A pseudo-task's expert: its level-1 group and the running sum of its rows' image views."""

    group: int
    centroid_sum: torch.Tensor
    rows: int

    @property
    def centroid(self) -> torch.Tensor:
        return F.normalize(self.centroid_sum, dim=0)


class CRAMOptions(MethodOptions):
    rank_max: int | None = Field(None, ge=1, description="rank of an expert at most, per layer (default: rank)")
    tau: float = Field(0.1, gt=0, lt=1, description="an expert grows by the gap directions with σ > tau · σ_1")
    sigma: float = Field(0.25, gt=0, description="RBF bandwidth of the centroid routing (unit image views)")
    group_threshold: float = Field(0.4, ge=-1, le=1, description="level 1: instruction cosine to join a group")
    max_groups: int = Field(16, ge=1, description="level-1 semantic groups at most")
    reuse_threshold: float = Field(0.8, ge=-1, le=1, description="a group's chunk rows reuse the expert whose "
                                                                  "centroid has this cosine to their mean image")
    min_rows: int = Field(8, ge=1, description="rows a group needs in a chunk to open a new expert")
    max_active: int = Field(4, ge=1, description="experts trained per chunk (buffer blocks)")
    ortho_weight: float = Field(1.0, ge=0, description="λ of the orthogonality penalty")
    text_encoder: Literal["minilm", "llm_embeddings"] = Field(
        "minilm", description="text view for the level-1 groups: all-MiniLM-L6-v2 or the LLM's input embeddings")


class CRAM(ExpertMethod):
    name = "cram"
    description = "expert per pseudo-task grown by the measured gap, centroid routing, orthogonality penalty (CRAM)"
    Options = CRAMOptions

    def attach(self) -> None:
        o = self.options
        inject(self.model, self.ctx.bundle.target_modules,
               lambda name, layer: CRAMLinear(layer, o.rank, o.max_active, o.alpha, o.dropout, self.batch_context))
        self.views = SampleViews(self.ctx.bundle, o.text_encoder)
        self.image_token = image_token_id(self.model)
        self.group_sum: torch.Tensor | None = None   # (G, d_text) prototype sums of unit text views
        self.experts: list[Expert] = []
        self.rows_of: dict[str, tuple[int, int]] = {}  # this chunk's row id -> (group, expert)
        self.blocks: dict[int, int] = {}                # expert -> buffer block, this chunk
        self.history: list[dict[str, Any]] = []
        self._pending: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self.choices: torch.Tensor | None = None
        self.tap = ImageTap(self.ctx.bundle, self._on_image)

    def layers(self) -> list[CRAMLinear]:
        if getattr(self, "_layers", None) is None:
            self._layers = [m for _, m in self.adapters(CRAMLinear)]
        return self._layers  # type: ignore[return-value]

    # --- level 1 ---------------------------------------------------------------------------

    def group_sims(self, text: torch.Tensor) -> torch.Tensor:
        if self.group_sum is None:
            return torch.zeros(text.shape[0], 0)
        return F.normalize(text.float(), dim=-1) @ F.normalize(self.group_sum, dim=-1).t().to(text.device)

    def assign_group(self, t: torch.Tensor) -> int:
        """Join the most similar group at cosine ≥ group_threshold, else open one (leader rule)."""
        o = self.options
        sims = self.group_sims(t[None])[0]
        t = F.normalize(t.float(), dim=-1).cpu()
        if sims.numel() and (float(sims.max()) >= o.group_threshold or sims.numel() >= o.max_groups):
            g = int(sims.argmax())
            self.group_sum[g] += t  # type: ignore[index]
            return g
        self.group_sum = t[None] if self.group_sum is None else torch.cat([self.group_sum, t[None]])
        return self.group_sum.shape[0] - 1

    def experts_of_group(self, g: int) -> list[int]:
        return [e for e, ex in enumerate(self.experts) if ex.group == g]

    # --- level 2 ---------------------------------------------------------------------------

    def route(self, groups: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """(B, E) weights: an RBF over the centroids of the experts of each sample's group (of
        every expert for a group no expert serves yet)."""
        w = torch.zeros(groups.shape[0], len(self.experts))
        for g in groups.unique().tolist():
            idx = (groups == g).nonzero().flatten()
            cols = self.experts_of_group(g) or list(range(len(self.experts)))
            if cols:
                cents = torch.stack([self.experts[e].centroid for e in cols])
                w[idx[:, None], torch.tensor(cols)[None, :]] = rbf_weights(image[idx], cents, self.options.sigma)
        return w

    # --- hooks -----------------------------------------------------------------------------

    def before_chunk(self, index: int, rows: Rows) -> None:
        """Pseudo-tasks of this chunk: groups by instruction, matched to experts by mean image."""
        o = self.options
        self._pending = None
        text, image = self.views.rows(rows)
        groups = torch.tensor([self.assign_group(t) for t in text])
        unit = F.normalize(image.float(), dim=-1)
        expert_of = torch.full((len(rows),), -1, dtype=torch.long)
        for g in groups.unique().tolist():
            members = (groups == g).nonzero().flatten()
            mean = F.normalize(unit[members].mean(0), dim=0)
            known = self.experts_of_group(g)
            sims = torch.stack([self.experts[e].centroid @ mean for e in known]) if known else torch.zeros(0)
            if known and float(sims.max()) >= o.reuse_threshold:
                e = known[int(sims.argmax())]
            elif members.numel() >= o.min_rows:
                self.experts.append(Expert(g, torch.zeros_like(mean), 0))
                e = len(self.experts) - 1
            else:
                continue  # too few rows for a new task: served by the experts there are
            expert_of[members] = e
            self.experts[e].centroid_sum += unit[members].sum(0)
            self.experts[e].rows += members.numel()
        counts = torch.bincount(expert_of[expert_of >= 0], minlength=len(self.experts))
        active = [int(e) for e in counts.argsort(descending=True, stable=True)[: o.max_active] if counts[e] > 0]
        self.blocks = {e: k for k, e in enumerate(sorted(active))}
        self.rows_of = {r["id"]: (int(g), int(e)) for r, g, e in zip(rows, groups, expert_of, strict=True)}
        for layer in self.layers():
            layer.set_experts([layer.factors(e) for e in range(len(self.experts))])
            layer.penalty_basis = {}
            if o.ortho_weight > 0:
                for e in self.blocks:
                    others = set(self.experts_of_group(self.experts[e].group)) - {e}
                    basis = output_basis(layer.expert_columns(others))
                    if basis is not None:
                        layer.penalty_basis[e] = basis

    def before_forward(self, batch: dict[str, torch.Tensor], rows: Rows) -> None:
        ids = [r.get("id") for r in rows]
        mask = batch["attention_mask"].bool()
        image_mask = batch["input_ids"] == self.image_token if self.image_token is not None else mask
        penalty_mask = torch.where(image_mask.any(1, keepdim=True), image_mask, mask)
        self.batch_context.begin(mask, penalty_mask=penalty_mask)
        if ids and all(i in self.rows_of for i in ids):  # this chunk's rows: their pseudo-task
            groups = torch.tensor([self.rows_of[i][0] for i in ids])
            owners: torch.Tensor | None = torch.tensor([self.rows_of[i][1] for i in ids])
        else:
            text = self.views.text(batch, rows)
            sims = self.group_sims(text)
            groups = sims.argmax(-1).cpu() if sims.shape[1] else torch.zeros(len(rows), dtype=torch.long)
            owners = None
        self._pending = (groups, owners)
        self.tap.set_batch(batch)

    def _on_image(self, image: torch.Tensor) -> None:
        if self._pending is None:
            return
        groups, owners = self._pending
        device = image.device
        w = self.route(groups, image.cpu())
        block = block_weight = gamma = owner_dev = None
        if owners is not None and self.blocks:
            block = torch.tensor([self.blocks.get(int(e), -1) for e in owners])
            own = w[torch.arange(len(owners)), owners.clamp_min(0)] * (owners >= 0)
            block_weight, gamma = own.to(device), (1 - own).to(device)
            block, owner_dev = block.to(device), owners.to(device)
        self.batch_context.update(weights=w.to(device), block=block, block_weight=block_weight, owner=owner_dev,
                                  gamma=gamma)
        if any(layer.recording for layer in self.layers()):
            n = self.group_sum.shape[0] if self.group_sum is not None else 1
            counts = torch.bincount(groups, minlength=n).double()
            self.choices = counts if self.choices is None else self.choices + counts

    def loss(self, task_loss: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        terms = self.aux_losses()
        if not terms or self.options.ortho_weight == 0:
            return task_loss
        return task_loss + self.options.ortho_weight * torch.stack(terms).mean()

    def after_chunk(self, index: int, rows: Rows) -> None:
        """Fold every block into its expert, grown by the measured gap; drop experts left empty."""
        o = self.options
        grown: dict[int, list[float]] = {e: [] for e in self.blocks}
        gaps: dict[int, list[float]] = {e: [] for e in self.blocks}
        per_layer = []
        for layer in self.layers():
            factors = [layer.factors(e) for e in range(len(self.experts))]
            for e, k in self.blocks.items():
                group = set(self.experts_of_group(self.experts[e].group))
                A_new, B_new = layer.block_factors(k)
                A_e, B_e, info = grow_expert(*factors[e], A_new, B_new, output_basis(layer.expert_columns(group)),
                                             o.tau, o.rank_max or o.rank)
                factors[e] = (A_e, B_e)
                grown[e].append(info["grew"])
                gaps[e].append(info["gap_fraction"])
            per_layer.append(factors)
        keep = [e for e in range(len(self.experts)) if any(f[e][0].shape[0] for f in per_layer)]
        gen = torch.Generator().manual_seed(derive_seed(self.ctx.seed, "cram-buffer", index))
        for layer, factors in zip(self.layers(), per_layer, strict=True):
            layer.set_experts([factors[e] for e in keep])
            with torch.no_grad():  # fresh blocks for the next chunk
                bound = (6 / ((1 + 5) * layer.in_features)) ** 0.5  # kaiming_uniform_(a=√5), as LoRALinear
                layer.lora_A.copy_(torch.empty(layer.lora_A.shape).uniform_(-bound, bound, generator=gen))
                layer.lora_B.zero_()
            layer.penalty_basis = {}
        self.batch_context.begin()  # the buffer blocks of this chunk are gone
        new_id = {old: new for new, old in enumerate(keep)}
        self.history.append({
            "chunk": index,
            "trained": [{"expert": new_id.get(e), "group": self.experts[e].group, "rank_added": int(sum(grown[e])),
                         "gap_fraction_mean": round(sum(gaps[e]) / max(1, len(gaps[e])), 4)}
                        for e in sorted(self.blocks)],
            "experts": len(keep),
            "rank_total": sum(int(layer.expert_A.shape[0]) for layer in self.layers()),
        })
        self.experts = [self.experts[e] for e in keep]
        self.blocks, self.rows_of = {}, {}

    # --- analysis and state ----------------------------------------------------------------

    def parameter_counts(self) -> dict[str, int]:
        counts = super().parameter_counts()
        frozen = sum(layer.expert_A.numel() + layer.expert_B.numel() for layer in self.layers())
        return {"trainable": counts["trainable"], "adapter": counts["adapter"] + frozen}

    def routing_reset(self) -> None:
        super().routing_reset()
        self.choices = None

    def routing_summary(self) -> dict[str, Any] | None:
        out = super().routing_summary()
        n = 0 if self.group_sum is None else self.group_sum.shape[0]
        counts = self.choices if self.choices is not None else torch.zeros(n, dtype=torch.float64)
        counts = self.ctx.parallel.sum_(torch.nn.functional.pad(counts, (0, max(0, n - counts.numel()))))
        if out is not None and counts.sum() > 0:
            out["group_choice"] = [round(float(v), 6) for v in counts / counts.sum()]
        return out

    def info(self) -> dict[str, Any]:
        return {"experts": len(self.experts), "groups": 0 if self.group_sum is None else self.group_sum.shape[0],
                "expert_groups": [ex.group for ex in self.experts], "history": self.history}

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors: dict[str, torch.Tensor] = {}
        for name, layer in self.adapters(CRAMLinear):
            tensors[f"{name}.expert_A"] = layer.expert_A
            tensors[f"{name}.expert_B"] = layer.expert_B
            tensors[f"{name}.expert_of"] = layer.expert_of
        if self.group_sum is not None:
            tensors["group_sum"] = self.group_sum
        for e, ex in enumerate(self.experts):
            tensors[f"centroid_sum.{e}"] = ex.centroid_sum
        return tensors, {"experts": [[ex.group, ex.rows] for ex in self.experts], "history": self.history}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.experts = [Expert(g, tensors[f"centroid_sum.{e}"], n) for e, (g, n) in enumerate(meta["experts"])]
        for name, layer in self.adapters(CRAMLinear):
            of = tensors[f"{name}.expert_of"]
            A, B = tensors[f"{name}.expert_A"], tensors[f"{name}.expert_B"]
            layer.set_experts([(A[of == e], B[:, of == e]) for e in range(len(self.experts))])
        self.group_sum = tensors.get("group_sum")
        self.history = list(meta["history"])
