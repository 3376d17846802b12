"""The method registry: a new method is one module plus one line here."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from strcvit_bench.errors import StrcvitError
from strcvit_bench.methods.base import Method, MethodOptions


def methods() -> dict[str, type[Method]]:
    """Name → method class. Imported lazily: method modules import the API from this package."""
    from baselines.branchlora import BranchLoRA
    from baselines.cram import CRAM
    from baselines.ewc import EWC
    from baselines.joint import Joint
    from baselines.lora import LoRA
    from baselines.moelora import MoELoRA
    from baselines.replay import Replay
    from baselines.smolora import SMoLoRA
    from strcvit_bench.strlora import StrLoRA

    return {m.name: m for m in (LoRA, Replay, EWC, MoELoRA, SMoLoRA, StrLoRA, BranchLoRA, CRAM, Joint)}


def get_method(name: str) -> type[Method]:
    try:
        return methods()[name]
    except KeyError:
        raise StrcvitError(f"unknown method {name!r}; available: {', '.join(methods())} "
                           f"(`strcvit methods` lists them with their options)") from None


def _coerce(value: str) -> Any:
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def parse_options(method: type[Method], pairs: list[str] | dict[str, Any]) -> MethodOptions:
    """`key=value` strings (from `--opt`) or a dict to the method's validated options."""
    if isinstance(pairs, dict):
        raw = dict(pairs)
    else:
        raw = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise StrcvitError(f"--opt {pair!r}: expected key=value")
            raw[key.strip().replace("-", "_")] = _coerce(value.strip())
    try:
        return method.Options.model_validate(raw)
    except ValidationError as exc:
        fields = ", ".join(method.Options.model_fields)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {'unknown option' if e['type'] == 'extra_forbidden' else e['msg']}"
            for e in exc.errors())
        raise StrcvitError(f"method {method.name!r}: {problems}. Its options are: {fields}") from None
