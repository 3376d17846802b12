"""The `local` source kind: files on disk (parquet, JSON lines, image folders, LLaVA and
ms-swift conversation JSON), so users can import the authors' released stream or a CoIN task.

Local data is loaded non-streaming by default: `datasets` memory-maps it, so a full seeded
permutation costs no RAM and gives a better shuffle than a streaming buffer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from strcvit_bench.data.sources.base import ColumnMap, StrictModel, Which, quiet_datasets, resolve_path
from strcvit_bench.data.sources.tabular import TabularSource
from strcvit_bench.errors import SourceError

FORMATS = ("parquet", "jsonl", "json", "imagefolder", "llava", "swift")
_BUILDER = {"parquet": "parquet", "jsonl": "json", "json": "json", "imagefolder": "imagefolder",
            "llava": "json", "swift": "json"}
# columns produced by `prepare` for conversation formats
_CONVERSATION_COLUMNS = {"image": "image", "question": "question", "answers": None, "answer": "answer", "id": "id"}


class LocalSourceConfig(StrictModel):
    kind: Literal["local"]
    format: Literal[FORMATS]  # type: ignore[valid-type]
    path: str
    test_path: str | None = None
    image_root: str | None = None
    name: str | None = None
    columns: ColumnMap = Field(default_factory=ColumnMap)
    streaming: bool = False
    shuffle_buffer: int = Field(10_000, ge=0)
    license: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _format_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fmt = data.get("format")
        user_cols = data.get("columns") or {}
        if fmt in ("llava", "swift"):
            data = {**data, "columns": {**_CONVERSATION_COLUMNS, **user_cols}}
        elif fmt == "imagefolder":
            data = {**data, "columns": {"image": "image", "question": None, "answers": None, "label": "label",
                                        **user_cols}}
        return data


def _first_turns(turns: list[dict[str, Any]], role_key: str, user: set[str], assistant: set[str],
                 text_key: str) -> tuple[str | None, str | None]:
    question = answer = None
    for turn in turns or []:
        role = turn.get(role_key)
        if question is None and role in user:
            question = turn.get(text_key)
        elif question is not None and role in assistant:
            answer = turn.get(text_key)
            break
    return question, answer


def _from_llava(record: dict[str, Any]) -> dict[str, Any]:
    q, a = _first_turns(record.get("conversations"), "from", {"human", "user"}, {"gpt", "assistant"}, "value")
    return {"id": str(record.get("id", "")) or None, "image": record.get("image"), "question": q, "answer": a}


def _from_swift(record: dict[str, Any]) -> dict[str, Any]:
    q, a = _first_turns(record.get("messages"), "role", {"user"}, {"assistant"}, "content")
    images = record.get("images") or []
    image = images[0] if images else None
    if isinstance(image, dict):
        image = image.get("path") or image
    return {"id": str(record.get("id", "")) or None, "image": image, "question": q, "answer": a}


class LocalSource(TabularSource):
    Config = LocalSourceConfig

    @classmethod
    def from_spec(cls, config: LocalSourceConfig, *, stream_seed: int, task_name: str,
                  base_dir: Path | None) -> LocalSource:
        return cls(config, base_dir)

    def __init__(self, config: LocalSourceConfig, base_dir: Path | None):
        super().__init__()
        self.config = config
        self.base_dir = base_dir
        self.path = resolve_path(config.path, base_dir)
        self.test_path = resolve_path(config.test_path, base_dir) if config.test_path else None
        self.name = config.name or self.path.stem
        self.license = config.license
        self.columns = config.columns
        self.streaming = config.streaming
        self.shuffle_buffer = config.shuffle_buffer
        if config.image_root:
            self.image_root = resolve_path(config.image_root, base_dir)
        else:
            self.image_root = self.path if self.path.is_dir() else self.path.parent

    def split_name(self, which: Which) -> str:
        return "test" if which == "test" and self.test_path is not None else "train"

    def open(self, which: Which) -> Any:
        datasets = quiet_datasets()

        path = self.test_path if which == "test" and self.test_path is not None else self.path
        fmt = self.config.format
        if fmt != "imagefolder" and not path.exists() and not any(path.parent.glob(path.name)):
            raise SourceError(f"local source {self.name!r}: {path} does not exist")
        try:
            if fmt == "imagefolder":
                if not path.is_dir():
                    raise SourceError(f"local source {self.name!r}: imagefolder path {path} is not a directory")
                ds = datasets.load_dataset("imagefolder", data_dir=str(path), split="train",
                                           streaming=self.streaming)
            else:
                files = str(path / f"**/*.{fmt}") if path.is_dir() else str(path)
                ds = datasets.load_dataset(_BUILDER[fmt], data_files=files, split="train",
                                           streaming=self.streaming)
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(f"local source {self.name!r}: could not read {path} as {fmt}: "
                              f"{type(exc).__name__}: {exc}") from None
        return ds

    def prepare(self, ds: Any) -> Any:
        if self.config.format == "llava":
            return ds.map(_from_llava, remove_columns=list(ds.features) if ds.features else None)
        if self.config.format == "swift":
            return ds.map(_from_swift, remove_columns=list(ds.features) if ds.features else None)
        return ds
