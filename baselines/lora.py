"""Sequential LoRA: one adapter trained on every chunk in turn — the lower bound."""

from __future__ import annotations

from strcvit_bench.methods.base import Method


class LoRA(Method):
    name = "lora"
    description = "one LoRA adapter trained sequentially on every chunk (lower bound)"
