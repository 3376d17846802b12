"""Training one chunk: single pass (or `epochs_per_chunk`), the method deciding batches and loss.

Each chunk gets a fresh AdamW, as the authors run every chunk as its own training job; the
first chunk warms up and decays (cosine), later chunks train at a constant, lower rate
(docs/methods.md). Dropout and batch order are seeded from (seed, chunk), so a run resumed at a
chunk boundary continues exactly as an uninterrupted one.

A batch is the optimiser step's: the method yields it whole on every rank, each rank trains its
share in `grad_accum` micro-batches, and every micro-batch's answer loss is weighted by its
share of the step's answer tokens (counted over all ranks), so a step's gradient is the same
whether it ran on one process in one piece or on several, accumulated.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from typing import Any

import torch

from strcvit_bench.errors import StrcvitError
from strcvit_bench.methods.base import Method, Rows
from strcvit_bench.models.base import ModelBundle, answer_tokens, autocast, loss_inputs
from strcvit_bench.parallel import Parallel
from strcvit_bench.seeding import derive_rng, derive_seed
from strcvit_bench.training.config import RunConfig


def split(rows: Rows, parts: int) -> list[Rows]:
    """`rows` in `parts` nearly equal, contiguous, non-empty pieces (fewer if rows are few)."""
    parts = max(1, min(parts, len(rows)))
    size, extra = divmod(len(rows), parts)
    out, start = [], 0
    for k in range(parts):
        end = start + size + (1 if k < extra else 0)
        out.append(rows[start:end])
        start = end
    return out


def param_groups(params: dict[str, torch.nn.Parameter], projector: str, projector_lr: float | None) -> list[Any]:
    """The trainable parameters; with `projector_lr`, the projector's (names matching the
    `projector` regex) in a group of their own at that rate (the authors' aligner rate)."""
    trainable = [(n, p) for n, p in params.items() if p.requires_grad]
    if projector_lr is None:
        return [p for _, p in trainable]
    rx = re.compile(projector)
    groups = [{"params": [p for n, p in trainable if not rx.fullmatch(n)]},
              {"params": [p for n, p in trainable if rx.fullmatch(n)], "lr": projector_lr}]
    return [g for g in groups if g["params"]]


def make_optimizer(params: list[Any], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW, fused where torch has the kernel (CPU and CUDA). Expert methods train hundreds of
    small router and expert tensors; the unfused update runs a dozen small ops per tensor, and
    that loop was a visible share of their step (benchmarks/speedups.py measures it).
    `params`: tensors, or param groups (dicts) as `param_groups` makes them."""
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    fusable = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.bfloat16, torch.float16)
                  for p in tensors)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True if fusable else None)


def train_chunk(bundle: ModelBundle, method: Method, params: dict[str, torch.nn.Parameter], index: int,
                rows: Rows, config: RunConfig, parallel: Parallel | None = None) -> dict[str, Any]:
    parallel = parallel or Parallel(distributed=False)
    torch.manual_seed(derive_seed(config.seed, "train", index))
    rng = derive_rng(config.seed, "batches", index)
    model = bundle.model
    device = next(model.parameters()).device
    method.before_chunk(index, rows)  # may freeze, thaw or add parameters: the optimiser comes after
    trainable = [p for p in params.values() if p.requires_grad]
    opt = make_optimizer(param_groups(params, bundle.projector_modules, config.projector_lr),
                         config.first_lr if index == 0 else config.later_lr, config.weight_decay)
    steps_per_epoch = math.ceil(len(rows) / config.train_batch_size)
    total = steps_per_epoch * config.epochs_per_chunk
    warm = max(1, int(config.warmup * total))
    if index == 0:
        lam = lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))  # noqa: E731
    else:
        lam = lambda s: 1.0  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    net = parallel.wrap(model)  # this chunk's trainable set; DDP when launched on several processes
    model.train()
    loss_sum, token_sum, steps, seen, started = 0.0, 0, 0, 0, time.perf_counter()
    for epoch in range(config.epochs_per_chunk):
        for batch_rows in method.batches(index, rows, config.train_batch_size, rng if epoch == 0 else
                                         derive_rng(config.seed, "batches", index, epoch)):
            mine = parallel.shard(batch_rows)
            idle = not mine  # a step smaller than the world: this rank still joins the gradient sync
            micro = split(mine or batch_rows[:1], config.grad_accum)
            batches = [{k: v.to(device) for k, v in bundle.encoder.train_batch(m).items()} for m in micro]
            counts = [0 if idle else answer_tokens(b) for b in batches]
            step_tokens = parallel.total(sum(counts))
            try:
                for j, (m, batch, n) in enumerate(zip(micro, batches, counts, strict=True)):
                    sync = j == len(micro) - 1
                    with parallel.no_sync(net) if not sync else contextlib.nullcontext():
                        with autocast(config.precision, device):
                            method.before_forward(batch, m)
                            task_loss = net(**loss_inputs(model, batch)).loss
                            # the answer loss counts by this piece's share of the step's tokens (DDP
                            # divides by the world size); the method's own terms (KL, penalties) are
                            # averaged over the K pieces: method.loss(x · K) / K = x + terms / K
                            K = len(micro)
                            weight = n * parallel.world / step_tokens * K if step_tokens else 0.0
                            loss = method.loss(task_loss if weight == 1.0 else task_loss * weight, batch) / K
                            if idle:
                                loss = loss * 0.0
                        loss.backward()
                    loss_sum += float(task_loss.detach()) * n
                    token_sum += n
            except torch.OutOfMemoryError:
                raise StrcvitError(
                    f"out of memory training chunk {index} with batches of {len(batch_rows)} rows on {device}; "
                    f"lower --batch-size or raise --grad-accum (the run resumes from its last finished chunk "
                    f"with --resume)") from None
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            sched.step()
            method.after_step()
            opt.zero_grad(set_to_none=True)
            steps += 1
            seen += len(batch_rows)
    parallel.release()
    method.after_chunk(index, rows)
    method.synchronize()
    model.eval()
    seconds = time.perf_counter() - started
    tokens = parallel.total(token_sum)
    return {"train_loss": parallel.total(loss_sum) / tokens if tokens else float("nan"), "train_seconds": seconds,
            "train_samples": seen, "train_samples_per_s": seen / seconds if seconds else None, "steps": steps,
            "trainable_params": sum(p.numel() for p in trainable),
            "adapter_params": method.parameter_counts()["adapter"], "method_stats": method.chunk_stats()}
