"""The stream spec (YAML), validated with pydantic.

Errors are turned into one paragraph naming the file, the key path (`tasks[1].metric`) and
what is allowed there, because a researcher editing YAML should not have to read a pydantic
traceback.
"""

from __future__ import annotations

import math
import string
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from strcvit_bench.data.sources import SourceConfig
from strcvit_bench.data.sources.base import StrictModel
from strcvit_bench.errors import SpecError
from strcvit_bench.evaluation.scoring import METRICS

FAMILIES = ("vqa", "ocr", "chart", "remote_sensing", "classification", "other")
PROFILES = ("constant", "ramp_up", "ramp_down", "burst", "periodic")
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"  # also a valid Hub split name
TEMPLATE_FIELDS = ("question", "options")


class TaskSpec(StrictModel):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    family: Literal[FAMILIES]  # type: ignore[valid-type]
    source: SourceConfig
    instructions: list[str] = Field(default_factory=lambda: ["{question}"], min_length=1)
    metric: Literal[tuple(METRICS)]  # type: ignore[valid-type]
    test_size: int = Field(100, ge=1)

    @field_validator("instructions")
    @classmethod
    def _templates(cls, templates: list[str]) -> list[str]:
        for t in templates:
            if not t.strip():
                raise ValueError("an instruction template is empty: write {question}, {options} or fixed text "
                                 "such as 'What is shown in this image?'")
            try:
                parts = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(t) if f is not None]
            except ValueError as exc:
                raise ValueError(f"template {t!r} is not a valid format string: {exc}") from None
            # plain placeholders only: a format spec like {question:>5000000000} costs minutes and
            # gigabytes, and conversions ({question!r}) change the text behind the user's back
            fancy = [f for f, spec, conv in parts if spec or conv]
            if fancy:
                raise ValueError(f"template {t!r}: placeholders take no format spec or conversion; write "
                                 + ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS) + " as they are")
            names = {f for f, _, _ in parts}
            bad = names - set(TEMPLATE_FIELDS)
            if bad:
                raise ValueError(f"template {t!r} uses unknown placeholder(s) {sorted(bad)}; allowed: "
                                 + ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS))
        return templates


class TaskSchedule(StrictModel):
    """A task's share over the stream; chunk indices are 0-based like the files (`chunk_000`)."""

    start: int = Field(0, ge=0)
    end: int | None = Field(None, ge=0)
    profile: Literal[PROFILES] = "constant"  # type: ignore[valid-type]
    weight: float = Field(1.0, gt=0, allow_inf_nan=False)
    period: int = Field(2, ge=1)
    duty: int = Field(1, ge=1)  # chunks on per period (`on` would parse as a YAML boolean)
    peak: int | None = None
    width: float = Field(1.0, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _order(self) -> TaskSchedule:
        if self.end is not None and self.end < self.start:
            raise ValueError(f"end ({self.end}) is before start ({self.start})")
        return self


class ScheduleSpec(StrictModel):
    """Either per-task profiles (`tasks`) or an explicit per-chunk table of weights (`table`)."""

    tasks: dict[str, TaskSchedule] | None = None
    table: list[dict[str, float]] | None = None
    note: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ScheduleSpec:
        if (self.tasks is None) == (self.table is None):
            raise ValueError("give exactly one of `tasks` (per-task profiles) or `table` (per-chunk weights)")
        for row in self.table or []:
            for task, w in row.items():
                if not math.isfinite(w) or w < 0:
                    raise ValueError(f"weight {w} for task {task!r} in the table: weights are finite and >= 0")
        return self


class StreamSpec(StrictModel):
    # a safe single path component: the default --out is streams/<name>, and "." or ".." would
    # make it streams/ itself or its parent (which --overwrite would then replace)
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    description: str = ""
    seed: int = 0
    chunk_size: int = Field(2000, ge=1)
    num_chunks: int = Field(..., ge=1)
    task_ids_visible: bool = False
    allow_short: bool = False
    tasks: list[TaskSpec] = Field(..., min_length=1)
    schedule: ScheduleSpec

    @field_validator("name")
    @classmethod
    def _path_component(cls, name: str) -> str:
        if set(name) == {"."}:
            raise ValueError(f"{name!r} is not a usable stream name: it must name a directory of its own")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> StreamSpec:
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"task names must be unique; repeated: {', '.join(dupes)}")
        known = set(names)
        used: set[str] = set()
        if self.schedule.tasks is not None:
            # a window past the end is allowed: the task is then only evaluated, never trained on
            # (so a stream shortened with --num-chunks stays valid)
            used = set(self.schedule.tasks)
        else:
            assert self.schedule.table is not None
            if len(self.schedule.table) != self.num_chunks:
                raise ValueError(f"schedule.table has {len(self.schedule.table)} rows but num_chunks is "
                                 f"{self.num_chunks}")
            for row in self.schedule.table:
                used |= set(row)
        unknown = sorted(used - known)
        if unknown:
            raise ValueError(f"schedule names unknown task(s) {', '.join(unknown)}; tasks are: {', '.join(names)}")
        return self

    def task(self, name: str) -> TaskSpec:
        return next(t for t in self.tasks if t.name == name)


# --- loading and error reporting ------------------------------------------------------------

def _strip(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        return tp


def _allowed_keys(loc: tuple[Any, ...]) -> list[str] | None:
    """The keys allowed at the parent of `loc`, walking the spec models (union tags included)."""
    tp: Any = StreamSpec
    parts = list(loc[:-1])
    i = 0
    while i < len(parts):
        part = parts[i]
        tp = _strip(tp)
        origin = typing.get_origin(tp)
        if origin in (list, tuple):
            tp = typing.get_args(tp)[0]
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        elif origin in (typing.Union, types.UnionType):
            for arg in typing.get_args(tp):
                arg = _strip(arg)
                kind = getattr(arg, "model_fields", {}).get("kind")
                if kind is not None and part in typing.get_args(kind.annotation):
                    tp = arg
                    break
            else:
                return None
        elif isinstance(tp, type) and issubclass(tp, BaseModel):
            if part not in tp.model_fields:
                return None
            tp = tp.model_fields[part].annotation
        else:
            return None
        i += 1
    tp = _strip(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return None


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("builtin", "hf", "local", "function-after", "function-before"):
            continue  # discriminator tags and validator names are not keys the user wrote
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def format_validation_error(exc: ValidationError, where: str) -> str:
    lines = [f"{where}: invalid stream spec"]
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = _format_loc(loc)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc)
            hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
            lines.append(f"  - {path}: unknown key{hint}")
        elif err["type"] == "missing":
            lines.append(f"  - {path}: required key is missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = err.get("input")
            got_s = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
            lines.append(f"  - {path}: {msg}{got_s}")
    return "\n".join(lines)


def parse_spec(data: Any, where: str = "<spec>") -> StreamSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{where}: a stream spec must be a YAML mapping at the top level")
    try:
        return StreamSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, where)) from None


def decode_spec_text(raw: bytes, path: Path) -> str:
    """Specs are shared between machines, so one encoding: UTF-8 (a BOM is tolerated)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise SpecError(f"{path}: the file is UTF-16 encoded; save it as UTF-8 (stream specs are UTF-8)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise SpecError(f"{path}: not UTF-8 text (byte {raw[exc.start]:#04x} at line {line}); "
                        f"save the spec as UTF-8") from None


def read_spec_data(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec file ({exc.strerror or exc})") from None
    text = decode_spec_text(raw, path)
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise SpecError(f"{path}: the YAML is nested too deeply to be a stream spec") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a stream spec must be a YAML mapping at the top level")
    return data


def apply_overrides(data: dict[str, Any], *, seed: int | None = None, num_chunks: int | None = None,
                    chunk_size: int | None = None) -> dict[str, Any]:
    """Command-line overrides. A shorter `num_chunks` truncates an explicit table."""
    data = dict(data)
    if seed is not None:
        data["seed"] = seed
    if chunk_size is not None:
        data["chunk_size"] = chunk_size
    if num_chunks is not None:
        schedule = data.get("schedule")
        if isinstance(schedule, dict) and isinstance(schedule.get("table"), list):
            if num_chunks > len(schedule["table"]):
                raise SpecError(f"--num-chunks {num_chunks} exceeds the {len(schedule['table'])} rows of the "
                                f"spec's explicit schedule table")
            data["schedule"] = {**schedule, "table": schedule["table"][:num_chunks]}
        data["num_chunks"] = num_chunks
    return data


def load_spec(path: str | Path, **overrides: Any) -> StreamSpec:
    data = apply_overrides(read_spec_data(path), **overrides)
    return parse_spec(data, str(path))
