"""End-to-end time of `strcvit demo`, and where it goes.

Runs the demo as a user would, in a fresh process with an empty model cache (so the one-time
pre-training of the tiny base is included) and an empty output folder, and times it. Then it
reads what every run recorded to split the total: pre-training, each method's training and
evaluation, and the rest (stream build, imports, loading, the leaderboard).

    python benchmarks/demo_time.py [--methods a,b] [--keep DIR] [--leaderboard DIR] [--json out.json]

The full demo takes a quarter of an hour on a 2-core CPU.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=None, help="comma-separated (default: the demo's eight)")
    ap.add_argument("--keep", type=Path, default=None, help="write the demo here instead of a temporary folder")
    ap.add_argument("--leaderboard", type=Path, default=None, help="passed to `strcvit demo --leaderboard`")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp) / "demo"
        env = {**os.environ, "STRCVIT_CACHE": str(Path(tmp) / "cache")}
        cmd = [sys.executable, "-m", "strcvit_bench", "--quiet", "demo", "--out", str(out)]
        if args.methods:
            cmd += ["--methods", args.methods]
        if args.leaderboard:  # relative to the checkout, as the leaderboard records the command
            cmd += ["--leaderboard", os.path.relpath(args.leaderboard.resolve(), ROOT)]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        total = time.perf_counter() - start
        runs = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/results.json"))]
    pretrain = next((r["model_info"].get("pretrain_stats", {}).get("seconds", 0.0) for r in runs
                     if r["model_info"].get("cached") is False), 0.0)
    rows = [("pre-training the tiny base (once)", pretrain)]
    for r in runs:
        t = r["timings"]
        rows.append((f"{r['method']}: training", t["train_seconds"]))
        rows.append((f"{r['method']}: evaluation", t["eval_seconds"] + (t["base_eval_seconds"] or 0.0)))
    rows.append(("stream build, loading, imports, leaderboard", total - sum(s for _, s in rows)))
    print(f"strcvit demo, {len(runs)} methods, one seed, cold cache: {total / 60:.1f} min "
          f"({hardware().get('cpu_count', '?')} CPUs)")
    print(f"{'phase':<46}{'seconds':>9}{'share':>8}")
    for label, seconds in rows:
        print(f"{label:<46}{seconds:>9.1f}{100 * seconds / total:>7.1f}%")
    if args.json:
        args.json.write_text(json.dumps({"total_seconds": total, "phases": dict(rows), "hardware": hardware()},
                                        indent=2))


if __name__ == "__main__":
    main()
