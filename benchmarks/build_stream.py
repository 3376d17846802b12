"""Stream-build throughput and memory against the PNG + parquet floor.

For each stream: build it in a fresh process (so peak RSS is that build's alone: the process's
own high-water mark, /proc/self/status VmHWM, and the largest worker's), then time
the floor on the same rows: PNG-encode the same images (already rendered, decoded outside the
timer) and write the same parquet. ratio = build time / floor time. A flat peak RSS from 5 to
20 chunks shows memory does not grow with the stream.

`--rounds N` (N ≥ 2) builds each stream N times at each step of the 7 December 2026 changes,
alternating, and reports the medians side by side: before (each feed keeping its own three
blocks in flight, the parquet tables made with `pa.Table.from_pylist`, which imports pandas,
and `jitter` computing its clamps per call; all kept below as a reference), then with each
change added in turn. Every step must write the same files, byte for byte.

    python benchmarks/build_stream.py [--quick] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from strcvit_bench.env import git_commit, hardware, library_versions  # noqa: E402
from strcvit_bench.streams.format import ARROW_SCHEMA, rows_table  # noqa: E402
from strcvit_bench.streams.stream import open_stream  # noqa: E402

_CHILD = """
import json, resource, sys, time
from strcvit_bench.streams.builder import build_stream
from strcvit_bench.streams.spec import load_spec
step = int(sys.argv[5])  # the previous implementation of each change below this step
if step < 3:  # jitter's clamps computed per call
    from strcvit_bench.data.sources.builtin import charts, ocr, remote_sensing, render, scenes

    def jitter_computed(color, rng, amount=18):
        bits = rng.getrandbits(24)
        span = 2 * amount + 1
        r, g, b = color
        return (min(255, max(0, r + ((bits & 0xFF) * span >> 8) - amount)),
                min(255, max(0, g + (((bits >> 8) & 0xFF) * span >> 8) - amount)),
                min(255, max(0, b + ((bits >> 16) * span >> 8) - amount)))

    for module in (charts, ocr, remote_sensing, render, scenes):
        module.jitter = jitter_computed
if step < 2:  # the tables made from Python objects (pyarrow then imports pandas)
    import pyarrow as pa, pyarrow.parquet as pq
    from strcvit_bench.streams import builder, format

    def write_rows_from_pylist(path, rows):
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=format.ARROW_SCHEMA), path)

    builder.write_rows = write_rows_from_pylist
if step < 1:  # each feed its own three blocks in flight
    import itertools
    from collections import deque
    from strcvit_bench.data.sources.builtin import source
    from strcvit_bench.data.sources.builtin.prefetch import BLOCK

    def per_feed_iter_rows(self, which, seed):
        pending, starts = deque(), itertools.count(0, BLOCK)
        while True:
            while len(pending) < 3:
                pending.append(self.prefetch.draw(self, which, next(starts), BLOCK))
            yield from pending.popleft().result()

    source.BuiltinSource.iter_rows = per_feed_iter_rows
    source.BuiltinSource.expect = lambda self, which, rows: None
spec = load_spec(sys.argv[1], num_chunks=int(sys.argv[3]) or None, chunk_size=int(sys.argv[4]) or None)
t = time.perf_counter()
manifest = build_stream(spec, sys.argv[2], overwrite=True)
secs = time.perf_counter() - t
files = json.dumps(manifest["content"]["files"], sort_keys=True)
# this process's own peak: ru_maxrss keeps, across exec, the peak of the parent it was forked from
try:
    status = open("/proc/self/status").read().split("VmHWM:")[1]
    peak = int(status.split()[0]) / 1024
except (OSError, IndexError):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"seconds": secs, "peak_rss_mib": peak, "worker_peak_rss_mib": workers,
                  "fingerprint": manifest["fingerprint"], "files": files}))
"""
STEPS = ("before", "+ planned prefetch", "+ tables from buffers", "+ jitter tables (now)")


def build_in_child(spec: Path, out: Path, num_chunks: int = 0, chunk_size: int = 0,
                   step: int = len(STEPS) - 1) -> dict:
    args = [str(spec), str(out), str(num_chunks), str(chunk_size), str(step)]
    res = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(res.stdout.strip().splitlines()[-1])


def floor_seconds(stream_dir: Path) -> tuple[float, float, int]:
    """PNG-encode the same images and write the same parquet files, nothing else: seconds with
    the tables made from their buffers (`rows_table`, as the builder does), seconds with
    `pa.Table.from_pylist` (the floor of the figures before 7 December 2026), rows."""
    stream = open_stream(stream_dir)
    tables = [stream.read_test(t) for t in stream.task_names]
    tables += [stream.read_chunk(c["index"]) for c in stream.manifest["chunks"]]
    encode = write = write_pylist = 0.0
    rows = 0
    with tempfile.TemporaryDirectory() as tmp:
        for k, table in enumerate(tables):
            records = table.to_pylist()
            images = [Image.open(io.BytesIO(r["image"]["bytes"])).convert("RGB") for r in records]
            t = time.perf_counter()
            for r, im in zip(records, images, strict=True):
                buf = io.BytesIO()
                im.save(buf, format="PNG")
                r["image"] = {"bytes": buf.getvalue(), "path": None}
            t1 = time.perf_counter()
            pq.write_table(rows_table(records), f"{tmp}/{k}.parquet")
            t2 = time.perf_counter()
            pq.write_table(pa.Table.from_pylist(records, schema=ARROW_SCHEMA), f"{tmp}/{k}.parquet")
            t3 = time.perf_counter()
            encode, write, write_pylist = encode + t1 - t, write + t2 - t1, write_pylist + t3 - t2
            rows += len(records)
    return encode + write, encode + write_pylist, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller streams (CI smoke run)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternating builds per step and stream (1: the current code only)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    args = ap.parse_args()
    big = ROOT / "stream_specs" / "long_recurrence.yaml"
    size = 500 if args.quick else 2000
    from strcvit_bench.streams.spec import load_spec

    demo = load_spec(ROOT / "stream_specs" / "demo.yaml")
    cases = [(f"demo ({demo.num_chunks} x {demo.chunk_size})", ROOT / "stream_specs" / "demo.yaml", 0, 0),
             (f"builtin 5 x {size}", big, 5, size),
             (f"builtin 20 x {size}", big, 20, size)]
    results = []
    steps = range(len(STEPS)) if args.rounds > 1 else [len(STEPS) - 1]
    with tempfile.TemporaryDirectory() as tmp:
        for label, spec, n, cs in cases:
            out = Path(tmp) / "s"
            runs: list[list[dict]] = [[] for _ in STEPS]
            for _ in range(args.rounds):
                for step in steps:
                    runs[step].append(build_in_child(spec, out, n, cs, step))
            prints = {r["files"] for rs in runs for r in rs}
            if len(prints) != 1:
                raise SystemExit(f"{label}: the builds wrote different files: {sorted(prints)}")
            floor, floor_pylist, rows = floor_seconds(out)
            med = [statistics.median(r["seconds"] for r in rs) if rs else None for rs in runs]
            now = med[-1]
            results.append({"stream": label, "rows": rows, "build_s": now, "samples_per_s": rows / now,
                            "floor_s": floor, "floor_samples_per_s": rows / floor, "ratio": now / floor,
                            "floor_from_pylist_s": floor_pylist,
                            "steps": [{"step": name, "build_s": m, "ratio": m / floor if m else None,
                                       "peak_rss_mib": max((r["peak_rss_mib"] for r in rs), default=None)}
                                      for name, m, rs in zip(STEPS, med, runs, strict=True)],
                            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs[-1]),
                            "worker_peak_rss_mib": max(r["worker_peak_rss_mib"] for r in runs[-1]),
                            "rounds": args.rounds, "fingerprint": runs[-1][0]["fingerprint"]})
    print(f"{'stream':<22}{'rows':>7}{'floor s':>9}{'(pylist)':>9}{'RSS MiB':>9}{'worker':>8}"
          f"  build s and build / floor, by step")
    for r in results:
        cells = "  ".join(f"{s['step']}: {s['build_s']:.2f} s, {s['ratio']:.2f}"
                          for s in r["steps"] if s["build_s"] is not None)
        print(f"{r['stream']:<22}{r['rows']:>7}{r['floor_s']:>9.2f}{r['floor_from_pylist_s']:>9.2f}"
              f"{r['peak_rss_mib']:>9.0f}{r['worker_peak_rss_mib']:>8.0f}  {cells}")
    if args.json:
        env = {"hardware": hardware(), "versions": library_versions(("pyarrow", "pillow")), "commit": git_commit(ROOT)}
        args.json.write_text(json.dumps({"results": results, **env}, indent=2))


if __name__ == "__main__":
    main()
