"""Evaluation throughput: greedy generation batched (left padding, KV cache) vs one by one.

Scores every demo test set with the pre-trained tiny base under the LoRA method, once with
batch 64 and once with batch 1, in one process; prints samples/s and the ratio, and checks
both give the same answers (batching must not change predictions).

    python benchmarks/eval_throughput.py [--stream DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from strcvit_bench.evaluation.evaluator import generate_answers  # noqa: E402
from strcvit_bench.methods import MethodContext  # noqa: E402
from strcvit_bench.methods.registry import get_method, parse_options  # noqa: E402
from strcvit_bench.models.tiny import load_tiny  # noqa: E402
from strcvit_bench.streams.stream import open_stream  # noqa: E402
from strcvit_bench.training.setup import stream_texts  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stream", type=Path, default=ROOT / "runs" / "demo" / "stream")
    ap.add_argument("--limit", type=int, default=50, help="test rows per task")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    stream = open_stream(args.stream)
    bundle = load_tiny(stream_texts(stream))
    ctx = MethodContext(bundle=bundle, seed=0, num_chunks=stream.num_chunks, chunk_size=1, task_ids_visible=False,
                        lookup_rows=lambda ids: [])
    cls = get_method("lora")
    method = cls(parse_options(cls, {}), ctx)
    method.setup()
    rows = [r for t in stream.task_names for r in stream.read_test(t).to_pylist()[: args.limit]]
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
    if args.json:
        args.json.write_text(json.dumps({"runs": list(results.values()), "identical_answers": same}, indent=2))


if __name__ == "__main__":
    main()
