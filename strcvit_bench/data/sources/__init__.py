"""Source kinds: one `Source` subclass per kind, with the config model a spec writes.

Adding a kind is a module with a `Source` subclass (its `Config` has `kind: Literal["mykind"]`)
and one `SOURCES.register` line below, or a `strcvit_bench.sources` entry point in another
package. Spec parsing validates a task's `source` against the configs of every registered kind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Field

from strcvit_bench.data.sources.base import ColumnMap, Source, SourceRow
from strcvit_bench.data.sources.hf import PRESETS
from strcvit_bench.registry import Registry

SOURCES: Registry[type[Source]] = Registry("source kind", entry_point_group="strcvit_bench.sources")
SOURCES.register("builtin", "strcvit_bench.data.sources.builtin.source:BuiltinSource")
SOURCES.register("hf", "strcvit_bench.data.sources.hf:HFSource")
SOURCES.register("local", "strcvit_bench.data.sources.local:LocalSource")


def source_config_type() -> Any:
    """The spec's `source` type: the union of every registered kind's config, tagged by `kind`."""
    configs = tuple(cls.Config for _, cls in SOURCES.items())
    return Annotated[Union[configs], Field(discriminator="kind")]  # noqa: UP007 - a runtime tuple


SourceConfig = source_config_type()
SOURCE_KINDS = tuple(SOURCES.names())


def make_source(config: Any, *, stream_seed: int, task_name: str, base_dir: Path | None) -> Source:
    return SOURCES.get(config.kind).from_spec(config, stream_seed=stream_seed, task_name=task_name, base_dir=base_dir)


__all__ = ["ColumnMap", "PRESETS", "SOURCES", "SOURCE_KINDS", "Source", "SourceConfig", "SourceRow", "make_source"]
