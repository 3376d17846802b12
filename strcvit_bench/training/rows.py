"""Rows of a stream for training: chunks on demand, and lookup by id (for replay buffers)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from strcvit_bench.methods.base import Rows, opaque_id
from strcvit_bench.streams.stream import Stream


class RowStore:
    """Reads chunk files memory-mapped and remembers where each id lives.

    `hide_task` drops the `task` field from every row handed out, which is how a stream with
    `task_ids_visible: false` keeps task labels away from the methods. Ids are always handed
    out opaque (`opaque_id`): the stream's ids name the source, and a method could read the task
    off them. Replay buffers and checkpoints hold the opaque ids, and `lookup` takes them.
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
                self._where[opaque_id(row_id)] = (index, pos)
            self._tables[index] = table
        return self._tables[index]

    def _clean(self, rows: Rows) -> Rows:
        for r in rows:
            r["id"] = opaque_id(r["id"])
            if self.hide_task:
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

    def chunk_ids(self) -> list[list[str]]:
        """Every chunk's opaque ids in file order (indexes the whole stream; images stay on disk)."""
        return [[opaque_id(i) for i in self._table(c).column("id").to_pylist()] for c in range(self.stream.num_chunks)]

    def remember(self, upto: int) -> None:
        """Index chunks 0..upto (a resumed run's buffer may name rows of any earlier chunk)."""
        for i in range(upto + 1):
            self._table(i)
