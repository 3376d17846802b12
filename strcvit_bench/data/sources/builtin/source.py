"""The `builtin` source kind: endless, seeded rows from a procedural generator."""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from strcvit_bench.data.sources.base import Source, SourceRow, StrictModel, Which
from strcvit_bench.data.sources.builtin import FAMILY_MODULES, GENERATORS
from strcvit_bench.data.sources.builtin.prefetch import BLOCK, BlockPrefetch
from strcvit_bench.seeding import derive_rng, derive_seed


class BuiltinSourceConfig(StrictModel):
    kind: Literal["builtin"]
    generator: Literal[GENERATORS]  # type: ignore[valid-type]
    image_size: int = Field(48, ge=16, le=1024)
    question_types: list[str] | None = None
    seed: int | None = None
    license: str = "cc0-1.0"

    @field_validator("question_types")
    @classmethod
    def _known_kinds(cls, v: list[str] | None, info) -> list[str] | None:
        generator = info.data.get("generator")
        if v is None or generator not in FAMILY_MODULES:
            return v
        allowed = FAMILY_MODULES[generator].QUESTION_KINDS
        bad = [k for k in v if k not in allowed]
        if bad or not v:
            raise ValueError(f"unknown question type(s) {bad} for generator {generator!r}; allowed: "
                             f"{', '.join(allowed)}")
        return v


class BuiltinSource(Source):
    """Row i of a split is a pure function of (source seed, split, i): reproducible anywhere."""

    Config = BuiltinSourceConfig

    @classmethod
    def from_spec(cls, config: BuiltinSourceConfig, *, stream_seed: int, task_name: str,
                  base_dir: Path | None) -> BuiltinSource:
        return cls(config, default_source_seed(stream_seed, task_name))

    def __init__(self, config: BuiltinSourceConfig, default_seed: int):
        self.config = config
        self.module = FAMILY_MODULES[config.generator]
        self.seed = config.seed if config.seed is not None else default_seed
        self.name = f"builtin.{config.generator}"
        self.license = config.license
        self.kinds = tuple(config.question_types or self.module.QUESTION_KINDS)

    def split_name(self, which: Which) -> str:
        return which

    def make_row(self, which: Which, index: int) -> SourceRow:
        rng = derive_rng(self.seed, self.config.generator, which, index)
        scene = self.module.sample(rng)
        image = self.module.render(scene, self.config.image_size, rng)
        question, answer = self.module.ask(scene, rng, self.kinds)
        return SourceRow(id=f"{self.seed & 0xFFFFFFFF:08x}-{index:07d}", image=image, question=question,
                         answers=[answer], answer=answer)

    # Set by the builder when worker processes draw the rows (builtin/prefetch.py).
    prefetch: BlockPrefetch | None = None

    def expect(self, which: Which, rows: int) -> None:
        if self.prefetch is not None:
            self.prefetch.expect(self, which, rows)

    def iter_rows(self, which: Which, seed: int) -> Iterator[SourceRow]:
        # `seed` is unused on purpose: generated rows are already in random order, and the
        # stream seed reaches them through the source seed.
        if self.prefetch is None:
            for index in itertools.count():
                yield self.make_row(which, index)
            return
        # Rows are pure functions of their index, so worker processes draw and PNG-encode
        # them in blocks ahead of the builder; order (and so every byte) stays the same.
        for start in itertools.count(0, BLOCK):
            yield from self.prefetch.block(self, which, start)


def pool_draw(executor: Executor) -> Callable[[BuiltinSource, str, int, int], Future]:
    """A prefetch's `draw`: the block from a worker of `executor`."""
    configs: dict[int, dict] = {}

    def draw(source: BuiltinSource, which: str, start: int, n: int) -> Future:
        config = configs.setdefault(id(source), source.config.model_dump())
        return executor.submit(_encoded_block, config, source.seed, which, start, n)

    return draw


def _encoded_block(config: dict, seed: int, which: Which, start: int, n: int) -> list[SourceRow]:
    source = BuiltinSource(BuiltinSourceConfig.model_validate(config), seed)
    rows = []
    for index in range(start, start + n):
        row = source.make_row(which, index)
        buf = io.BytesIO()
        row.image.save(buf, format="PNG")
        row.image = buf.getvalue()
        rows.append(row)
    return rows


def default_source_seed(stream_seed: int, task_name: str) -> int:
    return derive_seed(stream_seed, "builtin-source", task_name)
