"""Per-sample squared gradients from one batched backward pass.

EWC's Fisher is the mean of *per-sample* squared gradients: the square of a batch gradient is
not the sum of its samples' squares. Computing it one sample per backward pass costs a full
forward and backward per sample (on the demo, a fifth of an EWC chunk). For a linear map
y = x Wᵀ (+ b) the sample's gradient is Σ_t g_t x_tᵀ over its own tokens, where g = ∂L/∂y, so a
batched pass whose loss is a sum over samples yields every sample's gradient from the layer's
input and output gradient (the technique of Opacus' per-sample gradient hooks). LoRA's A and B
are two such maps: u = (x Aᵀ)·s, y = u Bᵀ, so ∂/∂B = Σ_t g_t u_tᵀ and ∂/∂A = Σ_t s (g_t B)ᵀ x_t.

A LayerNorm's scale and shift are the same kind of sum: Σ_t g_t ⊙ x̂_t and Σ_t g_t.

It covers `LoRALinear` adapters, `nn.Linear` and `nn.LayerNorm` layers whose input is (samples,
tokens, features) — the language model's layers, Llava's projector — or all patches of the
batch flattened (patches, features) with `image_grid_thw` saying each image's share (Qwen2-VL's
merger, whose rows are each image's patches, merged k at a time). A parameter of another layer
type makes `covered` false, and an input it cannot split (or a layer called twice in a pass)
makes `run` return None: the caller then goes one sample per pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from strcvit_bench.adapters.lora import LoRALinear


class PerSampleSquares:
    """Hooks that record what the per-sample gradients of `params` need during one forward and
    backward pass, then sum their squares over the samples. The parameters' own `.grad` is left
    untouched: the pass computes the layers' output gradients, not the parameters' batch ones.

        tracker = PerSampleSquares(model, params)
        if tracker.covered:
            squares = tracker.run(lambda: loss_summed_over_samples(rows), len(rows))
    """

    def __init__(self, model: nn.Module, params: dict[str, nn.Parameter]):
        self.model = model
        names = {id(p): n for n, p in params.items()}
        self.layers: list[tuple[nn.Module, dict[str, str]]] = []
        found: set[str] = set()
        for module in model.modules():
            if type(module) is LoRALinear:
                owned = {"lora_A": module.lora_A, "lora_B": module.lora_B}
            elif type(module) in (nn.Linear, nn.LayerNorm):
                owned = {k: p for k, p in (("weight", module.weight), ("bias", module.bias)) if p is not None}
            else:
                continue
            mine = {k: names[id(p)] for k, p in owned.items() if id(p) in names}
            if mine:
                self.layers.append((module, mine))
                found.update(mine.values())
        self.covered = found == set(params)

    def run(self, loss_fn: Callable[[], torch.Tensor], samples: int) -> dict[str, torch.Tensor] | None:
        """Σ over samples of each parameter's squared gradient, with `loss_fn()` (a loss that sums
        over samples) forwarded and backpropagated once; None when a layer's input was not laid
        out by sample (the caller then goes one sample at a time)."""
        seen: dict[nn.Module, list[torch.Tensor]] = {}
        outputs: dict[nn.Module, list[torch.Tensor]] = {}
        grid: list[torch.Tensor] = []

        def inputs_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if kwargs.get("image_grid_thw") is not None:
                grid.append(kwargs["image_grid_thw"])

        handles = [self.model.register_forward_pre_hook(inputs_hook, with_kwargs=True)]

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            seen.setdefault(module, []).append(inputs[0].detach())
            if output.requires_grad:
                outputs.setdefault(module, []).append(output)

        for module, _ in self.layers:
            handles.append(module.register_forward_hook(hook))
        try:
            loss = loss_fn()
        finally:
            for h in handles:
                h.remove()
        if any(len(seen.get(m, [])) != 1 or len(outputs.get(m, [])) != 1 for m, _ in self.layers):
            return None  # a layer called twice, or whose output the loss cannot reach
        # The layers' output gradients only: `backward()` would also make every trained
        # parameter's gradient (the projector's weight gradient is as costly as its forward),
        # which the squares below do not use. The output gradients are the same either way.
        found = torch.autograd.grad(loss, [outputs[m][0] for m, _ in self.layers], allow_unused=True)
        if any(g is None for g in found):
            return None
        out: dict[str, torch.Tensor] = {}
        counts = grid[0].prod(-1).tolist() if len(grid) == 1 and len(grid[0]) == samples else None
        for (module, mine), g_out in zip(self.layers, found, strict=True):
            x, g = by_sample(seen[module][0], samples, counts), by_sample(g_out, samples, counts)
            if x is None or g is None:
                return None
            for key, value in _square_sums(module, x, g, set(mine)).items():
                out[mine[key]] = value
        return out


def by_sample(t: torch.Tensor, samples: int, counts: list[int] | None) -> torch.Tensor | None:
    """`t` as (samples, rows, features): as it is, or its flattened rows split by each image's
    patch count (or that count over a merge factor k), zero-padded (zero rows add nothing)."""
    if t.dim() == 3 and t.shape[0] == samples:
        return t
    if t.dim() != 2 or counts is None or sum(counts) % t.shape[0]:
        return None
    k = sum(counts) // t.shape[0]
    if any(c % k for c in counts):
        return None
    parts = t.split([c // k for c in counts])
    return torch.nn.utils.rnn.pad_sequence(list(parts), batch_first=True)


def _square_sums(module: nn.Module, x: torch.Tensor, g: torch.Tensor, keys: set[str]) -> dict[str, torch.Tensor]:
    """Σ over samples of each squared per-sample gradient, for the parameters named in `keys`.

    A plain linear layer's weight is summed sample by sample: its per-sample gradients are
    samples × d_out × d_in (16 × 34 M floats for Qwen2-VL-2B's merger, 2 GB a pass), and making
    them all at once was most of EWC's Fisher at that width. One sample's at a time is the same
    products and the same sum in the same order, bit for bit. Each sample's product goes into
    the same buffer: a fresh 100 MB tensor a sample is fresh pages for the OS to map and zero,
    a third of the loop's time for the merger (0 + the first square is that square exactly)."""
    if type(module) is nn.Linear and "weight" in keys:
        grad = g[0].t() @ x[0]
        total = torch.zeros_like(grad)
        for s in range(x.shape[0]):
            if s:
                torch.mm(g[s].t(), x[s], out=grad)
            grad.mul_(grad)
            total.add_(grad)
        out = {"weight": total}
        if "bias" in keys:
            out["bias"] = (g.sum(1) ** 2).sum(0)
        return out
    return {k: (v ** 2).sum(0) for k, v in _sample_grads(module, x, g).items() if k in keys}


def _sample_grads(module: nn.Module, x: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each sample's gradient of the layer's parameters from its input x (B, T, in) and output
    gradient g (B, T, out): a leading sample dimension on each parameter's shape."""
    if isinstance(module, LoRALinear):
        # dropout is the identity here: the Fisher is taken in eval mode
        u = (x @ module.lora_A.detach().t()) * module.scale
        dh = (g @ module.lora_B.detach()) * module.scale
        return {"lora_B": torch.einsum("bto,btr->bor", g, u), "lora_A": torch.einsum("btr,bti->bri", dh, x)}
    if isinstance(module, nn.LayerNorm):
        x_hat = torch.nn.functional.layer_norm(x, module.normalized_shape, eps=module.eps)
        return {"weight": (g * x_hat).sum(1), "bias": g.sum(1)}
    return {"weight": torch.einsum("bto,bti->boi", g, x), "bias": g.sum(1)}
