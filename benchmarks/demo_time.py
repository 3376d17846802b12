"""End-to-end time of `strcvit demo`, and where it goes.

Runs the demo as a user would, in a fresh process with an empty model cache and an empty
output folder, and times it. The demo starts from the tiny base the package ships; with
`--base pretrain` it pre-trains the base first (`strcvit demo --no-shipped-base`), as every cold
demo did before the base shipped. Then it reads what every run recorded to split the total:
pre-training, each method's training and evaluation, and the rest (stream build, imports,
loading, the leaderboard). With several `--jobs` or `--base` values (e.g. `--base
pretrain,shipped`) it runs the demo once per combination, in turn, and prints their ratios:
runs side by side in one invocation, as speed is compared in this project.

    python benchmarks/demo_time.py [--jobs 1,2] [--base shipped,pretrain] [--methods a,b]
                                   [--num-chunks N] [--cache DIR] [--keep DIR] [--leaderboard DIR]
                                   [--json out.json]

With `--jobs 2` the runs overlap, so the per-run phases add up to more than the wall time;
they are each run's own records (CPU time of the run, in its one thread).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from strcvit_bench.env import hardware  # noqa: E402


def one_demo(args: argparse.Namespace, jobs: int, base: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp) / "demo"
        cache = args.cache or Path(tmp) / "cache"
        cold = not any((cache / "models").glob("tiny-*/config.json"))  # the demo will pre-train the base
        env = {**os.environ, "STRCVIT_CACHE": str(cache)}
        cmd = [sys.executable, "-m", "strcvit_bench", "--quiet", "demo", "--out", str(out), "--jobs", str(jobs)]
        if base == "pretrain":
            cmd.append("--no-shipped-base")
        if args.methods:
            cmd += ["--methods", args.methods]
        if args.num_chunks:
            cmd += ["--num-chunks", str(args.num_chunks)]
        if args.leaderboard:  # relative to the checkout, as the leaderboard records the command
            cmd += ["--leaderboard", os.path.relpath(args.leaderboard.resolve(), ROOT)]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        total = time.perf_counter() - start
        runs = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/results.json"))]
    stats = [r["model_info"].get("pretrain_stats", {}) for r in runs]
    pretrain = next((s.get("seconds", 0.0) for r, s in zip(runs, stats, strict=True)
                     if r["model_info"].get("cached") is False), None)
    shipped = bool(runs) and all(r["model_info"].get("base") == "shipped" for r in runs)
    if pretrain is None and cold and not shipped:  # no run pre-trained: the demo did, before its runs (--jobs > 1)
        pretrain = next((s["seconds"] for s in stats if "seconds" in s), None)
    rows = [("pre-training the tiny base (once)", pretrain or 0.0)]
    for r in runs:
        t = r["timings"]
        label = r.get("method_label", r["method"])
        rows.append((f"{label}: training", t["train_seconds"]))
        rows.append((f"{label}: evaluation", t["eval_seconds"] + (t["base_eval_seconds"] or 0.0)))
    if jobs == 1:
        rows.append(("stream build, loading, imports, leaderboard", total - sum(s for _, s in rows)))
    return {"jobs": jobs, "base": "shipped" if shipped else "pre-trained", "total_seconds": total, "runs": len(runs),
            "phases": rows, "cold": cold}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", default="1", help="comma-separated `strcvit demo --jobs` values, run in turn")
    ap.add_argument("--base", default="shipped", help="comma-separated: shipped (the package's tiny base) "
                    "and/or pretrain (pre-trained by the demo, --no-shipped-base), run in turn")
    ap.add_argument("--methods", default=None, help="comma-separated (default: every method and the reference rows)")
    ap.add_argument("--num-chunks", type=int, default=None, help="a shorter demo (the ratio, not the headline)")
    ap.add_argument("--keep", type=Path, default=None, help="write the demo here instead of a temporary folder")
    ap.add_argument("--cache", type=Path, default=None, help="a model cache to keep (warm after the first demo: "
                    "compares the runs without the one-time pre-training)")
    ap.add_argument("--leaderboard", type=Path, default=None, help="passed to `strcvit demo --leaderboard`")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results = [one_demo(args, int(j), b) for b in args.base.split(",") for j in args.jobs.split(",")]
    for res in results:
        total = res["total_seconds"]
        cache = "cold cache" if res["cold"] else "warm cache (--cache)"
        print(f"\nstrcvit demo --jobs {res['jobs']}, {res['base']} base, {res['runs']} runs, one seed, {cache}: "
              f"{total / 60:.1f} min "
              f"({hardware().get('cpu_count', '?')} CPUs)")
        print(f"{'phase':<52}{'seconds':>9}{'share':>8}")
        for label, seconds in res["phases"]:
            print(f"{label:<52}{seconds:>9.1f}{100 * seconds / total:>7.1f}%")
    if len(results) > 1:
        base = results[0]["total_seconds"]
        print("\n" + "  ".join(f"--jobs {r['jobs']} {r['base']}: {base / r['total_seconds']:.2f}x" for r in results)
              + f" (against --jobs {results[0]['jobs']} {results[0]['base']})")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "hardware": hardware()}, indent=2))


if __name__ == "__main__":
    main()
