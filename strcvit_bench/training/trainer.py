"""Training one chunk: single pass (or `epochs_per_chunk`), the method deciding batches and loss.

Each chunk gets a fresh AdamW, as the authors run every chunk as its own training job; the
first chunk warms up and decays (cosine), later chunks train at a constant, lower rate
(DESIGN.md §3a). Dropout and batch order are seeded from (seed, chunk), so a run resumed at a
chunk boundary continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from strcvit_bench.errors import StrcvitError
from strcvit_bench.methods.base import Method, Rows
from strcvit_bench.models.base import ModelBundle, model_inputs
from strcvit_bench.seeding import derive_rng, derive_seed
from strcvit_bench.training.config import RunConfig


def batch_loss(bundle: ModelBundle, method: Method, rows: Rows, sum_over_tokens: bool = False) -> torch.Tensor:
    batch = bundle.encoder.train_batch(rows)
    device = next(bundle.model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    method.before_forward(batch, rows)
    loss = bundle.model(**model_inputs(batch)).loss
    if sum_over_tokens:
        loss = loss * (batch["labels"][:, 1:] != -100).sum()
    return loss


def train_chunk(bundle: ModelBundle, method: Method, params: dict[str, torch.nn.Parameter], index: int,
                rows: Rows, config: RunConfig) -> dict[str, Any]:
    torch.manual_seed(derive_seed(config.seed, "train", index))
    rng = derive_rng(config.seed, "batches", index)
    model = bundle.model
    device = next(model.parameters()).device
    method.before_chunk(index, rows)  # may freeze, thaw or add parameters: the optimiser comes after
    trainable = [p for p in params.values() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=config.first_lr if index == 0 else config.later_lr,
                            weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(rows) / config.train_batch_size)
    total = steps_per_epoch * config.epochs_per_chunk
    warm = max(1, int(config.warmup * total))
    if index == 0:
        lam = lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))  # noqa: E731
    else:
        lam = lambda s: 1.0  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    model.train()
    losses, seen, started = [], 0, time.perf_counter()
    for epoch in range(config.epochs_per_chunk):
        for batch_rows in method.batches(index, rows, config.train_batch_size, rng if epoch == 0 else
                                         derive_rng(config.seed, "batches", index, epoch)):
            batch = bundle.encoder.train_batch(batch_rows)
            batch = {k: v.to(device) for k, v in batch.items()}
            try:
                method.before_forward(batch, batch_rows)
                task_loss = model(**model_inputs(batch)).loss
                loss = method.loss(task_loss, batch)
                loss.backward()
            except torch.OutOfMemoryError:
                raise StrcvitError(
                    f"out of memory training chunk {index} with batches of {len(batch_rows)} rows on {device}; "
                    f"lower --batch-size (the run resumes from its last finished chunk with --resume)") from None
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            sched.step()
            method.after_step()
            opt.zero_grad(set_to_none=True)
            losses.append(task_loss.item())
            seen += len(batch_rows)
    method.after_chunk(index, rows)
    model.eval()
    seconds = time.perf_counter() - started
    return {"train_loss": sum(losses) / max(1, len(losses)), "train_seconds": seconds, "train_samples": seen,
            "train_samples_per_s": seen / seconds if seconds else None, "steps": len(losses),
            "trainable_params": sum(p.numel() for p in trainable),
            "adapter_params": method.parameter_counts()["adapter"]}
