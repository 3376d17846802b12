"""SMoLoRA (Wang et al., ICCV 2025): separable routing for continual visual instruction tuning.

Two expert groups per target layer. Visual-understanding (VU) experts are routed by the
visual content of the sequence — a linear gate on the mean of the layer's input tokens, hard
argmax. Instruction-following (IF) experts are routed by the instruction — a linear gate on
its 384-d all-MiniLM-L6-v2 embedding, hard argmax. The two selected experts' outputs are mixed
per token by softmax([fc_A(vu_out), fc_B(if_out)]). A ~ N(0, 0.01), B = 0, as released.

As in the released code the gates pass no gradient (a hard argmax), so they stay the random
projections they start as; the experts and the fc mixing heads learn. Where we differ, on
purpose: the released IF gate reads the embedding of the *task's* instruction template, picked
by task id; streams hide task ids, so each sample's own instruction is embedded instead. The
VU mean is over real tokens (the release also averages padding), and during generation the VU
choice made on the prompt is kept for the decoded tokens (the release re-routes on each single
new token). `if_encoder=llm_embeddings` swaps MiniLM for the LLM's own input embeddings.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from strcvit_bench.adapters import inject
from strcvit_bench.adapters.context import BatchContext
from strcvit_bench.adapters.experts import ExpertLoRA
from strcvit_bench.adapters.routing import masked_mean, one_hot_argmax
from strcvit_bench.methods.base import Rows
from strcvit_bench.methods.experts import ExpertMethod, ExpertOptions
from strcvit_bench.models.views import text_view


class SMoLoRALinear(ExpertLoRA):
    def __init__(self, base: nn.Linear, experts: int, rank_per_expert: int, alpha: float, dropout: float,
                 if_dim: int, context: BatchContext | None = None):
        super().__init__(base, experts, rank_per_expert, alpha, dropout, init_std=0.01, context=context)
        half = experts // 2
        like = {"dtype": base.weight.dtype, "device": base.weight.device}
        self.router_vu = nn.Parameter(torch.empty(half, base.in_features, **like))
        self.router_if = nn.Parameter(torch.empty(half, if_dim, **like))
        self.lora_fc_A = nn.Parameter(torch.empty(1, base.out_features, **like))
        self.lora_fc_B = nn.Parameter(torch.empty(1, base.out_features, **like))
        for p in (self.router_vu, self.router_if, self.lora_fc_A, self.lora_fc_B):
            nn.init.kaiming_uniform_(p, a=math.sqrt(5))

    def vu_choice(self, x: torch.Tensor) -> torch.Tensor:
        """The VU expert from the mean of the prompt's real tokens (kept for the decoding steps)."""
        return self.context.on_prompt(
            self, x, lambda: one_hot_argmax(masked_mean(x, self.context.mask_for(x)) @ self.router_vu.t()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The release's layer, y = W0 x + m_vu · vu_out + m_if · if_out with m = softmax([fc_A(vu_out),
        fc_B(if_out)]) and vu_out = h_vu Bᵀ, if_out = h_if Bᵀ (h the selected expert's rank block of
        (α/r) A x). Both heads and the mix are linear in B, so they are taken in rank space:
        fc(h Bᵀ) = h (fc B)ᵀ and m_vu h_vu Bᵀ + m_if h_if Bᵀ = (m_vu h_vu + m_if h_if) Bᵀ — one
        d_out-wide product a token, as LoRA's, where the written-out form takes two, plus two
        d_out-wide heads and mixes (benchmarks/speedups.py: same loss at the same weights)."""
        vu = self.vu_choice(x)                                        # (B, half) one-hot
        ins = one_hot_argmax(self.context["if_embedding"].to(x.dtype) @ self.router_if.t())  # (B, half) one-hot
        zeros = torch.zeros_like(vu)
        h = (self.dropout(x) @ self.lora_A.t()).unflatten(-1, (self.experts, self.rank_per_expert))
        h_vu = (h * (torch.cat([vu, zeros], -1)[:, None, :, None] * self.scale)).flatten(-2)
        h_if = (h * (torch.cat([zeros, ins], -1)[:, None, :, None] * self.scale)).flatten(-2)
        heads = torch.cat([self.lora_fc_A, self.lora_fc_B]) @ self.lora_B  # (2, r): fc_A B, fc_B B
        scores = torch.stack([h_vu @ heads[0], h_if @ heads[1]], -1)
        mix = torch.softmax(scores.float(), dim=-1).to(x.dtype)      # (B, L, 2)
        if self.recording:
            vu_w, if_w = torch.cat([vu, zeros], -1)[:, None], torch.cat([zeros, ins], -1)[:, None]
            eff = mix[..., :1] * vu_w + mix[..., 1:] * if_w
            self.record_tokens(eff, self.context.mask_for(x))
            if x.shape[1] > 1:
                self.record_selection(torch.cat([vu, ins], -1))
        return self.base(x) + (mix[..., :1] * h_vu + mix[..., 1:] * h_if) @ self.lora_B.t()


class SMoLoRAOptions(ExpertOptions):
    if_encoder: Literal["minilm", "llm_embeddings"] = Field(
        "minilm", description="instruction embedding for the IF router (the paper's all-MiniLM-L6-v2, or the LLM's)")

    @field_validator("experts")
    @classmethod
    def _even(cls, v: int) -> int:
        if v < 2 or v % 2:
            raise ValueError("SMoLoRA needs an even number of experts (half VU, half IF)")
        return v


class SMoLoRA(ExpertMethod):
    name = "smolora"
    description = "separable MoLoRA: VU experts routed by visual content, IF experts by the instruction (SMoLoRA)"
    Options = SMoLoRAOptions

    def attach(self) -> None:
        o = self.options
        if o.if_encoder == "minilm":
            from strcvit_bench.models.sentence import MiniLM, minilm

            self.encoder = minilm()
            if_dim = MiniLM.dim
        else:
            self.encoder = None
            if_dim = self.ctx.bundle.input_embeddings().weight.shape[1]
        inject(self.model, self.ctx.bundle.target_modules,
               lambda name, layer: SMoLoRALinear(layer, o.experts, o.per_expert, o.alpha, o.dropout, if_dim,
                                                 self.batch_context))

    def before_forward(self, batch: dict[str, torch.Tensor], rows: Rows) -> None:
        if self.encoder is not None:
            emb = self.encoder.encode([r["instruction"] for r in rows])
        else:
            emb = text_view(self.ctx.bundle, batch)
        self.batch_context.begin(batch.get("attention_mask"), if_embedding=emb.to(batch["input_ids"].device))

    def info(self) -> dict[str, Any]:
        return {"if_encoder": self.options.if_encoder}
