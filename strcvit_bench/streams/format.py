"""The on-disk contract of a built stream (docs/streams.md): row schema, paths, fingerprint.

Everything that reads or writes a stream goes through these names so the builder, the
runner and the publisher cannot drift apart.
"""

from __future__ import annotations

import array
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import pyarrow as pa

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
TEST_CONFIG = "test"

# datasets' feature description, stored in the parquet metadata so that `load_dataset`
# decodes `image` as an Image and `answers` as a list of strings.
HF_FEATURES: dict[str, Any] = {
    "id": {"dtype": "string", "_type": "Value"},
    "task": {"dtype": "string", "_type": "Value"},
    "image": {"_type": "Image"},
    "instruction": {"dtype": "string", "_type": "Value"},
    "answer": {"dtype": "string", "_type": "Value"},
    "answers": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "List"},
    "chunk": {"dtype": "int64", "_type": "Value"},
}

ARROW_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("task", pa.string()),
        pa.field("image", pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])),
        pa.field("instruction", pa.string()),
        pa.field("answer", pa.string()),
        pa.field("answers", pa.list_(pa.string())),
        pa.field("chunk", pa.int64()),
    ],
    metadata={"huggingface": json.dumps({"info": {"features": HF_FEATURES}})},
)


def rows_table(rows: list[dict[str, Any]]) -> pa.Table:
    """The rows as an ARROW_SCHEMA table, built from their buffers.

    `pa.Table.from_pylist` gives the same table, but pyarrow imports pandas on its first array
    made from Python objects (0.4 s, a sixth of building the demo stream, in a command that
    never uses pandas), and it converts value by value. The columns here are made from joined
    bytes and offsets instead; a column it does not cover (some values null, more than 2 GiB
    of bytes) is left to pyarrow's own conversion. The parquet files are the same bytes."""
    image = ARROW_SCHEMA.field("image").type
    images, chunks = [r["image"] for r in rows], [r["chunk"] for r in rows]
    columns = [
        _strings([r["id"] for r in rows]),
        _strings([r["task"] for r in rows]),
        pa.StructArray.from_arrays([_strings([i["bytes"] for i in images], pa.binary()),
                                    _strings([i["path"] for i in images])], fields=list(image)),
        _strings([r["instruction"] for r in rows]),
        _strings([r["answer"] for r in rows]),
        _lists([r["answers"] for r in rows]),
        pa.Array.from_buffers(pa.int64(), len(rows), [None, pa.py_buffer(array.array("q", chunks))]),
    ]
    return pa.Table.from_arrays(columns, schema=ARROW_SCHEMA)


_MAX_OFFSET = 2 ** 31 - 1  # a string or binary column's offsets are 32-bit


def _strings(values: list, kind: pa.DataType = pa.string()) -> pa.Array:
    nulls = sum(v is None for v in values)
    if nulls == len(values):  # an image's path, when its bytes are embedded
        return pa.nulls(len(values), kind)
    if nulls:
        return pa.array(values, kind)
    encoded = values if kind == pa.binary() else [v.encode("utf-8") for v in values]
    data = b"".join(encoded)
    if len(data) > _MAX_OFFSET:
        return pa.array(values, kind)
    offsets = array.array("i", itertools.accumulate(map(len, encoded), initial=0))
    return pa.Array.from_buffers(kind, len(values), [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _lists(values: list[list[str]]) -> pa.Array:
    if any(v is None for v in values):
        return pa.array(values, pa.list_(pa.string()))
    offsets = array.array("i", itertools.accumulate(map(len, values), initial=0))
    flat = _strings([x for v in values for x in v])
    return pa.Array.from_buffers(pa.list_(pa.string()), len(values), [None, pa.py_buffer(offsets)], children=[flat])


def chunk_config(index: int) -> str:
    return f"chunk_{index:03d}"


def chunk_path(index: int) -> str:
    return f"data/{chunk_config(index)}/train-00000-of-00001.parquet"


def test_path(task: str) -> str:
    return f"data/test/{task}.parquet"


class Fingerprint:
    """sha256 over the parsed spec and the ids of all rows in order (test sets, then chunks).

    Only content that is the same on every machine goes in: no paths, times or versions.
    """

    def __init__(self, spec_dump: dict[str, Any]):
        self._h = hashlib.sha256()
        self._h.update(json.dumps(spec_dump, sort_keys=True, separators=(",", ":")).encode("utf-8"))

    def add_ids(self, section: str, ids: list[str]) -> None:
        self._h.update(f"\n#{section}\n".encode())
        for row_id in ids:
            self._h.update(row_id.encode("utf-8") + b"\n")

    def hexdigest(self) -> str:
        return self._h.hexdigest()


# manifest fields that decide what a run trains on and how it is scored (counts decide the
# chunk in which a task is first seen, and so BWT and forgetting); versions and drop counts do not
SEALED_FIELDS = ("schema_version", "name", "fingerprint", "seed", "chunk_size", "num_chunks",
                 "task_ids_visible", "spec", "tasks", "chunks")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_files(manifest: dict[str, Any]) -> list[str]:
    """Every parquet file of a stream, relative to its directory: test sets, then chunks."""
    return ([test_path(t["name"]) for t in manifest["tasks"]]
            + [chunk_path(c["index"]) for c in manifest["chunks"]])


def content_seal(manifest: dict[str, Any], files: dict[str, str]) -> str:
    """sha256 over the result-deciding manifest fields and every data file's sha256.

    The fingerprint names a stream (its spec and which rows, in which order) and groups runs
    on the leaderboard; the seal vouches for every byte a run reads, so an edited answer, image
    or count is caught by `inspect --verify`, `publish` and `run`, not only a changed row id.
    """
    sealed = {k: manifest.get(k) for k in SEALED_FIELDS}
    payload = json.dumps({"manifest": sealed, "files": dict(sorted(files.items()))}, sort_keys=True,
                         separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def read_manifest(stream_dir: str | Path) -> dict[str, Any]:
    from strcvit_bench.errors import StreamError

    path = Path(stream_dir) / MANIFEST
    if not path.is_file():
        raise StreamError(f"{stream_dir} is not a built stream: {MANIFEST} is missing (build one with "
                          f"`strcvit build-stream SPEC --out DIR`)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise StreamError(f"{path}: unreadable manifest ({exc})") from None
