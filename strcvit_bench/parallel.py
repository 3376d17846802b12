"""Data parallelism through Hugging Face accelerate, and nothing home-made.

One process: `Parallel` is inert (rank 0 of 1, every collective a no-op), so a plain
`strcvit run` is exactly what it was. Under `accelerate launch` (or `torchrun`), it builds an
`Accelerator` (DDP over NCCL on GPUs, gloo on CPUs; FSDP/DeepSpeed from an accelerate config),
wraps the model with `prepare_model` for each chunk (a chunk may change which parameters train:
frozen branches, new routers), and gives the runner and the methods the collectives they need
to keep their state identical on every rank.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def launched_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


class Parallel:
    def __init__(self, device: str = "auto", distributed: bool | None = None):
        """`distributed=None`: whatever the launcher set up (WORLD_SIZE); False: one process."""
        self.acc = None
        self.rank, self.world = 0, 1
        self.device: torch.device | None = None
        if distributed is None:
            distributed = launched_world_size() > 1
        if distributed:
            from accelerate import Accelerator
            from accelerate.utils import DistributedDataParallelKwargs

            cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
            # some trainable parameters get no gradient in a given step (hard-argmax routers,
            # routers of clusters absent from a batch): DDP must look for them
            self.acc = Accelerator(cpu=cpu, kwargs_handlers=[DistributedDataParallelKwargs(
                find_unused_parameters=True)])
            self.rank, self.world = self.acc.process_index, self.acc.num_processes
            self.device = self.acc.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def shard(self, items: list[T]) -> list[T]:
        """This rank's share of a list (every rank holds the whole list, in the same order)."""
        return items[self.rank:: self.world] if self.enabled else items

    def unshard(self, mine: list[T], total: int) -> list[T]:
        """Inverse of `shard` across ranks: the whole list, in order, on every rank."""
        if not self.enabled:
            return mine
        parts = self.gather(mine)
        out: list[Any] = [None] * total
        for rank, part in enumerate(parts):
            out[rank:: self.world] = part
        return out

    # --- the model ------------------------------------------------------------------------

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model to train this chunk with: a DDP wrapper over its currently trainable
        parameters (it also broadcasts rank 0's weights), or the model itself in one process."""
        if not self.enabled:
            return model
        return self.acc.prepare_model(model, device_placement=False)

    def release(self) -> None:
        """Drop the chunk's DDP wrapper (its gradient hooks go with it)."""
        if self.enabled:
            self.acc.free_memory()

    def no_sync(self, model: torch.nn.Module):
        return self.acc.no_sync(model) if self.enabled else contextlib.nullcontext()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 goes first (e.g. pre-training and caching the tiny base), the others then read."""
        if not self.enabled:
            yield
            return
        with self.acc.main_process_first():
            yield

    # --- collectives ----------------------------------------------------------------------

    def barrier(self) -> None:
        if self.enabled:
            self.acc.wait_for_everyone()

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """In-place sum over ranks (CPU tensors too: NCCL reduces a device copy)."""
        if not self.enabled:
            return tensor
        if tensor.device.type == "cpu" and torch.distributed.get_backend() == "nccl":
            on_device = tensor.to(self.device)
            torch.distributed.all_reduce(on_device, op=torch.distributed.ReduceOp.SUM)
            return tensor.copy_(on_device.cpu())
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def mean_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            self.sum_(tensor).div_(self.world)
        return tensor

    def total(self, value: float) -> float:
        """Sum of a number over ranks."""
        if not self.enabled:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        return float(self.sum_(t).item())

    def gather(self, obj: T) -> list[T]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: T) -> T:
        """Rank 0's `obj` on every rank."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[return-value]

