"""Reading a built stream back: manifest checks, chunks, test sets, fingerprint verification."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from strcvit_bench.errors import StreamError
from strcvit_bench.streams.format import Fingerprint, chunk_path, read_manifest, test_path

_REQUIRED = ("name", "fingerprint", "seed", "chunk_size", "num_chunks", "spec", "tasks", "chunks")


@dataclass
class Stream:
    path: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def task_names(self) -> list[str]:
        return [t["name"] for t in self.manifest["tasks"]]

    @property
    def num_chunks(self) -> int:
        return int(self.manifest["num_chunks"])

    def chunk_file(self, index: int) -> Path:
        return self.path / chunk_path(index)

    def test_file(self, task: str) -> Path:
        return self.path / test_path(task)

    def read_chunk(self, index: int, columns: list[str] | None = None) -> Any:
        """The chunk as a pyarrow Table (images stay encoded bytes until a model needs them)."""
        return pq.read_table(self.chunk_file(index), columns=columns)

    def read_test(self, task: str, columns: list[str] | None = None) -> Any:
        return pq.read_table(self.test_file(task), columns=columns)

    def composition(self) -> list[dict[str, int]]:
        return [dict(c["counts"]) for c in self.manifest["chunks"]]


def open_stream(path: str | Path) -> Stream:
    """Open a stream directory, checking that the manifest and every file it names exist."""
    path = Path(path)
    if not path.is_dir():
        raise StreamError(f"{path} is not a directory; pass the output directory of `strcvit build-stream`")
    manifest = read_manifest(path)
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise StreamError(f"{path}/manifest.json lacks {', '.join(missing)}; rebuild the stream")
    stream = Stream(path, manifest)
    for c in manifest["chunks"]:
        if not stream.chunk_file(c["index"]).is_file():
            raise StreamError(f"{path}: chunk {c['index']} is missing ({chunk_path(c['index'])}); rebuild the stream")
    for t in stream.task_names:
        if not stream.test_file(t).is_file():
            raise StreamError(f"{path}: test set of task {t!r} is missing ({test_path(t)}); rebuild the stream")
    return stream


def compute_fingerprint(stream: Stream) -> str:
    fp = Fingerprint(stream.manifest["spec"])
    for t in stream.task_names:
        fp.add_ids(f"test/{t}", stream.read_test(t, columns=["id"]).column("id").to_pylist())
    for c in stream.manifest["chunks"]:
        fp.add_ids(f"chunk/{c['index']}", stream.read_chunk(c["index"], columns=["id"]).column("id").to_pylist())
    return fp.hexdigest()


def verify_stream(path: str | Path) -> Stream:
    """Open and re-check the fingerprint against the files: catches edited or mixed-up shards."""
    stream = open_stream(path)
    actual = compute_fingerprint(stream)
    if actual != stream.fingerprint:
        raise StreamError(f"{path}: files do not match the manifest (fingerprint {actual[:12]}… != "
                          f"{stream.fingerprint[:12]}…); the stream was modified after it was built")
    return stream
