"""Before/after of the demo's speed-ups, measured in one run.

Profiling `strcvit demo` (cProfile of each method on demo chunks) showed the time is the tiny
model's own arithmetic, and that BranchLoRA, the slowest method, spent it in its layer: one
d_out-wide matmul, multiply and add per branch. The layer now weights the rank-side activations
by the gates and runs all branches as one matmul. LoRA's layer (the base of every method) now
applies its scale to the r-wide intermediate instead of the d_out-wide output.

For each change this script trains the same demo chunk from the same base with the previous
implementation (kept here as a reference) and the current one, alternating A/B so both see the
same machine state, and reports median chunk time and the ratio before/after. That both compute
the same function is checked on the trained model: one batch's loss under either forward (the
trajectories themselves part by float rounding, as any reordering of sums does).

    python benchmarks/speedups.py [--stream DIR] [--repeats 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from baselines.branchlora import BranchLoRALinear  # noqa: E402
from strcvit_bench.adapters.lora import LoRALinear  # noqa: E402
from strcvit_bench.streams.stream import open_stream  # noqa: E402
from strcvit_bench.training import setup  # noqa: E402
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


CURRENT = {BranchLoRALinear: BranchLoRALinear.forward, LoRALinear: LoRALinear.forward}
CHANGES = {
    "branchlora layer: one matmul for all branches": ("branchlora", BranchLoRALinear, branchlora_loop_forward),
    "lora layer: scale on the rank side": ("lora", LoRALinear, lora_scale_on_output_forward),
}


@contextlib.contextmanager
def patched(cls, forward):
    if forward is None:
        yield
        return
    original = cls.forward
    cls.forward = forward
    try:
        yield
    finally:
        cls.forward = original


def train_once(stream, store, method: str, chunk: int, forward, cls) -> tuple[float, float]:
    """Seconds to train the chunk, and the largest difference between the trained model's loss on
    one batch under the reference forward and under the current one."""
    cfg = RunConfig(stream=str(stream.path), method=method)
    bundle, m, params = setup.build(cfg, stream, store.lookup)
    with patched(cls, forward):
        if method == "branchlora":  # mid-stream: routers and frozen branches from a first chunk
            train_chunk(bundle, m, params, 0, store.chunk(0), cfg)
        start = time.perf_counter()
        train_chunk(bundle, m, params, chunk, store.chunk(chunk), cfg)
        seconds = time.perf_counter() - start
    rows = store.chunk(chunk)[:16]
    with torch.no_grad():
        losses = []
        for f in (forward, None):
            with patched(cls, f if f is not None else CURRENT[cls]):
                losses.append(float(m.ctx.batch_loss(rows)))
    return seconds, abs(losses[0] - losses[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stream", type=Path, default=ROOT / "runs" / "demo" / "stream")
    ap.add_argument("--chunk", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    stream = open_stream(args.stream)
    store = RowStore(stream, hide_task=True)
    store.remember(args.chunk)
    out = []
    for label, (method, cls, before) in CHANGES.items():
        times: dict[str, list[float]] = {"before": [], "after": []}
        diff = 0.0
        for _ in range(args.repeats):
            for which, forward in (("before", before), ("after", None)):
                seconds, d = train_once(stream, store, method, args.chunk, forward, cls)
                times[which].append(seconds)
                diff = max(diff, d)
        before, after = statistics.median(times["before"]), statistics.median(times["after"])
        out.append({"change": label, "method": method, "before_s": before, "after_s": after,
                    "ratio": before / after, "max_loss_diff": diff, "runs": args.repeats})
    n = stream.manifest["chunks"][args.chunk]["size"]
    print(f"one demo chunk ({n} rows, chunk {args.chunk}), median of {args.repeats} alternating runs, "
          f"{torch.get_num_threads()} threads")
    print(f"{'change':<48}{'before s':>10}{'after s':>9}{'before/after':>14}{'|Δ loss|':>11}")
    for r in out:
        print(f"{r['change']:<48}{r['before_s']:>10.2f}{r['after_s']:>9.2f}{r['ratio']:>14.2f}"
              f"{r['max_loss_diff']:>11.1e}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
