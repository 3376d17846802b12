"""Per-chunk checkpoints: trainable weights and method state as safetensors + JSON, never pickles.

checkpoints/chunk_003/
  trainable.safetensors   adapter (and projector) parameters by name
  method.safetensors      the method's tensors (Fisher, EMA references, ...)
  method.json             the method's JSON state (buffer row ids, counters, ...)
  state.json              the run's progress: accuracy rows, base scores, per-chunk stats
Each directory is written to a temporary name and renamed, so a checkpoint either exists
whole or not at all; `latest()` is the resume point.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from strcvit_bench.io import atomic_directory, dumps_json


def chunk_dir(run_dir: Path, index: int) -> Path:
    return run_dir / "checkpoints" / f"chunk_{index:03d}"


def save(run_dir: Path, index: int, trainable: dict[str, torch.Tensor], method_tensors: dict[str, torch.Tensor],
         method_meta: dict[str, Any], state: dict[str, Any]) -> Path:
    target = chunk_dir(run_dir, index)
    with atomic_directory(target, overwrite=True) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in trainable.items()}, str(tmp / "trainable.safetensors"))
        save_file({k: v.detach().cpu().contiguous() for k, v in method_tensors.items()},
                  str(tmp / "method.safetensors"))
        (tmp / "method.json").write_text(dumps_json(method_meta))
        (tmp / "state.json").write_text(dumps_json(state))
    return target


def latest(run_dir: Path) -> int | None:
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return None
    done = [int(p.name.split("_")[1]) for p in root.glob("chunk_*") if (p / "state.json").is_file()]
    return max(done) if done else None


def load(run_dir: Path, index: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict, dict]:
    d = chunk_dir(run_dir, index)
    return (load_file(str(d / "trainable.safetensors")), load_file(str(d / "method.safetensors")),
            json.loads((d / "method.json").read_text()), json.loads((d / "state.json").read_text()))
