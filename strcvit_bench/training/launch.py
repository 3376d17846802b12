"""`strcvit run --num-processes N`: the same run under `accelerate launch`.

A convenience only: the resolved RunConfig goes to a JSON file, and this module, started as
`accelerate launch -m strcvit_bench.training.launch CONFIG.json` (torchrun underneath, one
process per device, gloo on CPUs), runs it on every rank. A free port keeps several launches on
one machine apart. Everything distributed happens inside accelerate and torch;
`accelerate launch -m strcvit_bench run ...` with your own accelerate config (FSDP, DeepSpeed,
several machines) is the same path with more control.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from strcvit_bench.errors import StrcvitError
from strcvit_bench.training.config import RunConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def relaunch(config: RunConfig, resume: bool, num_processes: int) -> int:
    """Run `config` on `num_processes` processes; returns their exit code."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run_config.json"
        path.write_text(json.dumps(config.model_dump()))
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
               str(num_processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), "-m", "strcvit_bench.training.launch", str(path)]
        return subprocess.run(cmd + (["--resume"] if resume else [])).returncode


def main() -> int:
    from strcvit_bench.training.runner import Run

    config = RunConfig.model_validate(json.loads(Path(sys.argv[1]).read_text()))
    try:
        Run(config, resume="--resume" in sys.argv[2:]).execute()
    except StrcvitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
