"""Stream-build throughput and memory against the PNG + parquet floor.

For each stream: build it in a fresh process (so peak RSS is that build's alone), then time
the floor on the same rows: PNG-encode the same images (already rendered, decoded outside the
timer) and write the same parquet. ratio = build time / floor time. A flat peak RSS from 5 to
20 chunks shows memory does not grow with the stream.

    python benchmarks/build_stream.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
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

from strcvit_bench.streams.format import ARROW_SCHEMA  # noqa: E402
from strcvit_bench.streams.stream import open_stream  # noqa: E402

_CHILD = """
import json, resource, sys, time
from strcvit_bench.streams.builder import build_stream
from strcvit_bench.streams.spec import load_spec
spec = load_spec(sys.argv[1], num_chunks=int(sys.argv[3]) or None, chunk_size=int(sys.argv[4]) or None)
t = time.perf_counter()
build_stream(spec, sys.argv[2], overwrite=True)
secs = time.perf_counter() - t
print(json.dumps({"seconds": secs, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def build_in_child(spec: Path, out: Path, num_chunks: int = 0, chunk_size: int = 0) -> dict:
    res = subprocess.run([sys.executable, "-c", _CHILD, str(spec), str(out), str(num_chunks), str(chunk_size)],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(res.stdout.strip().splitlines()[-1])


def floor_seconds(stream_dir: Path) -> tuple[float, int]:
    """PNG-encode the same images and write the same parquet files, nothing else."""
    stream = open_stream(stream_dir)
    tables = [stream.read_test(t) for t in stream.task_names]
    tables += [stream.read_chunk(c["index"]) for c in stream.manifest["chunks"]]
    elapsed, rows = 0.0, 0
    with tempfile.TemporaryDirectory() as tmp:
        for k, table in enumerate(tables):
            records = table.to_pylist()
            images = [Image.open(io.BytesIO(r["image"]["bytes"])).convert("RGB") for r in records]
            t = time.perf_counter()
            for r, im in zip(records, images, strict=True):
                buf = io.BytesIO()
                im.save(buf, format="PNG")
                r["image"] = {"bytes": buf.getvalue(), "path": None}
            pq.write_table(pa.Table.from_pylist(records, schema=ARROW_SCHEMA), f"{tmp}/{k}.parquet")
            elapsed += time.perf_counter() - t
            rows += len(records)
    return elapsed, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller streams (CI smoke run)")
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
    with tempfile.TemporaryDirectory() as tmp:
        for label, spec, n, cs in cases:
            out = Path(tmp) / "s"
            child = build_in_child(spec, out, n, cs)
            floor, rows = floor_seconds(out)
            results.append({"stream": label, "rows": rows, "build_s": child["seconds"],
                            "samples_per_s": rows / child["seconds"], "floor_s": floor,
                            "floor_samples_per_s": rows / floor, "ratio": child["seconds"] / floor,
                            "peak_rss_mib": child["peak_rss_mib"]})
    print(f"{'stream':<22}{'rows':>8}{'build s':>10}{'rows/s':>10}{'floor s':>10}{'ratio':>8}{'peak RSS MiB':>14}")
    for r in results:
        print(f"{r['stream']:<22}{r['rows']:>8}{r['build_s']:>10.2f}{r['samples_per_s']:>10.0f}"
              f"{r['floor_s']:>10.2f}{r['ratio']:>8.2f}{r['peak_rss_mib']:>14.0f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
