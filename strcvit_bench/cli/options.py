"""Command options generated from a pydantic model, so a new RunConfig field is a new `run`
option with its description as help, and the two can never disagree."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

import typer
from pydantic import BaseModel


def _cli_type(annotation: Any) -> Any:
    """The type typer parses: `X | None` → X, `Literal[...]` → str (the model validates values)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else str
    if typing.get_origin(annotation) is typing.Literal:
        return str
    return annotation


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def model_parameters(model: type[BaseModel], *, skip: set[str] = frozenset(),  # type: ignore[assignment]
                     short: dict[str, str] | None = None, defaults: dict[str, Any] | None = None,
                     helps: dict[str, str] | None = None) -> list[inspect.Parameter]:
    """One keyword parameter per field of `model`: required fields are required options, bools
    are `--x/--no-x` flags, and the field's description is the help. Optional options default to
    None (the model's default is shown in the help), so the command knows what was given."""
    short, defaults, helps = short or {}, defaults or {}, helps or {}
    params = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        shown = defaults.get(name, None if field.is_required() else field.get_default(call_default_factory=True))
        kind = _cli_type(field.annotation)
        names = [flag(name)]
        if kind is bool:
            names = [f"{flag(name)}/--no-{name.replace('_', '-')}"]
        if name in short:
            names.append(short[name])
        help_text = helps.get(name) or (field.description[:1].upper() + field.description[1:] + "."
                                        if field.description else "")
        if shown is not None:
            help_text += f" (default: {shown})"
        option = typer.Option(... if field.is_required() else None, *names, help=help_text or None,
                              show_default=False)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind))
    return params


def with_parameters(fn: Callable[..., Any], params: list[inspect.Parameter]) -> Callable[..., Any]:
    """`fn(**kwargs)` presented to typer with `params` (generated) before its own parameters."""
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in inspect.signature(fn).parameters.values()
           if p.kind is not inspect.Parameter.VAR_KEYWORD]
    fn.__signature__ = inspect.Signature(params + own)  # type: ignore[attr-defined]
    return fn
