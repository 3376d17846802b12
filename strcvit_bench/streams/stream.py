"""Reading a built stream back: manifest checks, chunks, test sets, fingerprint verification."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from strcvit_bench.errors import StreamError
from strcvit_bench.streams.format import (
    Fingerprint,
    chunk_path,
    content_seal,
    data_files,
    file_sha256,
    read_manifest,
    test_path,
)

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

    @property
    def sealed(self) -> bool:
        """Built with per-file hashes (streams built before them verify row ids only)."""
        return isinstance(self.manifest.get("content"), dict)

    def read_chunk(self, index: int, columns: list[str] | None = None) -> Any:
        """The chunk as a pyarrow Table (images stay encoded bytes until a model needs them)."""
        return _read_parquet(self.chunk_file(index), columns)

    def read_test(self, task: str, columns: list[str] | None = None) -> Any:
        return _read_parquet(self.test_file(task), columns)

    def composition(self) -> list[dict[str, int]]:
        return [dict(c["counts"]) for c in self.manifest["chunks"]]


def _read_parquet(path: Path, columns: list[str] | None) -> Any:
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise StreamError(f"{path}: unreadable parquet ({exc}); the stream is damaged: rebuild it or fetch "
                          f"it again") from None


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


def stream_seal(stream: Stream) -> str | None:
    content = stream.manifest.get("content")
    return content.get("seal") if isinstance(content, dict) else None


def check_content(stream: Stream) -> None:
    """Every data file against its recorded sha256, then the manifest's result-deciding fields
    against the seal: one pass over the bytes, cheap next to a run."""
    content = stream.manifest["content"]
    files = content.get("files") if isinstance(content, dict) else None
    if not isinstance(files, dict) or sorted(files) != sorted(data_files(stream.manifest)):
        raise StreamError(f"{stream.path}/manifest.json: its content record does not list the stream's files; "
                          f"the manifest was edited after the build: rebuild the stream")
    for rel, digest in files.items():
        if file_sha256(stream.path / rel) != digest:
            raise StreamError(f"{stream.path / rel} changed after the stream was built (its sha256 differs from "
                              f"the manifest's); rebuild the stream or fetch it again")
    if content_seal(stream.manifest, files) != content.get("seal"):
        raise StreamError(f"{stream.path}/manifest.json was edited after the build (its fields no longer match "
                          f"the seal: counts, tasks, metrics or spec); rebuild the stream")


def verify_stream(path: str | Path) -> Stream:
    """Open and re-check the files: every byte against the seal (when the stream has one), and the
    row ids against the fingerprint. Catches edited answers, images, counts and mixed-up shards."""
    stream = open_stream(path)
    if stream.sealed:
        check_content(stream)
    actual = compute_fingerprint(stream)
    if actual != stream.fingerprint:
        raise StreamError(f"{path}: files do not match the manifest (fingerprint {actual[:12]}… != "
                          f"{stream.fingerprint[:12]}…); the stream was modified after it was built")
    return stream
