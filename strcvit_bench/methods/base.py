"""The method plugin API.

A method is one small class: options (a pydantic model, so `--opt key=value` is validated and
listed by `strcvit methods`), how it adapts the model (`attach`), and hooks the runner calls
around each chunk, batch and step. Everything a method must carry to the next chunk goes
through `state()`/`load_state()` as tensors + JSON, so checkpoints never pickle objects and
a resumed run continues exactly.

Methods never see task labels unless the stream sets `task_ids_visible: true`: rows reach
them without the `task` field, and with an opaque id (a hash of the stream's
`<source>/<split>/<original id>`, which names the source). At evaluation a method sees what a
deployed model is given: the image, the instruction and the opaque id, never the answers.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from strcvit_bench.adapters import LoRALinear, adapter_layers, inject
from strcvit_bench.adapters.context import BatchContext, RoutedLayer
from strcvit_bench.models.base import ModelBundle, Rows, answer_tokens, loss_inputs
from strcvit_bench.parallel import Parallel

EVALUATION_FIELDS = ("id", "image", "instruction")


def opaque_id(row_id: str) -> str:
    """A stable id that names neither task nor source: 16 hex digits of the id's sha256."""
    import hashlib

    return hashlib.sha256(row_id.encode("utf-8")).hexdigest()[:16]


def evaluation_row(row: dict[str, Any]) -> dict[str, Any]:
    """What a method may see of a test row: image, instruction, opaque id."""
    return {"id": opaque_id(row["id"]), "image": row["image"], "instruction": row["instruction"]}


class MethodOptions(BaseModel):
    """Options shared by every LoRA-based method (same rank budget = a fair comparison)."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(8, ge=1, description="LoRA rank (total budget for expert methods)")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha; scale = alpha / rank")
    dropout: float = Field(0.0, ge=0, lt=1,
                           description="dropout on the adapter input (peft's default; the authors use 0.05)")


@dataclass
class MethodContext:
    """What the runner hands a method: the model and services it may call."""

    bundle: ModelBundle
    seed: int
    num_chunks: int
    chunk_size: int
    task_ids_visible: bool
    lookup_rows: Callable[[list[str]], Rows]
    extra: dict[str, Any] = field(default_factory=dict)
    chunk_ids: Callable[[], list[list[str]]] = list  # every chunk's opaque row ids (the joint bound)
    parallel: Parallel = field(default_factory=lambda: Parallel(distributed=False))


class Method:
    name: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type[MethodOptions]] = MethodOptions

    def __init__(self, options: MethodOptions, ctx: MethodContext):
        self.options = options
        self.ctx = ctx
        self.model = ctx.bundle.model
        self.batch_context = BatchContext()  # handed to the routed layers the method creates

    # --- adapting the model -----------------------------------------------------------------

    def attach(self) -> None:
        """Wrap the target linear layers; default: one LoRA adapter each."""
        o = self.options
        inject(self.model, self.ctx.bundle.target_modules,
               lambda name, layer: LoRALinear(layer, r=o.rank, alpha=o.alpha, dropout=o.dropout))

    def trainable_names(self) -> list[str]:
        """Adapter parameters (`lora_`/router names) plus the projector, in a stable order."""
        import re

        projector = re.compile(self.ctx.bundle.projector_modules)
        out = []
        for name, _ in self.model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf.startswith(("lora_", "router_")) or projector.fullmatch(name):
                out.append(name)
        return out

    def setup(self) -> dict[str, nn.Parameter]:
        self.attach()
        names = set(self.trainable_names())
        params = {}
        for name, p in self.model.named_parameters():
            p.requires_grad_(name in names)
            if name in names:
                params[name] = p
        self.params = params
        return params

    def adapters(self, kind: type = LoRALinear) -> list[tuple[str, nn.Module]]:
        return adapter_layers(self.model, kind)

    def add_params(self, named: dict[str, nn.Parameter]) -> None:
        """Register parameters a method creates after `setup` (e.g. a router for a cluster first
        seen in this chunk). Only allowed in `before_chunk` or `load_state`: the trainer builds
        each chunk's optimizer after `before_chunk`, and checkpoints save `self.params`."""
        for name, p in named.items():
            p.requires_grad_(True)
            self.params[name] = p

    def parameter_counts(self) -> dict[str, int]:
        """`trainable`: what the optimiser updates in the coming chunk; `adapter`: every learned
        adapter weight the model carries (frozen experts included). Equal for most methods;
        they differ where a method freezes or grows its adapters."""
        trainable = sum(p.numel() for p in self.params.values() if p.requires_grad)
        return {"trainable": trainable, "adapter": sum(p.numel() for p in self.params.values())}

    # --- hooks ------------------------------------------------------------------------------

    def before_chunk(self, index: int, rows: Rows) -> None:
        """Called before training on chunk `index`."""

    def batches(self, index: int, rows: Rows, batch_size: int, rng: random.Random) -> Iterator[Rows]:
        """The training batches of a chunk: one shuffled single pass by default."""
        order = list(range(len(rows)))
        rng.shuffle(order)
        for i in range(0, len(order), batch_size):
            yield [rows[k] for k in order[i: i + batch_size]]

    def before_forward(self, batch: dict[str, torch.Tensor], rows: Rows) -> None:
        """Sees every batch (encoded, and its rows without task labels) before the model does:
        training, evaluation and generation alike. Routing methods set their inputs here."""

    def loss(self, task_loss: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of a batch from its answer loss (methods add their own terms)."""
        return task_loss

    def aux_losses(self) -> list[torch.Tensor]:
        """The auxiliary terms the routed layers computed in the last forward (KL, penalties)."""
        if getattr(self, "_routed", None) is None:  # walked once: this runs for every batch
            self._routed = [m for _, m in self.adapters(RoutedLayer)]
        return [t for t in (layer.aux_loss() for layer in self._routed) if t is not None]

    def batch_loss(self, rows: Rows, sum_over_tokens: bool = False) -> torch.Tensor:
        """The answer NLL of `rows` under the current model, routed as this method routes them
        (token mean; `sum_over_tokens` for the sum, e.g. a per-sample Fisher)."""
        bundle = self.ctx.bundle
        device = next(bundle.model.parameters()).device
        batch = {k: v.to(device) for k, v in bundle.encoder.train_batch(rows).items()}
        self.before_forward(batch, rows)
        loss = bundle.model(**loss_inputs(bundle.model, batch)).loss
        return loss * answer_tokens(batch) if sum_over_tokens else loss

    def after_step(self) -> None:
        """Called after every optimiser step."""

    def after_chunk(self, index: int, rows: Rows) -> None:
        """Called after training on chunk `index`, before evaluation."""

    def chunk_stats(self) -> dict[str, Any]:
        """Facts about the chunk just trained (e.g. a regulariser's size), recorded in
        results.json as `per_chunk[i].method_stats`, so a method's behaviour is inspectable."""
        return {}

    # --- state carried across chunks (checkpoints) -----------------------------------------

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {}, {}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore what `state()` returned."""

    def info(self) -> dict[str, Any]:
        """Extra facts for results.json (e.g. buffer size)."""
        return {}

    def synchronize(self) -> None:
        """After each chunk, on every rank: make the method's state rank 0's. Parameters are kept
        equal by DDP; this covers what a method decides itself (clusters, experts, frozen sets).
        Methods whose state is already reduced across ranks, or verified equal, override it."""
        p = self.ctx.parallel
        if not p.enabled:
            return
        tensors, meta = self.state()
        tensors, meta = p.broadcast(({k: v.detach().cpu() for k, v in tensors.items()}, meta))
        if not p.is_main:
            self.load_state(tensors, meta)

    # --- routing analysis (expert methods) ---------------------------------------------------

    def routing_reset(self) -> None:
        """Start collecting routing statistics (called before scoring each task)."""

    def routing_summary(self) -> dict[str, Any] | None:
        """Mean expert activation since the last reset, or None for methods without routing."""
        return None
