"""Method formulas by hand on tiny tensors: LoRA, EWC penalty and Fisher, the reservoir."""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch import nn

from strcvit_bench.adapters import LoRALinear, inject
from strcvit_bench.baselines.ewc import EWC, EWCOptions, ewc_penalty, online_fisher
from strcvit_bench.baselines.replay import Replay, ReplayOptions, Reservoir
from strcvit_bench.errors import StrcvitError
from strcvit_bench.methods.base import MethodContext
from strcvit_bench.methods.registry import get_method, parse_options


def test_lora_with_zero_b_is_the_frozen_layer_and_follows_the_formula():
    torch.manual_seed(0)
    base = nn.Linear(4, 3)
    layer = LoRALinear(base, r=2, alpha=4.0, dropout=0.0)
    x = torch.randn(5, 4)
    assert torch.equal(layer(x), base(x))
    with torch.no_grad():
        layer.lora_A.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
        layer.lora_B.copy_(torch.tensor([[1.0, 0], [0, 2.0], [1.0, 1.0]]))
    # scale = alpha / r = 2; B A x = [x0, 2 x1, x0 + x1]
    expected = base(x) + 2 * torch.stack([x[:, 0], 2 * x[:, 1], x[:, 0] + x[:, 1]], dim=1)
    assert torch.allclose(layer(x), expected)


def test_inject_only_matches_the_regex():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    names = inject(model, r"2", lambda n, layer: LoRALinear(layer, r=1))
    assert names == ["2"] and isinstance(model[2], LoRALinear) and isinstance(model[0], nn.Linear)
    with pytest.raises(StrcvitError, match="matches no linear layer"):
        inject(model, r"nothing", lambda n, layer: layer)


def test_ewc_penalty_by_hand():
    theta = {"w": torch.tensor([2.0, 0.0], requires_grad=True)}
    anchor = {"w": torch.tensor([1.0, 2.0])}
    fisher = {"w": torch.tensor([0.5, 2.0])}
    pen = ewc_penalty(theta, anchor, fisher, lam=3.0)
    # (3/2) * (0.5 * 1^2 + 2 * (-2)^2) = 1.5 * 8.5
    assert pen.item() == pytest.approx(12.75)
    pen.backward()
    # gradient λ F (θ − θ*) = 3 * [0.5 * 1, 2 * -2]
    assert theta["w"].grad.tolist() == pytest.approx([1.5, -12.0])


def test_online_fisher_accumulates_with_decay():
    acc = online_fisher(None, {"w": torch.tensor([1.0, 2.0])}, gamma=0.5)
    acc = online_fisher(acc, {"w": torch.tensor([3.0, 4.0])}, gamma=0.5)
    assert acc["w"].tolist() == [3.5, 5.0]


class _Logistic(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.5, -1.0]))


def test_ewc_fisher_is_the_mean_squared_per_sample_gradient():
    """A 2-parameter logistic model: ∂ log p(y|x)/∂w = (y − σ(w·x)) x, squared and averaged."""
    model = _Logistic()
    rows = [{"x": [1.0, 2.0], "y": 1.0}, {"x": [-1.0, 0.5], "y": 0.0}]

    def nll(batch_rows, sum_over_tokens=False):
        x = torch.tensor(batch_rows[0]["x"])
        p = torch.sigmoid(model.w @ x)
        y = batch_rows[0]["y"]
        return -(y * torch.log(p) + (1 - y) * torch.log(1 - p))

    ctx = MethodContext(bundle=None, seed=0, num_chunks=1, chunk_size=2, task_ids_visible=False,  # type: ignore
                        lookup_rows=lambda ids: [])
    ewc = EWC.__new__(EWC)
    ewc.options, ewc.ctx, ewc.model = EWCOptions(fisher_samples=2), ctx, model
    ewc.params = {"w": model.w}
    ewc.batch_loss = nll  # the method's answer NLL, here the logistic model's
    got = ewc.estimate_fisher(0, rows)["w"]
    expected = torch.zeros(2)
    for r in rows:
        x = torch.tensor(r["x"])
        g = (r["y"] - torch.sigmoid(torch.tensor([0.5, -1.0]) @ x)) * x
        expected += g ** 2
    assert torch.allclose(got, expected / 2)


def test_reservoir_keeps_each_item_with_probability_m_over_n():
    m, n, trials = 10, 100, 3000
    hits = [0] * n
    rng = random.Random(1234)
    for _ in range(trials):
        res = Reservoir(m)
        for i in range(n):
            res.add(str(i), rng)
        assert len(res.items) == m and res.seen == n
        for item in res.items:
            hits[int(item)] += 1
    p = m / n
    sd = math.sqrt(p * (1 - p) / trials)
    # every item, early or late, within 4.5 standard deviations of M/n
    assert all(abs(h / trials - p) < 4.5 * sd for h in hits)
    early, late = sum(hits[:50]) / (50 * trials), sum(hits[50:]) / (50 * trials)
    assert abs(early - late) < 0.01


def test_replay_batches_mix_buffer_rows_in():
    rows = [{"id": f"r{i}", "instruction": "q", "answer": "a"} for i in range(8)]
    by_id = {r["id"]: r for r in rows}
    ctx = MethodContext(bundle=None, seed=0, num_chunks=1, chunk_size=8, task_ids_visible=False,  # type: ignore
                        lookup_rows=lambda ids: [by_id[i] for i in ids])
    replay = Replay.__new__(Replay)
    replay.options, replay.ctx, replay.reservoir = ReplayOptions(replay_ratio=0.5, buffer_size=3), ctx, Reservoir(3)
    batches = list(replay.batches(0, rows, 4, random.Random(0)))
    assert [len(b) for b in batches] == [4, 6]  # first batch: empty buffer; then 4 new + 2 replayed
    assert len({r["id"] for r in batches[1][4:]} & {r["id"] for r in batches[0]}) == 2
    assert replay.reservoir.seen == 8 and len(replay.reservoir.items) == 3


def test_option_parsing_errors_list_the_options():
    with pytest.raises(StrcvitError, match="unknown option.*buffer_size, replay_ratio"):
        parse_options(get_method("replay"), ["bufer_size=10"])
    with pytest.raises(StrcvitError, match="lam"):
        parse_options(get_method("ewc"), ["lam=-1"])
    assert parse_options(get_method("ewc"), ["lam=5", "variant=authors"]).lam == 5.0
    with pytest.raises(StrcvitError, match="unknown method 'sgd'"):
        get_method("sgd")
