"""Continual-learning methods: the plugin API (`base`) and the registry (`registry`).

The API names resolve on first use, so that reading the registry (a leaderboard label, the
CLI's method list) does not import torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Method", "MethodContext", "MethodOptions"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from strcvit_bench.methods import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
