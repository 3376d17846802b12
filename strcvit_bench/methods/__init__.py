"""Continual-learning methods: the plugin API (`base`) and the registry (`registry`)."""

from strcvit_bench.methods.base import Method, MethodContext, MethodOptions

__all__ = ["Method", "MethodContext", "MethodOptions"]
