"""Online EWC (Schwarz et al. 2018) over the trainable (adapter + projector) parameters.

After each chunk: the diagonal empirical Fisher F = E[(∂ log p(y|x) / ∂θ)²], estimated from
per-sample gradients (the square is of each sample's own gradient, not of a batch mean; they
are recovered 16 samples a pass, adapters/per_sample.py) of the answer's log-likelihood on a
sample of the chunk; F_acc ← γ F_acc + F; θ* = the parameters after the chunk. Training on
later chunks adds (λ/2) Σ F_acc (θ − θ*)².

`variant=authors` reproduces the StrCVIT authors' EWC instead (docs/methods.md): Fisher
initialised to ones and reset at every chunk, updated after every step with F += g²/step,
anchor θ* = the weights at the chunk's start, penalty ½ λ Σ F (θ − θ*)² from the first chunk on.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from strcvit_bench.adapters.per_sample import PerSampleSquares
from strcvit_bench.methods.base import Method, MethodOptions, Rows
from strcvit_bench.seeding import derive_rng


def ewc_penalty(params: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor],
                fisher: dict[str, torch.Tensor], lam: float) -> torch.Tensor:
    """(λ/2) Σ_i F_i (θ_i − θ*_i)², differentiable in the parameters (gradient λ F (θ − θ*))."""
    names = list(params)
    return _Penalty.apply([anchor[n] for n in names], [fisher[n] for n in names], lam, *params.values())


class _Penalty(torch.autograd.Function):
    """The penalty with its gradient λ F (θ − θ*) made in the forward pass, two passes over the
    parameters, where autograd through F (θ − θ*)² kept d, d², F d² and made 500 F, 2 d and
    their product: at the 2B width the penalty covers the 34.7 M trained parameters and that
    traffic was most of EWC's extra step (benchmarks/RESULTS.md). The gradient is autograd's
    bit for bit when the loss reaches it with weight 1 (round(round(λF)·d) either way: the
    factors ½ and 2 are exact); the value is the same sum in another order."""

    @staticmethod
    def forward(ctx, anchors: list[torch.Tensor], fishers: list[torch.Tensor], lam: float,
                *params: torch.Tensor) -> torch.Tensor:
        grads, total = [], torch.zeros((), dtype=torch.float64)
        for p, a, f in zip(params, anchors, fishers, strict=True):
            d = p.detach() - a
            g = (f * lam) * d
            total += torch.dot(g.flatten(), d.flatten()).double()
            grads.append(g)
        ctx.grads = grads
        return (0.5 * total).to(params[0].dtype if params else torch.float32)

    @staticmethod
    def backward(ctx, g_out: torch.Tensor):
        grads, ctx.grads = ctx.grads, None
        scale = float(g_out)
        out = [None if not need else (g if scale == 1.0 else g * scale)
               for g, need in zip(grads, ctx.needs_input_grad[3:], strict=True)]
        return (None, None, None, *out)


def online_fisher(accumulated: dict[str, torch.Tensor] | None, new: dict[str, torch.Tensor],
                  gamma: float) -> dict[str, torch.Tensor]:
    """F_acc ← γ F_acc + F."""
    if accumulated is None:
        return {k: v.clone() for k, v in new.items()}
    return {k: gamma * accumulated[k] + new[k] for k in new}


FISHER_BATCH = 16  # samples per backward pass of the Fisher estimate (memory, not results)


class EWCOptions(MethodOptions):
    lam: float = Field(1000.0, ge=0, description="penalty strength λ")
    gamma: float = Field(0.9, ge=0, le=1, description="online decay γ of the accumulated Fisher")
    fisher_samples: int = Field(128, ge=1, description="chunk samples used to estimate the Fisher")
    variant: Literal["online", "authors"] = Field("online", description="textbook online EWC or the authors' variant")


class EWC(Method):
    name = "ewc"
    description = "LoRA + online EWC: diagonal-Fisher penalty anchoring parameters to earlier chunks"
    Options = EWCOptions

    def __init__(self, options: EWCOptions, ctx):
        super().__init__(options, ctx)
        self.fisher: dict[str, torch.Tensor] | None = None
        self.anchor: dict[str, torch.Tensor] | None = None
        self.steps = 0

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.params.items()}

    def before_chunk(self, index: int, rows: Rows) -> None:
        if self.options.variant == "authors":
            self.fisher = {n: torch.ones_like(p) for n, p in self.params.items()}
            self.anchor = self._snapshot()
            self.steps = 0

    def loss(self, task_loss: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.fisher is None or self.anchor is None or self.options.lam == 0:
            return task_loss
        return task_loss + ewc_penalty(self.params, self.anchor, self.fisher, self.options.lam)

    def after_step(self) -> None:
        if self.options.variant != "authors" or self.fisher is None:
            return
        self.steps += 1
        for n, p in self.params.items():
            if p.grad is not None:
                self.fisher[n] += p.grad.detach() ** 2 / self.steps

    def estimate_fisher(self, index: int, rows: Rows, batched: bool = True) -> dict[str, torch.Tensor]:
        """The mean squared per-sample gradient of -log p(y|x) of the answer, over a sample of the
        chunk: FISHER_BATCH samples per backward pass where every trainable tensor allows it
        (`PerSampleSquares`), else (or with `batched=False`) one sample per pass."""
        rng = derive_rng(self.ctx.seed, "ewc-fisher", index)
        sample = rng.sample(rows, min(self.options.fisher_samples, len(rows)))
        fisher = {n: torch.zeros_like(p) for n, p in self.params.items()}
        was_training = self.model.training
        self.model.eval()  # no dropout: the Fisher of the model as deployed
        parallel = self.ctx.parallel
        mine = parallel.shard(sample)  # each rank its share of the sample, then summed
        tracker = PerSampleSquares(self.model, self.params) if batched else None
        step = FISHER_BATCH if tracker is not None and tracker.covered else 1
        i = 0
        while i < len(mine):
            part = mine[i: i + step]
            self.model.zero_grad(set_to_none=True)
            if step > 1:
                loss = lambda part=part: self.batch_loss(part, sum_over_tokens=True)  # noqa: E731
                squares = tracker.run(loss, len(part))  # type: ignore[union-attr]
                if squares is None:  # a layer's input was not laid out by sample: one at a time
                    step = 1
                    continue
            else:
                self.batch_loss(part, sum_over_tokens=True).backward()  # -log p(y|x) of the answer
                squares = {n: p.grad.detach() ** 2 for n, p in self.params.items() if p.grad is not None}
            for n, sq in squares.items():
                fisher[n] += sq
            i += len(part)
        self.model.zero_grad(set_to_none=True)
        self.model.train(was_training)
        for f in fisher.values():
            parallel.sum_(f)
        return {n: f / len(sample) for n, f in fisher.items()}

    def after_chunk(self, index: int, rows: Rows) -> None:
        if self.options.variant == "authors":
            return
        self.fisher = online_fisher(self.fisher, self.estimate_fisher(index, rows), self.options.gamma)
        self.anchor = self._snapshot()

    def synchronize(self) -> None:
        """Nothing to send: the Fisher is summed over ranks as it is estimated (or, for the
        authors' variant, built from gradients DDP already averaged), the anchor is parameters."""

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {}
        for n, f in (self.fisher or {}).items():
            tensors[f"fisher.{n}"] = f
        for n, a in (self.anchor or {}).items():
            tensors[f"anchor.{n}"] = a
        return tensors, {"steps": self.steps, "has_fisher": self.fisher is not None}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.steps = meta["steps"]
        if meta["has_fisher"]:
            self.fisher = {k[len("fisher."):]: v for k, v in tensors.items() if k.startswith("fisher.")}
            self.anchor = {k[len("anchor."):]: v for k, v in tensors.items() if k.startswith("anchor.")}
