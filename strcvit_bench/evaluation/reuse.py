"""What every evaluation of a run computes again to the same result, computed once.

A run scores the same test rows after every chunk, in the same batches. Two parts of that work
never change along the run: the encoded prompt batches (image decoding, resizing, tokenising:
about a seventh of an evaluation of the tiny model) and the frozen vision tower's output for
those images (a further twelfth). `EvalReuse` keeps both, keyed by the batch's row ids, so the
second evaluation on does only what the trained weights decide. Predictions are bit for bit
those of a fresh computation: the cached tensors are the ones the first evaluation computed,
from the same batch; the projector, which is trained, runs every time on the cached features
(so the image view that routing methods tap at its input is unchanged too).

The vision tower's output is reused only while every parameter in it is frozen (adapters a
user targets at the tower switch it off), and only for families whose tower is a module of its
own, before the projector (`Family.vision_tower`; Qwen2-VL's projector is inside `visual`, so
its batches are reused but not its features). Memory is bounded: past `budget_bytes` nothing
more is kept and the rest is computed as before.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import torch

from strcvit_bench.models.base import ModelBundle, Rows

BUDGET_BYTES = 1 << 30


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    if hasattr(value, "to_tuple"):  # transformers' ModelOutput
        return sum(_nbytes(v) for v in value.to_tuple())
    return 0


def vision_tower(bundle: ModelBundle) -> torch.nn.Module | None:
    """The family's vision tower module (its output is the projector's input), or None."""
    pattern = bundle.family_info().vision_tower
    if not pattern:
        return None
    rx = re.compile(rf"(.*\.)?({pattern})")
    return next((m for n, m in bundle.model.named_modules() if rx.fullmatch(n)), None)


class EvalReuse:
    """Encoded prompt batches and frozen vision-tower outputs, kept across a run's evaluations."""

    def __init__(self, bundle: ModelBundle, budget_bytes: int = BUDGET_BYTES):
        self.bundle = bundle
        self.budget = budget_bytes
        self.used = 0
        self.batches: dict[tuple[str, ...], dict[str, torch.Tensor]] = {}
        self.features: dict[tuple[tuple[str, ...], int], Any] = {}
        self.tower = vision_tower(bundle)
        self.hits = {"batches": 0, "features": 0}

    def _keep(self, value: Any) -> bool:
        size = _nbytes(value)
        if self.used + size > self.budget:
            return False
        self.used += size
        return True

    def prompt_batch(self, rows: Rows, device: torch.device) -> dict[str, torch.Tensor]:
        """The encoded prompts of `rows` (rows as the evaluator hands them: id, image, instruction)."""
        key = tuple(r["id"] for r in rows)
        if key in self.batches:
            self.hits["batches"] += 1
            return dict(self.batches[key])  # a method may add keys to its batch: never to the kept one
        batch = {k: v.to(device) for k, v in self.bundle.encoder.prompt_batch(rows).items()}
        if self._keep(batch):
            self.batches[key] = dict(batch)
        return batch

    def _frozen(self) -> bool:
        return self.tower is not None and not any(p.requires_grad for p in self.tower.parameters())

    @contextlib.contextmanager
    def features_of(self, rows: Rows) -> Iterator[None]:
        """While generating for `rows`, the vision tower answers from what it computed for the same
        rows before (the n-th call of this batch gets the n-th output)."""
        if not self._frozen():
            yield
            return
        tower, key, calls = self.tower, tuple(r["id"] for r in rows), [0]
        original = tower.forward
        own = tower.__dict__.get("forward")  # an instance-level forward (a wrapper) to put back

        def forward(*args: Any, **kwargs: Any) -> Any:
            slot = (key, calls[0])
            calls[0] += 1
            shape = tuple(args[0].shape) if args and isinstance(args[0], torch.Tensor) else None
            kept = self.features.get(slot)
            if kept is not None and kept[0] == shape:
                self.hits["features"] += 1
                return kept[1]
            out = original(*args, **kwargs)
            if kept is None and self._keep(out):
                self.features[slot] = (shape, out)
            return out

        tower.forward = forward
        try:
            yield
        finally:
            if own is None:
                del tower.forward  # the class's forward again
            else:
                tower.forward = own
