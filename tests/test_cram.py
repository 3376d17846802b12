"""CRAM's mechanisms on tiny tensors: centroid routing, expert growth by a measured gap, the
orthogonality penalty, the routed layer, and pseudo-task decisions inside a model."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from strcvit_bench.baselines.cram import CRAMLinear, grow_expert, orthogonality_penalty, output_basis, rbf_weights


def test_rbf_weights_by_hand():
    w = rbf_weights(torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 3.0]]), sigma=1.0)
    # unit vectors: distances² 0 and 2 -> softmax([0, -1])
    assert torch.allclose(w, torch.tensor([[1 / (1 + math.exp(-1)), math.exp(-1) / (1 + math.exp(-1))]]))


def _update(directions: list[tuple[int, float]], d_out=6, d_in=5, r=4):
    """Factors whose product is Σ s_k e_{out k} e_{in k}ᵀ (orthogonal singular directions)."""
    A = torch.zeros(r, d_in)
    B = torch.zeros(d_out, r)
    for k, (out_dir, s) in enumerate(directions):
        A[k, k] = 1.0
        B[out_dir, k] = s
    return A, B


NONE = (torch.zeros(0, 5), torch.zeros(6, 0))


def test_a_new_expert_gets_the_rank_of_the_gap():
    old = output_basis(torch.eye(6)[:, :2])  # the group's other experts write to output directions 0 and 1
    # an update they already cover: no rank at all (its rows are served by reuse)
    A, B, info = grow_expert(*NONE, *_update([(0, 2.0), (1, 1.0)]), old, tau=0.1, rank_max=8)
    assert info["grew"] == 0 and A.shape[0] == 0 and info["gap_fraction"] == pytest.approx(0.0, abs=1e-6)
    # two strong new directions, one covered, one weak (below tau · σ1): rank 2
    A_new, B_new = _update([(0, 2.0), (3, 1.5), (4, 1.0), (5, 0.05)])
    A, B, info = grow_expert(*NONE, A_new, B_new, old, tau=0.1, rank_max=8)
    assert info["grew"] == 2 and A.shape == (2, 5) and B.shape == (6, 2)
    # the kept rank-2 update is the best rank-2 approximation of ΔW: the two largest directions
    assert torch.allclose(B @ A, B_new[:, :2] @ A_new[:2], atol=1e-5)
    # no experts yet: the whole update is the gap; rank_max caps it
    _, _, info = grow_expert(*NONE, A_new, B_new, None, tau=0.1, rank_max=2)
    assert info["grew"] == 2 and info["gap_fraction"] == pytest.approx(1.0)


def test_an_expert_grows_by_the_gap_and_folds_in_refinements_for_free():
    A_e, B_e = _update([(2, 1.0)])[0][:1], _update([(2, 1.0)])[1][:, :1]  # an expert of rank 1, direction 2
    basis = output_basis(B_e)
    # the block refines the expert's own direction: same rank, sum folded in
    A_ref, B_ref = _update([(2, 0.5)])
    A, B, info = grow_expert(A_e, B_e, A_ref, B_ref, basis, tau=0.1, rank_max=8)
    assert info["grew"] == 0 and A.shape[0] == 1
    assert torch.allclose(B @ A, B_e @ A_e + B_ref @ A_ref, atol=1e-5)
    # the block adds a new direction: the expert grows by one and holds both
    A_add, B_add = torch.zeros(1, 5), torch.zeros(6, 1)
    A_add[0, 3], B_add[4, 0] = 1.0, 0.8
    A, B, info = grow_expert(A_e, B_e, A_add, B_add, basis, tau=0.1, rank_max=8)
    assert info["grew"] == 1 and A.shape[0] == 2
    assert torch.allclose(B @ A, B_e @ A_e + B_add @ A_add, atol=1e-5)
    # at rank_max the expert keeps its strongest directions
    A, B, info = grow_expert(A_e, B_e, A_add, B_add, basis, tau=0.1, rank_max=1)
    assert info["grew"] == 0 and torch.allclose(B @ A, B_e @ A_e, atol=1e-5)


def test_orthogonality_penalty_zero_when_orthogonal_positive_otherwise():
    Q = output_basis(torch.eye(4)[:, :1])
    gamma = torch.tensor([1.0, 0.5])
    assert orthogonality_penalty(torch.tensor([[0.0, 1.0, 2.0, 0.0], [0.0, 0.0, 0.0, 3.0]]), Q, gamma) == 0
    z = torch.tensor([[2.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    assert orthogonality_penalty(z, Q, gamma).item() == pytest.approx((1.0 * 4 + 0.5 * 1) / 2)
    assert output_basis(torch.zeros(4, 0)) is None


def _layer():
    torch.manual_seed(0)
    return CRAMLinear(nn.Linear(5, 6), rank=2, blocks=2, alpha=4.0, dropout=0.0)


def test_layer_forward_is_the_routed_sum_of_experts_and_each_rows_block():
    layer = _layer()
    nn.init.normal_(layer.lora_B)
    A1, B1 = torch.randn(1, 5), torch.randn(6, 1)
    A2, B2 = torch.randn(3, 5), torch.randn(6, 3)
    layer.set_experts([(A1, B1), (A2, B2)])
    w = torch.tensor([[0.3, 0.7], [1.0, 0.0]])
    layer.context.begin(weights=w, block=torch.tensor([1, -1]), block_weight=torch.tensor([0.7, 1.0]))
    x = torch.randn(2, 4, 5)
    out = layer(x)
    A_k, sB_k = layer.block_factors(1)
    expected0 = (layer.base(x[0]) + 0.3 * x[0] @ A1.t() @ B1.t() + 0.7 * x[0] @ A2.t() @ B2.t()
                 + 0.7 * x[0] @ A_k.t() @ sB_k.t())
    expected1 = layer.base(x[1]) + 1.0 * x[1] @ A1.t() @ B1.t()  # no block: the frozen experts only
    assert torch.allclose(out[0], expected0, atol=1e-5) and torch.allclose(out[1], expected1, atol=1e-5)
    assert "expert_A" not in dict(layer.named_parameters())  # experts are frozen state, not parameters


def test_layer_penalty_acts_on_the_block_only_and_vanishes_for_orthogonal_updates():
    layer = _layer()
    layer.train()
    layer.set_experts([(torch.randn(1, 5), torch.eye(6)[:, :1]), (torch.zeros(0, 5), torch.zeros(6, 0))])
    layer.context.begin(weights=torch.tensor([[0.4, 0.6], [0.1, 0.9]]), block=torch.tensor([0, 0]),
                        block_weight=torch.tensor([0.6, 0.9]), owner=torch.tensor([1, 1]),
                        gamma=torch.tensor([0.4, 0.1]))
    layer.penalty_basis = {1: output_basis(layer.expert_columns({0}))}  # expert 1's group-mate: expert 0
    x = torch.randn(2, 3, 5, requires_grad=True)
    with torch.no_grad():
        layer.lora_B.zero_()
        layer.lora_B[2:4, :2] = torch.randn(2, 2)  # block 0 writes to directions 2, 3 only
    layer(x)
    assert layer.aux_loss().item() == pytest.approx(0.0, abs=1e-10)
    with torch.no_grad():
        layer.lora_B[0, :2] = torch.randn(2)
    layer(x)
    A_k, sB_k = layer.block_factors(0)
    z = x.detach().mean(1) @ A_k.t() @ sB_k.t()
    assert layer.aux_loss().item() == pytest.approx((torch.tensor([0.4, 0.1]) * z[:, 0] ** 2).mean().item(), rel=1e-5)
    layer.aux_loss().backward()
    assert x.grad is None and layer.lora_B.grad.abs().sum() > 0 and layer.lora_A.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    import os

    from strcvit_bench.models.tiny import PretrainRecipe, load_tiny

    os.environ["STRCVIT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return load_tiny([], recipe=PretrainRecipe(samples=16, batch_size=16))


@pytest.fixture
def method(bundle):
    from strcvit_bench.baselines.cram import CRAM, CRAMOptions
    from strcvit_bench.methods.base import MethodContext
    from strcvit_bench.models.base import ModelBundle

    fresh = ModelBundle(model=copy.deepcopy(bundle.model), encoder=bundle.encoder, name="tiny", family="llava")
    ctx = MethodContext(bundle=fresh, seed=0, num_chunks=3, chunk_size=8, task_ids_visible=False,
                        lookup_rows=lambda ids: [])
    m = CRAM(CRAMOptions(rank=2, alpha=4.0, tau=0.01, min_rows=2), ctx)
    m.setup()
    return m


def _rows(n: int, question: str, color: tuple[int, int, int], tag: str) -> list[dict]:
    from PIL import Image

    return [{"id": f"{tag}/{i}", "image": Image.new("RGB", (48, 48), color), "instruction": question, "answer": "2"}
            for i in range(n)]


def test_pseudo_tasks_open_reuse_and_grow_experts_by_the_gap(method):
    layers = method.layers()
    counts0 = method.parameter_counts()
    count = _rows(4, "How many shapes are there?", (200, 30, 30), "a")
    read = _rows(4, "What is written in the image?", (250, 250, 250), "b")
    # chunk 0: two kinds of rows -> two groups, two new experts, each trained through its own block
    method.before_chunk(0, count + read)
    assert len(method.experts) == 2 and sorted(method.blocks) == [0, 1]
    for layer in layers:
        with torch.no_grad():
            nn.init.normal_(layer.lora_B)  # as if both blocks had learned a rank-2 update
    method.after_chunk(0, [])
    assert [layer.expert_A.shape[0] for layer in layers] == [4] * len(layers)  # 2 experts × rank 2
    assert all(layer.lora_B.abs().sum() == 0 for layer in layers)  # fresh blocks
    grown = method.parameter_counts()
    assert grown["trainable"] == counts0["trainable"]
    assert grown["adapter"] - counts0["adapter"] == sum(4 * (la.in_features + la.out_features) for la in layers)
    # chunk 1: the counting rows recur -> their expert is reused, no new expert ...
    method.before_chunk(1, _rows(4, "How many shapes are there?", (200, 30, 30), "c"))
    assert len(method.experts) == 2 and list(method.blocks) == [0]
    for layer in layers:
        with torch.no_grad():  # ... and its block only refines the expert's own directions
            A_e, B_e = layer.factors(0)
            layer.lora_B[:, :2].copy_(B_e @ torch.randn(2, 2) / layer.scale)
    method.after_chunk(1, [])
    assert method.parameter_counts() == grown and method.history[-1]["trained"][0]["rank_added"] == 0
    # a test row of a known kind is routed to its expert by group and centroid
    w = method.route(torch.tensor([0]), method.experts[0].centroid[None])
    assert w.shape == (1, 2) and w[0, 0] == pytest.approx(1.0)


def test_a_new_task_whose_update_is_covered_adds_no_expert(method):
    layers = method.layers()
    method.before_chunk(0, _rows(4, "How many shapes are there?", (200, 30, 30), "a"))
    for layer in layers:
        with torch.no_grad():
            nn.init.normal_(layer.lora_B)
    method.after_chunk(0, [])
    before = method.parameter_counts()
    # same instruction as expert 0's group, very different images -> a new expert is opened ...
    method.before_chunk(1, _rows(4, "How many shapes are there?", (0, 0, 255), "d"))
    assert len(method.experts) == 2 and 1 in method.blocks
    k = method.blocks[1]
    for layer in layers:
        with torch.no_grad():  # ... but what it learned lies in expert 0's directions
            _, B_e = layer.factors(0)
            layer.lora_B[:, 2 * k: 2 * k + 2].copy_(B_e @ torch.randn(2, 2))
    method.after_chunk(1, [])
    assert len(method.experts) == 1 and method.parameter_counts() == before
    assert method.history[-1]["trained"][-1]["expert"] is None
