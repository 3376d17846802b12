"""Builtin rows drawn in worker processes in the order the builder will take them.

Each feed used to keep its own three blocks in flight. The workers then sat idle whenever the
builder was busy elsewhere (its first parquet write imports pandas through pyarrow: 0.4 s
while the first test set waited), and every feed ended with up to three blocks drawn that no
chunk took (768 of the demo's 9,408 rows drawn). The builder knows what it will take, in order
(each test set, then each chunk's count per task), so it announces that (`expect`) and blocks
are submitted in that order, a bounded number ahead of what it has taken: memory stays flat in
the number of chunks. A block the plan did not foresee (a feed that dropped rows needs more)
is drawn on demand. Rows are pure functions of their index, so no order of drawing changes
a byte of the stream.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

BLOCK = 32  # rows a worker draws and encodes per task: amortises the call, bounds the waste
WINDOW_BYTES = 64 << 20  # blocks ahead are bounded by their rows' raw pixels, about this much
MAX_AHEAD = 64  # and by this many (2,048 small rows: the workers keep on while the builder writes)

Key = tuple[Any, str, int]  # (source, split, first row)
Draw = Callable[[Any, str, int, int], Future]


def blocks_ahead(workers: int, image_size: int) -> int:
    """How many blocks may be drawn ahead: enough to keep every worker busy, few enough that
    the rows held stay near WINDOW_BYTES whatever the image size."""
    by_memory = WINDOW_BYTES // (BLOCK * 3 * image_size * image_size)
    return max(2 * workers, min(MAX_AHEAD, by_memory))


class BlockPrefetch:
    """The builder's plan of blocks, submitted `ahead` at a time.

        prefetch = BlockPrefetch(draw, ahead)     # draw(source, split, start, n) -> Future
        prefetch.expect(source, "test", 160)      # in the order the rows will be taken
        rows = prefetch.block(source, "test", 0)  # rows 0..31, waiting only if not yet drawn
    """

    def __init__(self, draw: Draw, ahead: int):
        self.draw, self.ahead = draw, ahead
        self.planned: deque[Key] = deque()
        self.in_flight: dict[Key, Future] = {}
        self.announced: dict[tuple[Any, str], int] = {}  # rows of each split announced so far
        self.taken: set[Key] = set()  # blocks handed out ahead of the plan: skipped when reached

    def expect(self, source: Any, split: str, rows: int) -> None:
        """The builder will take `rows` more rows of `source`'s `split`, after those announced."""
        done = self.announced.get((source, split), 0)
        end = done + rows
        first = -(-done // BLOCK) * BLOCK  # blocks starting at or after the announced rows
        self.planned.extend((source, split, start) for start in range(first, end, BLOCK))
        self.announced[(source, split)] = end
        self._top_up()

    def block(self, source: Any, split: str, start: int) -> list:
        """Rows start .. start + BLOCK - 1 of the split, encoded."""
        key = (source, split, start)
        future = self.in_flight.pop(key, None)
        if future is None:  # not reached by the plan yet, or not in it
            future = self.draw(source, split, start, BLOCK)
            self.taken.add(key)
        self._top_up()
        return future.result()

    def _top_up(self) -> None:
        while len(self.in_flight) < self.ahead and self.planned:
            key = self.planned.popleft()
            if key in self.taken:
                self.taken.discard(key)
            else:
                self.in_flight[key] = self.draw(*key, BLOCK)
