"""Adapter layers that wrap frozen linear layers (one adapter type per module, like PEFT's tuners)."""

from strcvit_bench.adapters.inject import adapter_layers, inject, target_linears
from strcvit_bench.adapters.lora import LoRALinear

__all__ = ["LoRALinear", "adapter_layers", "inject", "target_linears"]
