"""A run's evaluations reuse encoded prompts and frozen vision features: predictions must be
bit for bit those of a fresh computation, on every family, routing methods included."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from strcvit_bench.evaluation.evaluator import generate_answers
from strcvit_bench.evaluation.reuse import EvalReuse, vision_tower
from strcvit_bench.methods.base import MethodContext
from strcvit_bench.methods.registry import get_method, parse_options
from strcvit_bench.models.hf import load_hf

from .hf_families import FAMILIES


def _rows(n: int) -> list[dict]:
    colours = [(200, 10, 10), (10, 200, 10), (10, 10, 200), (120, 120, 0), (0, 90, 160)]
    return [{"id": f"t/{i}", "image": Image.new("RGB", (40 + i, 48), colours[i % 5]),
             "instruction": ["What is this?", "Describe a cat.", "Is it blue?"][i % 3], "answer": "x"}
            for i in range(n)]


def _method(bundle, name: str):
    ctx = MethodContext(bundle=bundle, seed=0, num_chunks=2, chunk_size=8, task_ids_visible=False,
                        lookup_rows=lambda ids: [])
    cls = get_method(name)
    method = cls(parse_options(cls, {}), ctx)
    method.setup()
    with torch.no_grad():  # adapters that act, so a stale reuse would show in the answers
        for n, p in bundle.model.named_parameters():
            if "lora_B" in n or "lora_fc" in n:
                p.normal_(std=0.5)
    return method


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("method_name", ["lora", "strlora"])
def test_reused_evaluations_equal_fresh_ones(tmp_path, family, method_name):
    bundle = load_hf(str(FAMILIES[family](tmp_path / family)), dtype="float32", max_new_tokens=5)
    method = _method(bundle, method_name)
    rows = _rows(7)
    fresh = generate_answers(bundle, rows, 3, method.before_forward)
    keep = EvalReuse(bundle)
    first = generate_answers(bundle, rows, 3, method.before_forward, reuse=keep)
    again = generate_answers(bundle, rows, 3, method.before_forward, reuse=keep)
    assert first == fresh and again == fresh
    assert keep.hits["batches"] == 3  # the second evaluation's three batches
    if family.startswith("qwen"):  # the projector is inside `visual`: batches only
        assert vision_tower(bundle) is None and keep.hits["features"] == 0
    else:
        assert vision_tower(bundle) is not None and keep.hits["features"] == 3


def test_reuse_follows_the_weights_it_may_and_only_those(tmp_path):
    """The projector is trained between evaluations: its output must not be reused. A tower
    with trainable parameters is not reused either, and a zero budget keeps nothing."""
    bundle = load_hf(str(FAMILIES["llava"](tmp_path / "llava")), dtype="float32", max_new_tokens=5)
    method = _method(bundle, "lora")
    rows = _rows(4)
    keep = EvalReuse(bundle)
    generate_answers(bundle, rows, 4, method.before_forward, reuse=keep)
    projector = bundle.model.model.multi_modal_projector
    with torch.no_grad():  # as a chunk of training would move it
        for p in projector.parameters():
            p.add_(torch.randn_like(p))
    assert generate_answers(bundle, rows, 4, method.before_forward, reuse=keep) == \
        generate_answers(bundle, rows, 4, method.before_forward)
    assert keep.hits["features"] == 1
    tower = vision_tower(bundle)
    next(tower.parameters()).requires_grad_(True)
    generate_answers(bundle, rows, 4, method.before_forward, reuse=keep)
    assert keep.hits["features"] == 1  # not reused while the tower trains
    empty = EvalReuse(bundle, budget_bytes=0)
    generate_answers(bundle, rows, 4, method.before_forward, reuse=empty)
    assert empty.used == 0 and not empty.batches and not empty.features
    assert "forward" not in tower.__dict__  # the tower's own forward is back
