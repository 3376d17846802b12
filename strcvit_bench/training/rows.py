"""Rows of a stream for training: chunks on demand, and lookup by id (for replay buffers)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from strcvit_bench.streams.stream import Stream

Rows = list[dict[str, Any]]


class RowStore:
    """Reads chunk files memory-mapped and remembers where each id lives.

    `hide_task` drops the `task` field from every row handed out, which is how a stream with
    `task_ids_visible: false` keeps task labels away from the methods.
    """

    def __init__(self, stream: Stream, hide_task: bool):
        self.stream = stream
        self.hide_task = hide_task
        self._tables: dict[int, pa.Table] = {}
        self._where: dict[str, tuple[int, int]] = {}

    def _table(self, index: int) -> pa.Table:
        if index not in self._tables:
            table = pq.read_table(self.stream.chunk_file(index), memory_map=True)
            for pos, row_id in enumerate(table.column("id").to_pylist()):
                self._where[row_id] = (index, pos)
            self._tables[index] = table
        return self._tables[index]

    def _clean(self, rows: Rows) -> Rows:
        if self.hide_task:
            for r in rows:
                r.pop("task", None)
        return rows

    def chunk(self, index: int) -> Rows:
        return self._clean(self._table(index).to_pylist())

    def lookup(self, ids: list[str]) -> Rows:
        """Rows by id, in the order asked; ids must come from chunks already read."""
        out = []
        for row_id in ids:
            index, pos = self._where[row_id]
            out.append(self._table(index).slice(pos, 1).to_pylist()[0])
        return self._clean(out)

    def remember(self, upto: int) -> None:
        """Index chunks 0..upto (a resumed run's buffer may name rows of any earlier chunk)."""
        for i in range(upto + 1):
            self._table(i)
