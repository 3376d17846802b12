"""Source registry: one config model per kind, one constructor per kind.

Adding a source kind = a module with a `...SourceConfig` (with `kind: Literal[...]`) and a
`Source` subclass, plus one entry in `SourceConfig` and `make_source` below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

from strcvit_bench.data.sources.base import ColumnMap, Source, SourceRow
from strcvit_bench.data.sources.builtin.source import BuiltinSource, BuiltinSourceConfig, default_source_seed
from strcvit_bench.data.sources.hf import PRESETS, HFSource, HFSourceConfig
from strcvit_bench.data.sources.local import LocalSource, LocalSourceConfig

SourceConfig = Annotated[BuiltinSourceConfig | HFSourceConfig | LocalSourceConfig, Field(discriminator="kind")]
SOURCE_KINDS = ("builtin", "hf", "local")


def make_source(config: SourceConfig, *, stream_seed: int, task_name: str, base_dir: Path | None) -> Source:
    if isinstance(config, BuiltinSourceConfig):
        return BuiltinSource(config, default_source_seed(stream_seed, task_name))
    if isinstance(config, HFSourceConfig):
        return HFSource(config)
    return LocalSource(config, base_dir)


__all__ = ["ColumnMap", "PRESETS", "SOURCE_KINDS", "Source", "SourceConfig", "SourceRow", "make_source"]
