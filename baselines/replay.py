"""Experience replay with a reservoir buffer (Vitter's algorithm R) over the whole stream.

Every sample the model trains on is offered to the reservoir, which keeps each of the n seen
so far with probability M/n. Each training batch of new rows is extended with
round(batch · replay_ratio) rows drawn from the buffer (before the new rows enter it). The
buffer holds row ids, not images, so checkpoints stay small and rows are read back from the
stream's own files.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import torch
from pydantic import Field

from strcvit_bench.errors import StrcvitError
from strcvit_bench.methods.base import Method, MethodOptions, Rows
from strcvit_bench.seeding import derive_rng


class Reservoir:
    """Algorithm R: after n offers, each offered item is in the buffer with probability M/n."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.items: list[str] = []
        self.seen = 0

    def add(self, item: str, rng: random.Random) -> None:
        self.seen += 1
        if len(self.items) < self.capacity:
            self.items.append(item)
            return
        j = rng.randrange(self.seen)
        if j < self.capacity:
            self.items[j] = item

    def sample(self, k: int, rng: random.Random) -> list[str]:
        return rng.sample(self.items, min(k, len(self.items)))


class ReplayOptions(MethodOptions):
    buffer_size: int | None = Field(None, ge=1, description="buffer size M (default: 2% of the stream's samples)")
    replay_ratio: float = Field(0.5, ge=0, description="buffer rows per batch, as a fraction of the new rows")


class Replay(Method):
    name = "replay"
    description = "LoRA + reservoir replay buffer (algorithm R) mixed into every batch"
    Options = ReplayOptions

    def __init__(self, options: ReplayOptions, ctx):
        super().__init__(options, ctx)
        size = options.buffer_size or max(1, round(0.02 * ctx.num_chunks * ctx.chunk_size))
        self.reservoir = Reservoir(size)

    def batches(self, index: int, rows: Rows, batch_size: int, rng: random.Random) -> Iterator[Rows]:
        buffer_rng = derive_rng(self.ctx.seed, "replay", index)
        k = round(batch_size * self.options.replay_ratio)
        for batch in super().batches(index, rows, batch_size, rng):
            replayed = self.ctx.lookup_rows(self.reservoir.sample(k, buffer_rng)) if k else []
            for row in batch:
                self.reservoir.add(row["id"], buffer_rng)
            yield batch + replayed

    def synchronize(self) -> None:
        """Every rank draws the same global batches and buffer decisions from the run's seed, so
        the buffers must already agree; check it, and fail loudly rather than train on drift."""
        p = self.ctx.parallel
        if not p.enabled:
            return
        theirs = p.gather((self.reservoir.seen, self.reservoir.items))
        if any(t != theirs[0] for t in theirs):
            raise StrcvitError("replay buffers differ across processes; the run is not deterministic across ranks")

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {}, {"items": self.reservoir.items, "seen": self.reservoir.seen, "capacity": self.reservoir.capacity}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.reservoir.capacity = meta["capacity"]
        self.reservoir.items = list(meta["items"])
        self.reservoir.seen = meta["seen"]

    def info(self) -> dict[str, Any]:
        return {"buffer_size": self.reservoir.capacity, "buffer_filled": len(self.reservoir.items)}
