"""Evaluation throughput on the demo test sets, tiny pre-trained base, in one process.

1. Greedy generation batched (left padding, KV cache) vs one by one, under LoRA: samples/s,
   the ratio, and whether both give the same answers (batching must not change predictions).
2. What a run's evaluations reuse (`evaluation/reuse.py`: encoded prompt batches and frozen
   vision-tower outputs, kept from the first evaluation): a run scores the same test rows
   after every chunk, so each method here scores them `--evals` times with and without reuse,
   alternating, and the evaluations after the first are compared (median samples/s), with
   every prediction checked identical. StrLoRA is included because it routes on the image view
   tapped at the projector's input, which must be unchanged.
3. StrLoRA's router bank while generating: its stage 1 and stage-2 maps depend on the prompt's
   instruction only, so the bank computes them once a batch for all layers, where each layer
   computed its own at the prompt and again at every decoding step. Both ways, alternating,
   identical predictions required.

4. The allocator setting of every command (`env.keep_freed_memory`): glibc maps large blocks
   fresh and trims its heap, so generation page-faults its activations in anew each batch. Two
   fresh processes, one with the setting and one without, alternating `--pairs` times, each
   scoring every test row `--evals` times under LoRA (reuse on, as in a run); the evaluations
   after the first, median; their answers compared.

    python benchmarks/eval_throughput.py [--stream DIR] [--limit 50] [--evals 4] [--parts 1,2,3,4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from strcvit_bench.evaluation.evaluator import generate_answers  # noqa: E402
from strcvit_bench.evaluation.reuse import EvalReuse  # noqa: E402
from strcvit_bench.methods import MethodContext  # noqa: E402
from strcvit_bench.methods.registry import get_method, parse_options  # noqa: E402
from strcvit_bench.models.tiny import load_tiny  # noqa: E402
from strcvit_bench.streams.stream import open_stream  # noqa: E402
from strcvit_bench.strlora import StrLoRA  # noqa: E402
from strcvit_bench.strlora.layer import RouterBank, StrLoRALinear  # noqa: E402
from strcvit_bench.training.setup import stream_texts  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stream", type=Path, default=ROOT / "runs" / "demo" / "stream")
    ap.add_argument("--limit", type=int, default=50, help="test rows per task")
    ap.add_argument("--evals", type=int, default=4, help="evaluations per method and mode (part 2)")
    ap.add_argument("--parts", default="1,2,3,4", help="which parts to run (comma-separated)")
    ap.add_argument("--pairs", type=int, default=2, help="process pairs of part 4")
    ap.add_argument("--child", choices=["kept", "default"], help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    parts = {int(p) for p in args.parts.split(",")}
    if args.child:
        return allocator_child(args)
    stream = open_stream(args.stream)
    bundle = load_tiny(stream_texts(stream))
    ctx = MethodContext(bundle=bundle, seed=0, num_chunks=stream.num_chunks, chunk_size=1, task_ids_visible=False,
                        lookup_rows=lambda ids: [])
    out: dict = {}
    if 1 in parts:
        out.update(batched_vs_one_by_one(stream, bundle, ctx, args.limit))
    if 2 in parts:
        reuse = [reuse_vs_fresh(stream, bundle, name, args.limit, args.evals) for name in ("lora", "strlora")]
        print(f"\nscoring the same {reuse[0]['rows']} rows {args.evals} times (as after each chunk of a run), "
              f"batch 64; evaluations after the first, median")
        print(f"{'method':<9}{'fresh smp/s':>12}{'reuse smp/s':>12}{'ratio':>7}{'identical':>11}{'kept MiB':>10}")
        for r in reuse:
            print(f"{r['method']:<9}{r['fresh_samples_per_s']:>12.1f}{r['reuse_samples_per_s']:>12.1f}"
                  f"{r['ratio']:>7.2f}{r['identical']:>11}{r['kept_mib']:>10.1f}")
        out["reuse"] = reuse
    if 3 in parts:
        r = strlora_bank(stream, bundle, args.limit, args.evals)
        print(f"\nStrLoRA scoring {r['rows']} rows {args.evals} times each way, batch 64, alternating, median: "
              f"routers layer by layer {r['per_layer_samples_per_s']:.1f} samples/s, bank "
              f"{r['bank_samples_per_s']:.1f}: {r['ratio']:.2f}x; identical predictions: {r['identical']}")
        out["strlora_bank"] = r
    if 4 in parts:
        r = allocator_pairs(args)
        print(f"\nscoring all {r['rows']} test rows {args.evals} times a process, {args.pairs} process pairs, "
              f"1 thread: "
              f"glibc's default {r['default_samples_per_s']:.1f} samples/s ({r['default_faults']} minor faults an "
              f"evaluation), kept {r['kept_samples_per_s']:.1f} ({r['kept_faults']}): {r['ratio']:.2f}x; identical "
              f"answers: {r['identical']}")
        out["allocator"] = r
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


def allocator_child(args) -> None:
    import hashlib
    import resource

    import torch

    from strcvit_bench.env import keep_freed_memory

    torch.set_num_threads(1)
    if args.child == "kept":
        assert keep_freed_memory()
    stream = open_stream(args.stream)
    bundle = load_tiny(stream_texts(stream))
    ctx = MethodContext(bundle=bundle, seed=0, num_chunks=stream.num_chunks, chunk_size=1, task_ids_visible=False,
                        lookup_rows=lambda ids: [])
    cls = get_method("lora")
    method = cls(parse_options(cls, {}), ctx)
    method.setup()
    rows = [r for t in stream.manifest["tasks"] for r in stream.read_test(t["name"]).to_pylist()]
    reuse, seconds, faults = EvalReuse(bundle), [], []
    for _ in range(args.evals):
        before, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        answers = generate_answers(bundle, rows, 64, method.before_forward, "fp32", reuse)
        seconds.append(time.perf_counter() - start)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(json.dumps({"rows": len(rows), "seconds": seconds[1:], "faults": faults[1:],
                      "answers": hashlib.sha256("\n".join(answers).encode()).hexdigest()}))


def allocator_pairs(args) -> dict:
    import subprocess

    got: dict[str, list[dict]] = {"default": [], "kept": []}
    for _ in range(args.pairs):
        for which in ("default", "kept"):
            cmd = [sys.executable, __file__, "--stream", str(args.stream), "--evals", str(args.evals), "--child", which]
            got[which].append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                                         .strip().splitlines()[-1]))
    rows = got["default"][0]["rows"]
    med = {w: statistics.median(s for r in rs for s in r["seconds"]) for w, rs in got.items()}
    faults = {w: int(statistics.median(f for r in rs for f in r["faults"])) for w, rs in got.items()}
    return {"rows": rows, "pairs": args.pairs, "evals": args.evals,
            "default_samples_per_s": rows / med["default"], "kept_samples_per_s": rows / med["kept"],
            "ratio": med["default"] / med["kept"], "default_faults": faults["default"], "kept_faults": faults["kept"],
            "identical": len({r["answers"] for rs in got.values() for r in rs}) == 1}


def batched_vs_one_by_one(stream, bundle, ctx, limit: int) -> dict:
    cls = get_method("lora")
    method = cls(parse_options(cls, {}), ctx)
    method.setup()
    rows = [r for t in stream.task_names for r in stream.read_test(t).to_pylist()[:limit]]
    results = {}
    answers = {}
    for bs in (64, 1):
        start = time.perf_counter()
        answers[bs] = generate_answers(bundle, rows, bs, method.before_forward)
        secs = time.perf_counter() - start
        results[bs] = {"batch_size": bs, "rows": len(rows), "seconds": secs, "samples_per_s": len(rows) / secs}
    same = sum(a == b for a, b in zip(answers[64], answers[1], strict=True))
    print(f"greedy generation, {len(rows)} test rows of {stream.name}, tiny model, "
          f"max {bundle.max_new_tokens} new tokens")
    print(f"{'batch':>6}{'seconds':>10}{'samples/s':>11}")
    for r in results.values():
        print(f"{r['batch_size']:>6}{r['seconds']:>10.2f}{r['samples_per_s']:>11.1f}")
    print(f"batched / one-by-one speed-up: {results[64]['samples_per_s'] / results[1]['samples_per_s']:.1f}x; "
          f"identical answers: {same}/{len(rows)}")
    return {"runs": list(results.values()), "identical_answers": same}


def strlora_bank(stream, bundle, limit: int, evals: int) -> dict:
    """StrLoRA's test rows scored with each layer routing on its own (the previous code path)
    and with the bank, alternating."""
    ctx = MethodContext(bundle=bundle, seed=0, num_chunks=stream.num_chunks, chunk_size=1, task_ids_visible=False,
                        lookup_rows=lambda ids: [])
    bundle.model = type(bundle.model).from_pretrained(bundle.info["cache"]).eval()
    cls = get_method("strlora")
    method = cls(parse_options(cls, {}), ctx)
    method.setup()
    tasks = [stream.read_test(t).to_pylist()[:limit] for t in stream.task_names]
    banked, hook = StrLoRALinear.plan, StrLoRA._decide_routing
    per_layer = lambda self: RouterBank([self]).plans(self.instruction())[0]  # noqa: E731
    seconds: dict[str, list[float]] = {"per_layer": [], "bank": []}
    answers: dict[str, list[list[str]]] = {"per_layer": [], "bank": []}
    try:
        for _ in range(evals):
            for mode, plan in (("per_layer", per_layer), ("bank", banked)):
                StrLoRALinear.plan = plan
                StrLoRA._decide_routing = hook if mode == "bank" else (lambda self, module, args: None)
                start = time.perf_counter()
                got = [a for rows in tasks for a in generate_answers(bundle, rows, 64, method.before_forward)]
                seconds[mode].append(time.perf_counter() - start)
                answers[mode].append(got)
    finally:
        StrLoRALinear.plan, StrLoRA._decide_routing = banked, hook
    n = sum(len(rows) for rows in tasks)
    median = {m: statistics.median(s) for m, s in seconds.items()}
    return {"rows": n, "evals": evals, "per_layer_samples_per_s": n / median["per_layer"],
            "bank_samples_per_s": n / median["bank"], "ratio": median["per_layer"] / median["bank"],
            "identical": all(a == answers["bank"][0] for m in answers for a in answers[m])}


def reuse_vs_fresh(stream, bundle, name: str, limit: int, evals: int) -> dict:
    """The same rows scored `evals` times with a fresh encoding each time and with a run's reuse,
    alternating evaluation by evaluation."""
    ctx = MethodContext(bundle=bundle, seed=0, num_chunks=stream.num_chunks, chunk_size=1, task_ids_visible=False,
                        lookup_rows=lambda ids: [])
    bundle.model = type(bundle.model).from_pretrained(bundle.info["cache"]).eval()  # no adapters of a previous method
    cls = get_method(name)
    method = cls(parse_options(cls, {}), ctx)
    method.setup()
    tasks = [stream.read_test(t).to_pylist()[:limit] for t in stream.task_names]
    keep = EvalReuse(bundle)
    seconds: dict[str, list[float]] = {"fresh": [], "reuse": []}
    answers: dict[str, list[list[str]]] = {"fresh": [], "reuse": []}
    for _ in range(evals):
        for mode in ("fresh", "reuse"):
            start = time.perf_counter()
            got = [a for rows in tasks
                   for a in generate_answers(bundle, rows, 64, method.before_forward, reuse=keep if mode == "reuse"
                                             else None)]
            seconds[mode].append(time.perf_counter() - start)
            answers[mode].append(got)
    n = sum(len(rows) for rows in tasks)
    later = {m: statistics.median(s[1:]) for m, s in seconds.items()}
    identical = all(a == answers["fresh"][0] for m in answers for a in answers[m])
    return {"method": name, "rows": n, "evals": evals, "fresh_samples_per_s": n / later["fresh"],
            "reuse_samples_per_s": n / later["reuse"], "ratio": later["fresh"] / later["reuse"],
            "identical": identical, "kept_mib": keep.used / 2**20, "hits": keep.hits,
            "first_eval_s": {m: s[0] for m, s in seconds.items()}}


if __name__ == "__main__":
    main()
