"""Before/after of the demo's speed-ups, measured in one run.

Profiling `strcvit demo` (cProfile and torch.profiler of each method on demo chunks) showed the
time is the tiny model's own arithmetic, spent where the slowest method of the moment spends it:

- BranchLoRA (then about three LoRA steps per step): one d_out-wide matmul, multiply and add
  per branch. The layer now weights the rank-side activations by the gates and runs all branches
  as one matmul. LoRA's layer (the base of every method) now applies its scale to the r-wide
  intermediate instead of the d_out-wide output.
- StrLoRA (then the slowest, 1.7 LoRA steps): its stage-2 router projected every token to a
  D = 64 query, twice with the EMA teacher, and back-propagated through both. The logits are
  linear in the token, so W_q, the key and the prototypes now fold into one d_in × E map per
  sample (E = 4); the token choice and the KL, whose student logits are the routing logits
  themselves, run as one autograd function with a hand-written backward (three token-wide
  products and a dozen small ops a layer, where autograd ran five and about sixty). And AdamW's
  per-tensor loop over its 168 small tensors: the optimiser is now torch's fused AdamW.
- SMoLoRA (1.70 LoRA steps): its layer computed both selected experts' full outputs (two
  d_out-wide products a token), a head on each and their mix. Heads and mix are linear in B,
  so they are now taken in rank space: one d_out-wide product a token, as LoRA's.
- StrLoRA again (1.5–1.7 LoRA steps): each of its 28 layers computed its own stage 1 and
  stage-2 maps (and the teacher's), some fifty small ops a layer forward and backward, though
  they depend on the batch's instruction representation and the router weights only. A
  `RouterBank` now computes them for all layers at once, the weights stacked by input width,
  once per batch; the EMA update runs as two foreach kernels.
- EWC at the 2B width (1.48 LoRA steps): its penalty (λ/2) Σ F (θ − θ*)² covers the 34.7 M
  trained parameters, and autograd through it made and kept six full-size tensors a step. The
  penalty now makes its gradient λ F (θ − θ*) in its forward pass (bit for bit autograd's);
  `--arch qwen2vl-2b-width` measures it where it matters. Its Fisher made every sample's
  gradient of the merger at once (16 × 34 M floats a pass) before squaring them: they are now
  squared and summed one sample at a time, the same sum bit for bit.
- Every method (7 December 2026): the training loss took the output layer's logits at every
  position, the image and instruction tokens included, and back-propagated zeros through them.
  It now asks the model for the logits of the answer's positions only (`models.base.loss_inputs`,
  transformers' `logits_to_keep`): the same gradients, bit for bit, so the same trained weights.
- EWC (1.41 LoRA steps): after each chunk, its Fisher took one forward and backward per sample
  (128 of them, a fifth of the chunk's time). It now takes 16 samples a pass, each sample's
  squared gradient recovered from the layer's input and output gradient
  (`adapters/per_sample.py`). That pass called `backward()`, which also made every trained
  parameter's batch gradient (at the 2B width the merger's weight gradient, as costly as its
  forward) for nothing; it now asks autograd for the hooked layers' output gradients alone,
  the same Fisher bit for bit (7 December 2026; "Fisher alone" times the estimate by itself),
  and a linear layer's per-sample products go into one buffer instead of a new tensor each.

For each change this script trains the same demo chunk from the same base with the previous
implementation (kept here as a reference) and the current one, alternating A/B so both see the
same machine state, and reports median chunk time and the ratio before/after. A forward change
must compute the same function: checked on the trained model as one batch's loss under either
forward (the trajectories themselves part by float rounding, as any reordering of sums does). The
optimiser change must be the same algorithm: checked as the chunk's training loss, before against
after.

    python benchmarks/speedups.py [--stream DIR] [--repeats 2] [--only TEXT] [--json out.json]
    python benchmarks/speedups.py --arch qwen2vl-2b-width --layers 2 --only "ewc penalty"
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.train_throughput import recorded_env, save_wide_qwen2_vl  # noqa: E402
from strcvit_bench.adapters import per_sample  # noqa: E402
from strcvit_bench.adapters.lora import LoRALinear  # noqa: E402
from strcvit_bench.adapters.routing import one_hot_argmax  # noqa: E402
from strcvit_bench.baselines import ewc  # noqa: E402
from strcvit_bench.baselines.branchlora import BranchLoRALinear  # noqa: E402
from strcvit_bench.baselines.smolora import SMoLoRALinear  # noqa: E402
from strcvit_bench.methods import base as method_base  # noqa: E402
from strcvit_bench.models.base import model_inputs  # noqa: E402
from strcvit_bench.streams.stream import open_stream  # noqa: E402
from strcvit_bench.strlora import StrLoRA, routing  # noqa: E402
from strcvit_bench.strlora.layer import RouterBank, StrLoRALinear  # noqa: E402
from strcvit_bench.training import setup, trainer  # noqa: E402
from strcvit_bench.training.config import RunConfig  # noqa: E402
from strcvit_bench.training.rows import RowStore  # noqa: E402
from strcvit_bench.training.trainer import train_chunk  # noqa: E402


def branchlora_loop_forward(self, x):
    """BranchLoRA's layer before the change: one full-width matmul, multiply and add per branch."""
    g = self.gates(x)
    h = self.dropout(x) @ self.lora_A.t()
    out = self.base(x)
    for i in range(self.experts):
        out = out + (h @ self.branch(i).t()) * (g[:, i] * self.scale)[:, None, None]
    if self.training:
        self.usage += g.detach().float().sum(0)
    return out


def lora_scale_on_output_forward(self, x):
    """LoRA's layer before the change: the scale multiplied the d_out-wide output."""
    return self.base(x) + (self.dropout(x) @ self.lora_A.t() @ self.lora_B.t()) * self.scale


def _logits_from_query(q, t, W_k, prototypes):
    k = torch.nn.functional.layer_norm(t, t.shape[-1:]) @ W_k.t()
    p_hat = torch.nn.functional.normalize(prototypes, dim=-1)
    return ((q * k.unsqueeze(1)) @ p_hat.t()) / math.sqrt(q.shape[-1])


class _WeightOnlyGrad(torch.autograd.Function):
    """q's value with a gradient to W only (the previous implementation's student query)."""

    @staticmethod
    def forward(ctx, q, x, W):
        ctx.save_for_backward(x)
        ctx.w_dtype = W.dtype
        return q.clone()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        dtype = torch.promote_types(grad.dtype, x.dtype)
        grad_w = grad.reshape(-1, grad.shape[-1]).t().to(dtype) @ x.reshape(-1, x.shape[-1]).to(dtype)
        return None, None, grad_w.to(ctx.w_dtype)


def strlora_query_first_forward(self, x):
    """StrLoRA's layer before the change: project every token to the D-wide query W_q x, then
    multiply by the key and the prototypes; the EMA teacher projected every token again."""
    gates, hard, mask = self.select()
    t = self.instruction().to(x.dtype)
    mask3 = mask.unsqueeze(1)
    q = x @ self.router_Wq.t()
    p = routing.masked_softmax(_logits_from_query(q, t, self.router_Wk, self.router_P), mask3, self.tau)
    choice = routing.top1_straight_through(p)
    safe = torch.where(mask, hard, torch.ones_like(hard))
    factor = torch.where(mask, gates / safe, torch.zeros_like(gates))
    weights = choice * factor.unsqueeze(1)
    token_mask = self.context.mask_for(x)
    self._aux = None
    if self.stability_active and self.training:
        xd = x.detach()
        with torch.no_grad():
            teacher = _logits_from_query(xd @ self.ema_Wq.t(), t, self.ema_Wk, self.ema_P)
        student = _logits_from_query(_WeightOnlyGrad.apply(q.detach(), xd, self.router_Wq), t,
                                     self.router_Wk, self.router_P)
        kl = routing.stability_kl(teacher, student, mask3.detach(), self.tau)
        m = token_mask.to(kl.dtype)
        self._aux = (kl * m).sum() / m.sum().clamp_min(1.0)
    return self.base(x) + self.expert_delta(x, weights.to(x.dtype))


def strlora_plan_per_layer(self):
    """StrLoRA's input-independent routing before the change: each layer its own."""
    return RouterBank([self]).plans(self.instruction())[0]


def strlora_no_bank_hook(self, module, args):
    """Before the change nothing decided the routing ahead of the layers."""


def logits_everywhere(model, batch):
    """The training forward's inputs before the change: logits at every position."""
    return model_inputs(batch)


# what else a previous implementation needs replaced: (owner, attr) -> (owner, attr, value)
ALSO = {(StrLoRALinear, "plan"): (StrLoRA, "_decide_routing", strlora_no_bank_hook),
        (trainer, "loss_inputs"): (method_base, "loss_inputs", logits_everywhere)}


def unfused_adamw(params, lr, weight_decay):
    """The optimiser before the change: torch's default AdamW, a loop of small ops per tensor on CPU."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def smolora_written_out_forward(self, x):
    """SMoLoRA's layer before the change, as released: both selected experts' full outputs, a
    head on each, their mix."""
    vu = self.vu_choice(x)
    ins = one_hot_argmax(self.context["if_embedding"].to(x.dtype) @ self.router_if.t())
    zeros = torch.zeros_like(vu)
    h = (self.dropout(x) @ self.lora_A.t()).unflatten(-1, (self.experts, self.rank_per_expert))
    vu_out = (h * (torch.cat([vu, zeros], -1)[:, None, :, None] * self.scale)).flatten(-2) @ self.lora_B.t()
    if_out = (h * (torch.cat([zeros, ins], -1)[:, None, :, None] * self.scale)).flatten(-2) @ self.lora_B.t()
    scores = torch.cat([vu_out @ self.lora_fc_A.t(), if_out @ self.lora_fc_B.t()], -1)
    mix = torch.softmax(scores.float(), dim=-1).to(x.dtype)
    return self.base(x) + mix[..., :1] * vu_out + mix[..., 1:] * if_out


_estimate_fisher = ewc.EWC.estimate_fisher


def ewc_penalty_written_out(params, anchor, fisher, lam):
    """EWC's penalty before the change: autograd through (λ/2) Σ F (θ − θ*)²."""
    total = torch.zeros(())
    for name, p in params.items():
        total = total + (fisher[name] * (p - anchor[name]) ** 2).sum()
    return 0.5 * lam * total


def projector_squares_all_samples_at_once(module, x, g, keys):
    """EWC's Fisher squares before the change: every sample's gradient made at once, then squared."""
    return {k: (v ** 2).sum(0) for k, v in per_sample._sample_grads(module, x, g).items() if k in keys}


def ewc_fisher_one_sample_per_pass(self, index, rows):
    """EWC's Fisher before the change: one forward and backward per sample."""
    return _estimate_fisher(self, index, rows, batched=False)


def per_sample_squares_full_backward(self, loss_fn, samples):
    """EWC's Fisher pass before the change: `backward()`, the layers' output gradients caught by
    tensor hooks, and every trained parameter's batch gradient made as well (then discarded)."""
    seen, grads, grid = {}, {}, []

    def inputs_hook(module, args, kwargs):
        if kwargs.get("image_grid_thw") is not None:
            grid.append(kwargs["image_grid_thw"])

    def hook(module, inputs, output):
        seen.setdefault(module, []).append(inputs[0].detach())
        if output.requires_grad:
            output.register_hook(lambda g: grads.setdefault(module, []).append(g.detach()))

    handles = [self.model.register_forward_pre_hook(inputs_hook, with_kwargs=True)]
    handles += [module.register_forward_hook(hook) for module, _ in self.layers]
    try:
        loss_fn().backward()
    finally:
        for h in handles:
            h.remove()
    out = {}
    counts = grid[0].prod(-1).tolist() if len(grid) == 1 and len(grid[0]) == samples else None
    for module, mine in self.layers:
        xs, gs = seen.get(module, []), grads.get(module, [])
        if len(xs) != 1 or len(gs) != 1:
            return None
        x, g = per_sample.by_sample(xs[0], samples, counts), per_sample.by_sample(gs[0], samples, counts)
        if x is None or g is None:
            return None
        for key, value in per_sample._square_sums(module, x, g, set(mine)).items():
            out[mine[key]] = value
    return out


def linear_squares_fresh_tensor_a_sample(module, x, g, keys):
    """EWC's Fisher squares before the change: a linear weight's, a new product tensor a sample."""
    if type(module) is torch.nn.Linear and "weight" in keys:
        total = None
        for s in range(x.shape[0]):
            grad = g[s].t() @ x[s]
            grad.mul_(grad)
            total = grad if total is None else total.add_(grad)
        out = {"weight": total}
        if "bias" in keys:
            out["bias"] = (g.sum(1) ** 2).sum(0)
        return out
    return _square_sums(module, x, g, keys)


_square_sums = per_sample._square_sums


# label: (method trained, object patched, attribute, the previous implementation)
CHANGES = {
    "branchlora layer: one matmul for all branches": ("branchlora", BranchLoRALinear, "forward",
                                                      branchlora_loop_forward),
    "lora layer: scale on the rank side": ("lora", LoRALinear, "forward", lora_scale_on_output_forward),
    "strlora stage 2: folded map, routing+KL fused": ("strlora", StrLoRALinear, "forward",
                                                      strlora_query_first_forward),
    "strlora routers: all layers at once": ("strlora", StrLoRALinear, "plan", strlora_plan_per_layer),
    "loss: logits at the answer's positions only": ("lora", trainer, "loss_inputs", logits_everywhere),
    "adamw fused (strlora's 168 tensors)": ("strlora", trainer, "make_optimizer", unfused_adamw),
    "smolora layer: heads and mix in rank space": ("smolora", SMoLoRALinear, "forward",
                                                   smolora_written_out_forward),
    "ewc fisher: 16 samples a pass": ("ewc", ewc.EWC, "estimate_fisher", ewc_fisher_one_sample_per_pass),
    "ewc penalty: its gradient in the forward pass": ("ewc", ewc, "ewc_penalty", ewc_penalty_written_out),
    "ewc fisher: linear squares sample by sample": ("ewc", per_sample, "_square_sums",
                                                    projector_squares_all_samples_at_once),
    "ewc fisher: output gradients only": ("ewc", per_sample.PerSampleSquares, "run",
                                          per_sample_squares_full_backward),
    "ewc fisher: one buffer for a linear's squares": ("ewc", per_sample, "_square_sums",
                                                      linear_squares_fresh_tensor_a_sample),
}


# the changes whose promise is the Fisher itself (checked at the same weights), not the training
SAME_FISHER = {"ewc fisher: 16 samples a pass", "ewc fisher: output gradients only",
               "ewc fisher: one buffer for a linear's squares"}


@contextlib.contextmanager
def patched(owner, attr: str, value):
    if value is None:
        yield
        return
    original = getattr(owner, attr)
    setattr(owner, attr, value)
    try:
        yield
    finally:
        setattr(owner, attr, original)


def train_once(stream, store, method: str, chunk: int, owner, attr: str, value, model: Path | None = None,
               rows: int | None = None) -> dict:
    """Seconds to train the chunk (for EWC, with its Fisher after the chunk) and its mean training
    loss; for a forward, also one batch's loss on the trained weights under the previous forward
    and under the current one; for EWC, the first chunk's Fisher (at the same weights either way).
    With `model` (a saved Hugging Face model) and `rows`, the chunks' first `rows` rows on it (EWC's
    Fisher on the same share of its samples)."""
    extra: dict = {}
    if model is not None:
        extra = {"model": str(model), "dtype": "float32", "batch_size": 8}
    if method == "ewc" and rows is not None:
        share = round(ewc.EWCOptions().fisher_samples * rows / int(stream.manifest["chunk_size"]))
        extra["method_options"] = {"fisher_samples": max(1, share)}
    cfg = RunConfig(stream=str(stream.path), method=method, **extra)
    bundle, m, params = setup.build(cfg, stream, store.lookup)
    first, this = store.chunk(0)[:rows], store.chunk(chunk)[:rows]
    also = ALSO.get((owner, attr), (owner, attr, None)) if value is not None else (owner, attr, None)
    with patched(owner, attr, value), patched(*also):
        if method == "branchlora":  # mid-stream: routers and frozen branches from a first chunk
            train_chunk(bundle, m, params, 0, first, cfg)
        if method == "ewc":  # a penalty in force, as from the second chunk on
            m.after_chunk(0, first)
            fisher = torch.cat([f.flatten() for f in m.fisher.values()])  # at the same weights either way
        start = time.perf_counter()
        record = train_chunk(bundle, m, params, chunk, this, cfg)
        trained = time.perf_counter()
        if method == "ewc":
            m.after_chunk(chunk, this)
        seconds = time.perf_counter() - start
    out = {"seconds": seconds, "train_loss": record["train_loss"]}
    if method == "ewc":
        out["fisher"] = fisher
        out["fisher_seconds"] = seconds - (trained - start)
    if attr == "loss_inputs":  # the same gradients: the same trained weights
        out["params"] = torch.cat([p.detach().flatten() for p in params.values() if p.requires_grad])
    if attr in ("forward", "plan"):
        with torch.no_grad():
            losses = []
            for previous in (True, False):
                with patched(owner, attr, value if previous else None):
                    losses.append(float(m.batch_loss(this[:16])))
        out["forward_loss_diff"] = abs(losses[0] - losses[1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stream", type=Path, default=ROOT / "runs" / "demo" / "stream")
    ap.add_argument("--chunk", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--only", default="", help="run only the changes whose label contains this text")
    ap.add_argument("--arch", choices=["tiny", "qwen2vl-2b-width"], default="tiny",
                    help="the demo model, or a Qwen2-VL at the 2B width (train_throughput.py's)")
    ap.add_argument("--layers", type=int, default=2, help="decoder layers of the wide architecture")
    ap.add_argument("--rows", type=int, help="train on the chunks' first ROWS rows (default: all; 48 when wide)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    wide = args.arch != "tiny"
    rows = args.rows or (48 if wide else None)
    stream = open_stream(args.stream)
    store = RowStore(stream, hide_task=True)
    store.remember(args.chunk)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        model = save_wide_qwen2_vl(stream, Path(tmp) / "model", args.layers) if wide else None
        for label, change in CHANGES.items():
            if args.only in label:
                out.append(measure(stream, store, args.chunk, args.repeats, label, *change, model=model, rows=rows))
    n = len(store.chunk(args.chunk)[:rows])
    where = f"{args.arch}" + (f", {args.layers} layers" if wide else "")
    print(f"one demo chunk ({n} rows, chunk {args.chunk}), {where}, median of {args.repeats} alternating runs, "
          f"{torch.get_num_threads()} threads")
    print(f"{'change':<48}{'before s':>10}{'after s':>9}{'before/after':>14}{'Fisher alone':>14}"
          f"{'check':>10}  check")
    for r in out:
        alone = f"{r['fisher_ratio']:.2f}" if "fisher_ratio" in r else ""
        print(f"{r['change']:<48}{r['before_s']:>10.2f}{r['after_s']:>9.2f}{r['ratio']:>14.2f}{alone:>14}"
              f"{r['check']:>10.1e}  {r['check_kind']}")
    if args.json:
        env = recorded_env()
        args.json.write_text(json.dumps([{**r, **env} for r in out], indent=2))


def measure(stream, store, chunk: int, repeats: int, label: str, method: str, owner, attr: str, before,
            model: Path | None, rows: int | None) -> dict:
    """One change: before and after alternating, `repeats` times each; medians and the check."""
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for _ in range(repeats):
        for which, value in (("before", before), ("after", None)):
            runs[which].append(train_once(stream, store, method, chunk, owner, attr, value, model, rows))
    median = {w: statistics.median(r["seconds"] for r in rs) for w, rs in runs.items()}
    if attr in ("forward", "plan"):  # the same function: one batch, trained weights, either forward
        check = max(r["forward_loss_diff"] for rs in runs.values() for r in rs)
        check_kind = "|Δ loss|, same weights, either forward"
    elif label in SAME_FISHER:  # the same estimate: the Fisher at the base's weights, before the chunk
        a, b = runs["before"][0]["fisher"], runs["after"][0]["fisher"]
        check = float((a - b).norm() / a.norm())
        check_kind = "relative ||Δ Fisher||, same weights"
    elif attr == "loss_inputs":
        check = max(float((runs["before"][0]["params"] - r["params"]).abs().max()) for r in runs["after"])
        check_kind = "max |Δ trained parameter| after the chunk"
    else:  # the same algorithm: the chunk's training loss, before against after
        first = runs["before"][0]["train_loss"]
        check = abs(first - runs["after"][0]["train_loss"]) / first
        check_kind = "relative |Δ chunk training loss|"
    fisher = {}
    if method == "ewc":  # the Fisher alone: a share of the chunk's time, its effect drowned in the rest
        fisher = {f"fisher_{w}_s": statistics.median(r["fisher_seconds"] for r in rs) for w, rs in runs.items()}
        fisher["fisher_ratio"] = fisher["fisher_before_s"] / fisher["fisher_after_s"]
    return {"change": label, "method": method, "before_s": median["before"], "after_s": median["after"],
            "ratio": median["before"] / median["after"], **fisher, "check": check, "check_kind": check_kind,
            "runs": repeats, "rows": rows, "model": "tiny" if model is None else "qwen2vl-2b-width"}


if __name__ == "__main__":
    main()
