"""Runs several methods on one stream inside one `accelerate launch` (one process-group start-up
for all of them); used by tests/test_distributed.py. Usage: STREAM OUT CACHE METHOD..."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    stream, out, cache, *methods = sys.argv[1:]
    os.environ["STRCVIT_CACHE"] = cache
    from strcvit_bench.training.config import RunConfig
    from strcvit_bench.training.runner import run

    for method in methods:
        run(RunConfig(stream=stream, method=method, out=str(Path(out) / method), **SETTINGS))


SETTINGS = dict(pretrain_samples=1024, batch_size=8, eval_batch_size=32, epochs_per_chunk=2, max_chunks=2)

if __name__ == "__main__":
    main()
