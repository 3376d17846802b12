"""The joint upper bound: the stream's rows, i.i.d., on the same budget.

Same model, adapter (one LoRA, the baseline's rank) and number of optimiser steps as every
stream method, but trained on a seeded shuffle of all the stream's rows: "chunk" t is the t-th
equal slice of that shuffle, and the runner evaluates after each slice as it does after each
chunk. No distribution shift, so no forgetting beyond optimisation noise: its final scores are
the ceiling a stream method aims for, and show which tasks the model can learn at all.

Rows come from the whole stream at once, which a streaming method may never do: it is a
reference row of the leaderboard, not a method to deploy.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from strcvit_bench.methods.base import Method, Rows
from strcvit_bench.seeding import derive_rng


class Joint(Method):
    name = "joint"
    description = "upper bound: one LoRA on an i.i.d. shuffle of the whole stream, same steps (not a stream method)"

    def _order(self) -> list[str]:
        if getattr(self, "_shuffled", None) is None:
            ids = [i for chunk in self.ctx.chunk_ids() for i in chunk]
            derive_rng(self.ctx.seed, "joint-order").shuffle(ids)
            self._shuffled = ids
        return self._shuffled

    def slice_ids(self, index: int, size: int) -> list[str]:
        """Slice `index` of the shuffle, as large as the stream's chunk `index` (same steps)."""
        sizes = [len(c) for c in self.ctx.chunk_ids()]
        start = sum(sizes[:index])
        return self._order()[start: start + size]

    def batches(self, index: int, rows: Rows, batch_size: int, rng: random.Random) -> Iterator[Rows]:
        ids = self.slice_ids(index, len(rows))
        for i in range(0, len(ids), batch_size):
            yield self.ctx.lookup_rows(ids[i: i + batch_size])
