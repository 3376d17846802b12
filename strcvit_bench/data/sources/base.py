"""What every source delivers: an endless-or-finite, seeded, single-pass row iterator."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

Which = Literal["train", "test"]


class StrictModel(BaseModel):
    """Spec models reject unknown keys so that a typo is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid")


class ColumnMap(StrictModel):
    """Where the fields of a row live in a tabular source.

    Values are column paths: `question`, `answers[].answer` (a field of every element of a
    list of dicts), `texts[0].user` (one element). `None` means the source has no such column.
    """

    image: str = "image"
    question: str | None = "question"
    answers: str | None = "answers"
    answer: str | None = None
    id: str | None = None
    label: str | None = None
    choices: str | None = None
    answer_index: str | None = None


@dataclass
class SourceRow:
    """One raw example before it becomes a stream row.

    `image` is encoded bytes (kept as the source stored them, so no re-encoding) or a PIL image
    (builtin generators), which the builder encodes as PNG.
    """

    id: str
    image: Any
    question: str
    answers: list[str]
    answer: str | None = None
    options: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return self.answer if self.answer is not None else self.answers[0]


class Source(ABC):
    """A configured data source. `name` prefixes the stream ids of its rows.

    A source kind is a `Source` subclass whose `Config` (a StrictModel with `kind: Literal[...]`)
    is what a stream spec writes, registered under that kind in `SOURCES`."""

    name: str
    license: str | None = None
    Config: ClassVar[type[StrictModel]]

    @classmethod
    def from_spec(cls, config: Any, *, stream_seed: int, task_name: str, base_dir: Path | None) -> Source:
        """The source a spec's task configures (`base_dir`: the spec's folder, for relative paths)."""
        return cls(config)  # type: ignore[call-arg]

    @abstractmethod
    def split_name(self, which: Which) -> str:
        """The source's own split name used for `which` (appears in stream row ids)."""

    def shares_split(self) -> bool:
        """True when test rows are held out of the same split the train rows come from."""
        return self.split_name("test") == self.split_name("train")

    @abstractmethod
    def iter_rows(self, which: Which, seed: int) -> Iterator[SourceRow]:
        """Rows of the split in a seeded order; each row at most once."""

    def expect(self, which: Which, rows: int) -> None:
        """A hint, in the order the builder will take rows: `rows` more of `which`. A source
        that draws ahead (the builtin generators in worker processes) draws what it is told."""
        return None

    def counters(self) -> dict[str, int]:
        """Rows the source dropped on its own (e.g. without an image), by reason."""
        return {}


def quiet_datasets() -> Any:
    """`datasets`, with its own progress bars off: the CLI shows one bar, and datasets' bars
    would otherwise print ahead of, and bury, our error lines."""
    import datasets

    datasets.disable_progress_bars()
    return datasets


def resolve_path(path: str, base_dir: Path | None) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    return p
