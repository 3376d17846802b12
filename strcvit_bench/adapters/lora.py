"""LoRA (Hu et al. 2021): y = W0 x + (α/r) · B A drop(x), W0 frozen, B initialised to zero.

Our own small layer rather than peft's, because the expert methods (MoELoRA, SMoLoRA,
StrLoRA) subclass the same structure; `benchmarks/train_throughput.py` checks it is as fast
as peft's LoRA on the same model.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """Also the base of the expert banks: the same A, B, scale and dropout, split into experts."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
                 init_std: float | None = None):
        super().__init__()
        self.base = base
        self.r = r
        self.scale = alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        like = {"dtype": base.weight.dtype, "device": base.weight.device}
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **like))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **like))
        if init_std is None:
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # peft's default for A
        else:
            nn.init.normal_(self.lora_A, std=init_std)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the scale multiplies the r-wide intermediate, not the d_out-wide output (and its gradient)
        return self.base(x) + ((self.dropout(x) @ self.lora_A.t()) * self.scale) @ self.lora_B.t()
