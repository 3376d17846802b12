"""Materialise a stream spec into a stream directory (docs/streams.md).

Order of work, and why:
1. Test rows are held out first, per task, and their image hashes remembered, so that no
   train row can share an image with a test row (sources such as VQAv2 ask several questions
   about one image).
2. Chunks are drawn in order from one single-pass iterator per task, so a source row is used
   at most once; each chunk is written as soon as it is complete, so memory does not grow
   with the number of chunks.
3. Everything goes into a temporary directory renamed into place at the end: a failed build
   leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from PIL import Image

from strcvit_bench.data.sources import Source, SourceRow, make_source
from strcvit_bench.data.sources.builtin.prefetch import BlockPrefetch, blocks_ahead
from strcvit_bench.data.sources.builtin.source import BuiltinSource, pool_draw
from strcvit_bench.env import library_versions
from strcvit_bench.errors import SourceError, StrcvitError
from strcvit_bench.io import atomic_directory, atomic_write_json, atomic_write_text
from strcvit_bench.seeding import derive_rng, derive_seed
from strcvit_bench.streams.card import render_card
from strcvit_bench.streams.format import (
    MANIFEST,
    SCHEMA_VERSION,
    Fingerprint,
    chunk_path,
    content_seal,
    data_files,
    file_sha256,
    rows_table,
    test_path,
)
from strcvit_bench.streams.schedule import chunk_counts
from strcvit_bench.streams.spec import StreamSpec, TaskSpec

ProgressFn = Callable[[str, int, int], None]


def exit_with_parent(parent: int) -> None:
    """Pool workers would outlive a build killed with SIGKILL (nothing tells them): each
    watches its parent and exits when it is gone."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def encode_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def format_options(options: list[str]) -> str:
    return " ".join(f"{chr(65 + i)}. {o}" for i, o in enumerate(options))


class _TaskFeed:
    """A task's filtered, single-pass row supply (dedup, test-image exclusion, corrupt images)."""

    def __init__(self, task: TaskSpec, source: Source, which: str, seed: int, builder: _Build):
        self.task, self.source, self.which, self.b = task, source, which, builder
        self.split = source.split_name(which)  # type: ignore[arg-type]
        self._rows: Iterator[SourceRow] = source.iter_rows(which, seed)  # type: ignore[arg-type]
        self.dropped: dict[str, int] = builder.dropped.setdefault(task.name, {})
        self.verify_images = not source.name.startswith("builtin.")
        self.held_out = 0

    def shortfall(self) -> str:
        """Why the feed ran dry: the rows the test set holds out, and every drop (the source's too)."""
        dropped = dict(self.dropped)
        for reason, n in self.source.counters().items():
            dropped[reason] = dropped.get(reason, 0) + n
        held = f"{self.held_out} rows held out as test rows; " if self.held_out else ""
        drops = ", ".join(f"{k}: {v}" for k, v in sorted(dropped.items()) if v) or "none"
        return f"{held}rows dropped so far: {drops}"

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def take(self, n: int, chunk: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while len(out) < n:
            try:
                raw = next(self._rows)
            except StopIteration:
                break
            row_id = f"{self.source.name}/{self.split}/{raw.id}"
            if row_id in self.b.test_ids and chunk >= 0:
                self.held_out += 1  # the train pass over a split the test set was drawn from: expected
                continue
            if row_id in self.b.seen_ids:
                self._drop("duplicate_id")
                continue
            image = raw.image if isinstance(raw.image, bytes) else encode_png(raw.image)
            if self.verify_images:
                try:
                    with Image.open(io.BytesIO(image)) as im:
                        im.load()  # a full decode: verify() passes truncated files that crash training
                except Exception as exc:
                    if self.b.strict:
                        raise SourceError(f"task {self.task.name!r}: row {row_id} has an unreadable image "
                                          f"({type(exc).__name__}); drop --strict to skip such rows") from None
                    self._drop("corrupt_image")
                    continue
            digest = hashlib.sha1(image).digest()
            if chunk >= 0 and digest in self.b.test_images:
                self._drop("shares_test_image")
                continue
            if chunk < 0:
                self.b.test_images.add(digest)
                self.b.test_ids.add(row_id)
            self.b.seen_ids.add(row_id)
            out.append(self.b.make_row(self.task, raw, row_id, image, chunk))
        return out


class _Build:
    def __init__(self, spec: StreamSpec, strict: bool):
        self.spec = spec
        self.strict = strict
        self.seen_ids: set[str] = set()
        self.test_images: set[bytes] = set()
        self.test_ids: set[str] = set()
        self.dropped: dict[str, dict[str, int]] = {}

    def make_row(self, task: TaskSpec, raw: SourceRow, row_id: str, image: bytes, chunk: int) -> dict[str, Any]:
        rng = derive_rng(self.spec.seed, "instruction", row_id)
        template = task.instructions[rng.randrange(len(task.instructions))]
        instruction = template.format(question=raw.question, options=format_options(raw.options)).strip()
        if not instruction:
            why = (f"template {template!r} renders nothing for it" if (raw.question or "").strip()
                   else "the source gives no question")
            raise SourceError(f"task {task.name!r}: row {row_id} has an empty instruction ({why}), so "
                              f"`instructions` must hold {{question}} or fixed text (e.g. 'What is shown in "
                              f"this image?')")
        return {"id": row_id, "task": task.name, "image": {"bytes": image, "path": None},
                "instruction": instruction, "answer": raw.target, "answers": list(raw.answers), "chunk": chunk}


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(rows_table(rows), path)


def build_stream(
    spec: StreamSpec,
    out: str | Path,
    *,
    base_dir: Path | None = None,
    overwrite: bool = False,
    strict: bool = False,
    progress: ProgressFn | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Build `spec` into `out` and return its manifest.

    `workers` processes draw builtin rows in parallel (default: the CPU count, at most 8;
    0 or 1 = in this process). The output does not depend on it.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise StrcvitError(f"{out} already exists; pass --overwrite to replace it")
    counts = chunk_counts(spec)
    started = time.perf_counter()
    sources = {t.name: make_source(t.source, stream_seed=spec.seed, task_name=t.name, base_dir=base_dir)
               for t in spec.tasks}
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    with contextlib.ExitStack() as stack:
        builtin = [s for s in sources.values() if isinstance(s, BuiltinSource)]
        if workers > 1 and builtin:
            pool = stack.enter_context(ProcessPoolExecutor(workers, initializer=exit_with_parent,
                                                           initargs=(os.getpid(),)))
            ahead = blocks_ahead(workers, max(s.config.image_size for s in builtin))
            prefetch = BlockPrefetch(pool_draw(pool), ahead)
            for s in builtin:
                s.prefetch = prefetch
        manifest = _build(spec, out, sources, counts, overwrite, strict, progress)
    manifest["_build_seconds"] = time.perf_counter() - started
    return manifest


def _build(spec: StreamSpec, out: Path, sources: dict[str, Source], counts: list[dict[str, int]],
           overwrite: bool, strict: bool, progress: ProgressFn | None) -> dict[str, Any]:
    b = _Build(spec, strict)
    fp = Fingerprint(spec.model_dump(mode="json"))
    for task in spec.tasks:  # what will be taken, in order: sources that draw ahead draw that
        sources[task.name].expect("test", task.test_size)
    for wanted in counts:
        for name, n in wanted.items():
            sources[name].expect("train", n)
    total_steps = len(spec.tasks) + spec.num_chunks
    step = 0
    chunks_meta: list[dict[str, Any]] = []
    with atomic_directory(out, overwrite=overwrite) as tmp:
        for task in spec.tasks:
            feed = _TaskFeed(task, sources[task.name], "test",
                             derive_seed(spec.seed, "test-order", task.name), b)
            rows = feed.take(task.test_size, chunk=-1)
            if len(rows) < task.test_size:
                raise SourceError(f"task {task.name!r}: its source {sources[task.name].name!r} gave only "
                                  f"{len(rows)} usable test rows; test_size is {task.test_size}")
            write_rows(tmp / test_path(task.name), rows)
            fp.add_ids(f"test/{task.name}", [r["id"] for r in rows])
            step += 1
            if progress:
                progress(f"test set {task.name}", step, total_steps)
        feeds = {t.name: _TaskFeed(t, sources[t.name], "train", derive_seed(spec.seed, "train-order", t.name), b)
                 for t in spec.tasks}
        for index, wanted in enumerate(counts):
            rows: list[dict[str, Any]] = []
            got: dict[str, int] = {}
            for name, n in wanted.items():
                taken = feeds[name].take(n, chunk=index)
                if len(taken) < n and not spec.allow_short:
                    raise SourceError(
                        f"task {name!r}: source {sources[name].name!r} ran out of rows in chunk {index} "
                        f"(needed {n}, got {len(taken)}; {feeds[name].shortfall()}). Lower "
                        f"chunk_size/num_chunks or the task's share, or set `allow_short: true` in the spec to "
                        f"accept short chunks."
                    )
                got[name] = len(taken)
                rows.extend(taken)
            derive_rng(spec.seed, "chunk-order", index).shuffle(rows)
            write_rows(tmp / chunk_path(index), rows)
            fp.add_ids(f"chunk/{index}", [r["id"] for r in rows])
            chunks_meta.append({"index": index, "size": len(rows), "counts": {k: v for k, v in got.items() if v}})
            step += 1
            if progress:
                progress(f"chunk {index}", step, total_steps)
        for name, src in sources.items():
            for reason, n in src.counters().items():
                b.dropped.setdefault(name, {})[reason] = b.dropped.get(name, {}).get(reason, 0) + n
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "name": spec.name,
            "fingerprint": fp.hexdigest(),
            "seed": spec.seed,
            "chunk_size": spec.chunk_size,
            "num_chunks": spec.num_chunks,
            "task_ids_visible": spec.task_ids_visible,
            "spec": spec.model_dump(mode="json"),
            "tasks": [
                {"name": t.name, "family": t.family, "metric": t.metric, "test_size": t.test_size,
                 "source": sources[t.name].name, "license": sources[t.name].license}
                for t in spec.tasks
            ],
            "chunks": chunks_meta,
            "dropped": {k: v for k, v in sorted(b.dropped.items()) if v},
            "created_with": library_versions(("strcvit-bench", "datasets", "pyarrow", "pillow")),
        }
        seal_and_write(tmp, manifest)
    return manifest


def seal_and_write(tmp: Path, manifest: dict[str, Any]) -> None:
    """Seal every data file and the result-deciding manifest fields, then write the manifest and
    the dataset card: the last step of every way a stream directory is made."""
    files = {rel: file_sha256(tmp / rel) for rel in data_files(manifest)}
    manifest["content"] = {"files": files, "seal": content_seal(manifest, files)}
    atomic_write_json(tmp / MANIFEST, manifest)
    atomic_write_text(tmp / "README.md", render_card(manifest))
