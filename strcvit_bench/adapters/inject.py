"""Replacing a model's target linear layers by adapter layers, selected by a name regex."""

from __future__ import annotations

import re
from collections.abc import Callable

from torch import nn

from strcvit_bench.errors import StrcvitError


def target_linears(model: nn.Module, pattern: str) -> list[tuple[str, nn.Linear]]:
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise StrcvitError(f"--target-modules {pattern!r} is not a valid regular expression ({exc})") from None
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and rx.fullmatch(n)]


def inject(model: nn.Module, pattern: str, factory: Callable[[str, nn.Linear], nn.Module]) -> list[str]:
    """Swap every linear layer whose full name matches `pattern` for `factory(name, layer)`."""
    targets = target_linears(model, pattern)
    if not targets:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][:8]
        raise StrcvitError(f"the target-module regex {pattern!r} matches no linear layer of this model; "
                           f"linear layers look like: {', '.join(linears)} …")
    for name, layer in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, factory(name, layer))
    return [n for n, _ in targets]


def adapter_layers(model: nn.Module, kind: type) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kind)]
