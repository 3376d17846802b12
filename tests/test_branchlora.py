"""BranchLoRA's mechanisms on tiny tensors: shared trunk with frozen and tuned branches, the
freezing rule, task keys and the selector, and routers added per phase inside a model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from strcvit_bench.adapters.routing import topk_gates
from strcvit_bench.baselines.branchlora import BranchLoRALinear, TaskKeys, alignment_loss, refreeze


def _layer(branches=3, rank=2, top_k=2, routers=2):
    torch.manual_seed(0)
    layer = BranchLoRALinear(nn.Linear(6, 5), branches=branches, rank=rank, alpha=4.0, dropout=0.0, top_k=top_k)
    for _ in range(routers):
        layer.add_router()
    return layer


def _route(layer, clusters):
    """A new batch whose samples use the routers `clusters` (as the method sets it)."""
    layer.context.begin()
    layer.context.update(clusters=torch.tensor(clusters).unique(return_inverse=True))


def test_zero_branches_are_the_frozen_layer_and_the_trunk_is_shared():
    layer = _layer()
    _route(layer, [0, 1])
    x = torch.randn(2, 4, 6)
    assert torch.equal(layer(x), layer.base(x))
    assert layer.lora_A.shape == (2, 6) and [layer.branch(i).shape for i in range(3)] == [(5, 2)] * 3
    assert not hasattr(layer, "lora_B")  # one trunk, no per-expert A, no single B


def test_forward_is_the_formula_with_each_samples_own_router():
    layer = _layer()
    for i in range(3):
        nn.init.normal_(layer.branch(i))
    _route(layer, [0, 1])
    x = torch.randn(2, 4, 6)
    out = layer(x)
    scale = 4.0 / 2
    for b in range(2):
        logits = layer.router([0, 1][b]) @ x[b].mean(0)
        g = topk_gates(torch.softmax(logits, -1), 2)
        assert (g > 0).sum() == 2 and torch.isclose(g.sum(), torch.tensor(1.0))
        expected = layer.base(x[b]) + sum(g[i] * (x[b] @ layer.lora_A.t() @ layer.branch(i).t()) * scale
                                          for i in range(3))
        assert torch.allclose(out[b], expected, atol=1e-5)
    # a different router for the same input gives different gates
    _route(layer, [1, 0])
    assert not torch.allclose(layer(x), out)


def test_frozen_branches_get_no_gradient_tuned_ones_and_the_trunk_do():
    layer = _layer(branches=3, top_k=3)  # top_k = all: every branch takes part
    for i in range(3):
        nn.init.normal_(layer.branch(i))
    layer.branch(0).requires_grad_(False)
    layer.router(1).requires_grad_(False)
    _route(layer, [0, 0])
    layer(torch.randn(2, 4, 6)).pow(2).sum().backward()
    assert layer.branch(0).grad is None and layer.router(1).grad is None
    assert layer.branch(1).grad.abs().sum() > 0 and layer.branch(2).grad.abs().sum() > 0
    assert layer.lora_A.grad.abs().sum() > 0 and layer.router(0).grad.abs().sum() > 0


def test_gates_of_the_prompt_are_kept_while_decoding():
    layer = _layer()
    nn.init.normal_(layer.branch(0))
    _route(layer, [0])
    prompt_gates = layer.gates(torch.randn(1, 5, 6))
    assert torch.equal(layer.gates(torch.randn(1, 1, 6)), prompt_gates)


def test_refreeze_by_hand():
    # after phase 1: the two most used (3 then 5) become frozen, the most used last
    assert refreeze([], torch.tensor([5.0, 1.0, 3.0, 0.0]), k=2, min_tunable=2) == [2, 0]
    # the most used are already frozen: they stay, refreshed
    assert refreeze([2, 0], torch.tensor([9.0, 0.0, 1.0, 0.5]), k=2, min_tunable=2) == [2, 0]
    # two new favourites: freezing them would leave no tunable branch, so the oldest are thawed
    assert refreeze([2, 0], torch.tensor([0.0, 4.0, 1.0, 6.0]), k=2, min_tunable=2) == [1, 3]
    assert refreeze([2], torch.tensor([0.0, 4.0, 1.0, 6.0]), k=1, min_tunable=1) == [2, 3]
    assert refreeze([1], torch.tensor([1.0, 2.0]), k=0, min_tunable=1) == [1]


def test_task_key_is_the_minimiser_of_the_alignment_loss():
    torch.manual_seed(1)
    members = torch.randn(7, 5) + torch.tensor([3.0, 0, 0, 0, 0])
    keys = TaskKeys()
    for m in members:
        keys.add(0, m, m)
    key = F.normalize(keys.text_sum[0], dim=0).requires_grad_(True)
    loss = alignment_loss(key, members)
    (grad,) = torch.autograd.grad(loss, key)
    tangent = grad - (grad @ key) * key  # on the unit sphere only the tangent part moves the key
    assert tangent.norm() < 1e-5
    for _ in range(20):
        other = F.normalize(key.detach() + 0.1 * torch.randn(5), dim=0)
        assert alignment_loss(other, members) >= loss.detach() - 1e-6


def test_clusters_open_per_phase_and_the_selector_picks_by_keys():
    e = torch.eye(4)
    keys = TaskKeys()
    # phase 1: two kinds of sample (text and image views both differ)
    text = torch.stack([e[0], e[0] + 0.1 * e[2], e[1], e[1] + 0.1 * e[3]])
    assigned, opened = keys.assign(text, text.clone(), threshold=0.5, max_clusters=8)
    assert assigned == [0, 0, 1, 1] and opened == [0, 1]
    # phase 2: one known kind, one new kind -> one new cluster (router)
    text2 = torch.stack([e[1], e[2] + e[3], e[2] + 0.9 * e[3]])
    assigned, opened = keys.assign(text2, text2.clone(), threshold=0.5, max_clusters=8)
    assert assigned == [1, 2, 2] and opened == [2] and keys.counts == [2, 3, 2]
    # test time: no task id, the selector goes by the keys
    probe = torch.stack([e[0] + 0.2 * e[1], e[1], e[2] + e[3]])
    assert keys.select(probe, probe).tolist() == [0, 1, 2]
    # a cap on clusters: a new kind joins the nearest one instead
    full = TaskKeys()
    full.assign(text, text.clone(), threshold=0.5, max_clusters=1)
    assert len(full) == 1


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    import os

    from strcvit_bench.models.tiny import PretrainRecipe, load_tiny

    os.environ["STRCVIT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return load_tiny([], recipe=PretrainRecipe(samples=16, batch_size=16))


def _rows(kind: str, n: int, start: int = 0) -> list[dict]:
    from PIL import Image

    questions = {"count": ("How many shapes are there?", (200, 30, 30)),
                 "read": ("What is written in the image?", (250, 250, 250)),
                 "chart": ("Which bar is the largest?", (30, 30, 200))}
    q, color = questions[kind]
    return [{"id": f"{kind}/{start + i}", "image": Image.new("RGB", (48, 48), color), "instruction": q,
             "answer": "2"} for i in range(n)]


def test_routers_are_added_per_phase_and_test_rows_go_through_the_selector(tiny_bundle):
    from strcvit_bench.baselines.branchlora import BranchLoRA, BranchLoRAOptions
    from strcvit_bench.methods.base import MethodContext
    from strcvit_bench.models.base import model_inputs

    ctx = MethodContext(bundle=tiny_bundle, seed=0, num_chunks=2, chunk_size=8, task_ids_visible=False,
                        lookup_rows=lambda ids: [])
    method = BranchLoRA(BranchLoRAOptions(key_threshold=0.6), ctx)
    params = method.setup()
    n0 = len(params)
    layers = [layer for _, layer in method.named_layers()]
    method.before_chunk(0, _rows("count", 4) + _rows("read", 4))
    assert len(method.keys) == 2 and all(layer.routers == 2 for layer in layers)
    assert len(params) == n0 + 2 * len(layers)  # the new routers are trainable parameters now
    method.after_chunk(0, [])
    method.before_chunk(1, _rows("chart", 6, start=10) + _rows("count", 2, start=10))
    assert len(method.keys) == 3 and all(layer.routers == 3 for layer in layers)
    absent = [c for c in range(3) if c not in set(method.assigned.values())]
    assert absent == [1]
    assert all(not layer.router(1).requires_grad and layer.router(2).requires_grad for layer in layers)
    # a test row (never assigned) is routed by the selector to the cluster of its kind
    for kind, expected in (("read", 1), ("chart", 2)):
        rows = _rows(kind, 1, start=99)
        batch = tiny_bundle.encoder.prompt_batch(rows)
        method.before_forward(batch, rows)
        with torch.no_grad():
            tiny_bundle.model(**model_inputs(batch))
        uniq, inverse = method.batch_context["clusters"]
        assert uniq[inverse].tolist() == [expected]
