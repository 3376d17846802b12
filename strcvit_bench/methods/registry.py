"""The method registry: a new method is one module plus one line here (or an entry point)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from strcvit_bench.errors import StrcvitError
from strcvit_bench.registry import Registry

if TYPE_CHECKING:
    from strcvit_bench.methods.base import Method, MethodOptions

METHODS: Registry[type[Method]] = Registry("method", entry_point_group="strcvit_bench.methods",
                                          hint="`strcvit methods` lists them with their options")
# name -> "module:class", imported on first use (a label or a listing imports nothing)
METHODS.register("lora", "strcvit_bench.baselines.lora:LoRA")
METHODS.register("replay", "strcvit_bench.baselines.replay:Replay")
METHODS.register("ewc", "strcvit_bench.baselines.ewc:EWC")
METHODS.register("moelora", "strcvit_bench.baselines.moelora:MoELoRA")
METHODS.register("smolora", "strcvit_bench.baselines.smolora:SMoLoRA")
METHODS.register("strlora", "strcvit_bench.strlora.method:StrLoRA")
METHODS.register("branchlora", "strcvit_bench.baselines.branchlora.method:BranchLoRA")
METHODS.register("cram", "strcvit_bench.baselines.cram.method:CRAM")
METHODS.register("joint", "strcvit_bench.baselines.joint:Joint")


def methods() -> dict[str, type[Method]]:
    """Name → method class, every method imported."""
    return dict(METHODS.items())


def get_method(name: str) -> type[Method]:
    cls = METHODS.get(name)
    if getattr(cls, "name", None) != name:
        raise StrcvitError(f"method {name!r} is registered as {cls!r}, whose `name` is "
                           f"{getattr(cls, 'name', None)!r}; the two must agree")
    return cls


def method_label(name: str, options: dict[str, Any]) -> str:
    """The method name plus its non-default options, so ablations get their own leaderboard row."""
    defaults = get_method(name).Options().model_dump()
    diff = {k: v for k, v in options.items() if defaults.get(k, v) != v}
    if not diff:
        return name
    return name + "[" + ",".join(f"{k}={str(v).lower()}" for k, v in sorted(diff.items())) + "]"


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
