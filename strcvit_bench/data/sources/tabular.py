"""Shared logic of the table-shaped sources (`hf` and `local`): column paths and row mapping."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from strcvit_bench.data.sources.base import ColumnMap, Source, SourceRow, Which
from strcvit_bench.errors import SourceError

_STEP = re.compile(r"^(?P<key>[^\[\]]+)(?P<index>\[(?P<num>\d*)\])?$")


def get_path(record: dict[str, Any], path: str) -> Any:
    """Follow `a.b`, `a[].b` (every element) or `a[0].b` (one element) through a record."""
    values: list[Any] = [record]
    many = False
    for step in path.split("."):
        m = _STEP.match(step)
        if m is None:
            raise ValueError(f"bad column path {path!r}")
        nxt: list[Any] = []
        for v in values:
            if not isinstance(v, dict) or m["key"] not in v:
                raise KeyError(m["key"])
            nxt.append(v[m["key"]])
        values = nxt
        if m["index"] is not None:
            if m["num"] == "":
                many = True
                values = [x for v in values for x in (v or [])]
            else:
                values = [v[int(m["num"])] if v is not None and len(v) > int(m["num"]) else None for v in values]
    return values if many else values[0]


def top_level(path: str) -> str:
    return re.split(r"[.\[]", path, maxsplit=1)[0]


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def image_bytes(value: Any, image_root: Path | None) -> bytes | None:
    """Bytes of an image cell in any of the forms datasets and JSON files use."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        value = value.get("path")
        if not value:
            return None
    if isinstance(value, (list, tuple)):  # ms-swift style `images: [path]`
        return image_bytes(value[0], image_root) if value else None
    if isinstance(value, (str, os.PathLike)):
        p = Path(value)
        if not p.is_absolute() and image_root is not None:
            p = image_root / p
        try:
            return p.read_bytes()
        except OSError:
            return None
    if hasattr(value, "save"):  # a PIL image
        import io

        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return buf.getvalue()
    raise TypeError(f"unsupported image value {type(value).__name__}")


class TabularSource(Source):
    """A source whose records are dicts mapped to rows through a `ColumnMap`."""

    columns: ColumnMap
    explode: tuple[str, ...] = ()
    image_root: Path | None = None

    def __init__(self) -> None:
        self._label_names: list[str] | None = None
        self._dropped: dict[str, int] = {}

    def counters(self) -> dict[str, int]:
        return dict(self._dropped)

    def _drop(self, reason: str) -> None:
        self._dropped[reason] = self._dropped.get(reason, 0) + 1

    def check_columns(self, available: list[str] | None) -> None:
        """Fail early, naming the column, when the mapping points at nothing."""
        if available is None:
            return
        wanted = {k: v for k, v in self.columns.model_dump().items() if v is not None}
        for field, path in wanted.items():
            if top_level(path) not in available:
                raise SourceError(
                    f"source {self.name!r}: column {path!r} (columns.{field}) not found; the source has "
                    f"columns: {', '.join(sorted(available))}. Set `columns.{field}` to one of them, "
                    f"or to null if the source has no such field."
                )

    def records_to_rows(self, record: dict[str, Any]) -> Iterator[SourceRow]:
        cols = self.columns
        image = image_bytes(get_path(record, cols.image), self.image_root)
        if image is None:
            self._drop("no_image")
            return
        base_id = None
        if cols.id is not None:
            base_id = str(get_path(record, cols.id))
        questions = get_path(record, cols.question) if cols.question else ""
        answers_val = get_path(record, cols.answers) if cols.answers else None
        answer_val = get_path(record, cols.answer) if cols.answer else None
        if self.explode:
            qs = list(questions or [])
            ans = list(answers_val if answers_val is not None else answer_val or [])
            pairs = [(q, _as_list(a), None) for q, a in zip(qs, ans, strict=False)]
        else:
            answers = _as_list(answers_val)
            answer = None if answer_val is None else str(answer_val)
            options: list[str] = []
            if cols.label is not None:
                label = get_path(record, cols.label)
                names = self._label_names
                text = names[label] if names is not None and isinstance(label, int) else str(label)
                synonyms = [s.strip() for s in text.split(",") if s.strip()]
                answers = answers or synonyms
                answer = answer or synonyms[0]
            if cols.choices is not None:
                options = _as_list(get_path(record, cols.choices))
                if cols.answer_index is not None:
                    idx = get_path(record, cols.answer_index)
                    answer = options[int(idx)]
                    answers = [answer]
            if answer is not None and not answers:
                answers = [answer]
            pairs = [(questions, answers, answer, options)] if answers else []  # type: ignore[list-item]
            if not answers:
                self._drop("no_answer")
        for k, pair in enumerate(pairs):
            question, answers, answer = pair[0], pair[1], pair[2]
            options = pair[3] if len(pair) > 3 else []
            if not answers:
                self._drop("no_answer")
                continue
            q = "" if question is None else str(question)
            if base_id is None:  # no id column: a content id is stable across machines and orders
                row_id = hashlib.sha1(image + b"\0" + q.encode("utf-8")).hexdigest()[:16]
            else:
                row_id = base_id if not self.explode else f"{base_id}_{k}"
            yield SourceRow(id=row_id, image=image, question=q.replace("<image>", "").strip(),
                            answers=answers, answer=answer, options=options)

    # --- iteration over a `datasets` object ------------------------------------------------

    streaming: bool = True
    shuffle_buffer: int = 10_000

    def open(self, which: Which) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def prepare(self, ds: Any) -> Any:
        """Hook for record-level reshaping (LLaVA/ms-swift conversations)."""
        return ds

    def iter_rows(self, which: Which, seed: int) -> Iterator[SourceRow]:
        import datasets

        ds = self.prepare(self.open(which))
        features = getattr(ds, "features", None)
        self.check_columns(list(features) if features is not None else None)
        image_col = top_level(self.columns.image)
        if features is not None and isinstance(features.get(image_col), datasets.Image):
            # keep the stored bytes: no decode + re-encode, and the original format survives
            ds = ds.cast_column(image_col, datasets.Image(decode=False))
        if self.columns.label is not None and features is not None:
            feat = features.get(top_level(self.columns.label))
            if isinstance(feat, datasets.ClassLabel):
                self._label_names = list(feat.names)
        if isinstance(ds, datasets.IterableDataset):
            if self.shuffle_buffer > 0:
                ds = ds.shuffle(seed=seed % 2**32, buffer_size=self.shuffle_buffer)
        elif self.shuffle_buffer > 0:
            ds = ds.shuffle(seed=seed % 2**32)
        checked = features is not None
        for record in ds:
            if not checked:
                self.check_columns(list(record))
                checked = True
            yield from self.records_to_rows(record)
