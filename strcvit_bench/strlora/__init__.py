"""StrLoRA, the reference implementation (arXiv 2605.16353; docs/methods.md).

`routing` holds the formulas as pure functions, `layer` the adapter layer, `method` the
plugin that wires them into the runner.
"""

from strcvit_bench.strlora.layer import StrLoRALinear
from strcvit_bench.strlora.method import StrLoRA, StrLoRAOptions

__all__ = ["StrLoRA", "StrLoRALinear", "StrLoRAOptions"]
