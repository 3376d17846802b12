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


def test_ewc_penalty_gradient_is_autograds_bit_for_bit():
    """The penalty makes its gradient in the forward pass; at loss weight 1 it must equal autograd
    through the written-out (λ/2) Σ F (θ − θ*)² exactly (the runs of the leaderboard rely on it)."""
    torch.manual_seed(0)
    shapes = {"a": (7, 5), "b": (300,), "c": (3, 4, 2)}
    theta = {n: torch.randn(s) for n, s in shapes.items()}
    anchor = {n: t + 0.1 * torch.randn_like(t) for n, t in theta.items()}
    fisher = {n: torch.rand_like(t) for n, t in theta.items()}

    def grads(penalty, weight=1.0):
        ps = {n: t.clone().requires_grad_() for n, t in theta.items()}
        value = penalty(ps)
        (value * weight + sum(p.sum() for p in ps.values())).backward()  # with a task term, as in training
        return value.detach(), {n: p.grad for n, p in ps.items()}

    def written_out(ps):
        return 0.5 * 1000.0 * sum((fisher[n] * (p - anchor[n]) ** 2).sum() for n, p in ps.items())

    value, fused = grads(lambda ps: ewc_penalty(ps, anchor, fisher, 1000.0))
    ref_value, ref = grads(written_out)
    assert value.item() == pytest.approx(ref_value.item(), rel=1e-6)
    assert all(torch.equal(fused[n], ref[n]) for n in shapes)
    _, half = grads(lambda ps: ewc_penalty(ps, anchor, fisher, 1000.0), weight=0.5)  # grad_accum's weights
    _, ref_half = grads(written_out, weight=0.5)
    assert all(torch.allclose(half[n], ref_half[n], rtol=1e-6) for n in shapes)


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


def test_per_sample_squares_equal_one_backward_per_sample():
    from strcvit_bench.adapters.per_sample import PerSampleSquares

    torch.manual_seed(0)
    lora = LoRALinear(nn.Linear(6, 5), r=3, alpha=6.0)
    with torch.no_grad():
        lora.lora_B.normal_()
    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), lora, nn.PReLU(), nn.Linear(5, 2))
    with torch.no_grad():
        model[1].weight.normal_()
        model[1].bias.normal_()
    for p in model.parameters():
        p.requires_grad_(False)
    params = {"proj.w": model[0].weight, "proj.b": model[0].bias, "A": lora.lora_A, "B": lora.lora_B,
              "norm.w": model[1].weight, "norm.b": model[1].bias}
    for p in params.values():
        p.requires_grad_(True)
    x = torch.randn(3, 7, 4)
    mask = torch.ones(3, 7)
    mask[0, 5:] = 0  # a padded sample: no loss on its tail

    def loss(xs, ms):
        return (model(xs).pow(2).sum(-1) * ms).sum()

    tracker = PerSampleSquares(model, params)
    assert tracker.covered
    got = tracker.run(lambda: loss(x, mask), 3)
    # the pass makes the layers' output gradients only, not the parameters' batch gradients
    assert all(p.grad is None for p in model.parameters())
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(3):
        model.zero_grad(set_to_none=True)
        loss(x[i: i + 1], mask[i: i + 1]).backward()
        for n, p in params.items():
            expected[n] += p.grad ** 2
    assert got is not None and set(got) == set(params)
    for n in params:
        assert torch.allclose(got[n], expected[n], rtol=1e-5, atol=1e-7), n
    # a trainable tensor of a layer type the hooks do not know: not covered
    assert not PerSampleSquares(model, {**params, "prelu": model[3].weight}).covered
    # inputs not laid out as (samples, tokens, features): no answer, the caller goes one by one
    assert tracker.run(lambda: model(x[0]).pow(2).sum(), 7) is None
    # a loss the layers' outputs do not reach: no answer either
    assert tracker.run(lambda: model(x).detach().sum() + params["B"].sum(), 3) is None


def test_a_linear_weights_squares_summed_sample_by_sample_are_the_batched_ones_bit_for_bit():
    """The projector's squares are summed one sample at a time (memory); the committed EWC runs
    rely on that being the batched sum exactly."""
    from strcvit_bench.adapters import per_sample

    torch.manual_seed(0)
    layer = nn.Linear(24, 40)
    x, g = torch.randn(6, 9, 24), torch.randn(6, 9, 40)
    g[..., :3] = 0  # outputs no sample's loss reaches: their squares are exactly zero
    batched = {k: (v ** 2).sum(0) for k, v in per_sample._sample_grads(layer, x, g).items()}
    looped = per_sample._square_sums(layer, x, g, {"weight", "bias"})
    assert set(looped) == {"weight", "bias"}
    assert all(torch.equal(looped[k], batched[k]) for k in batched)
    assert not looped["weight"][:3].any() and looped["weight"][3:].all()
    assert set(per_sample._square_sums(layer, x, g, {"bias"})) == {"bias"}


def test_per_sample_squares_split_flattened_patches_by_image_grid():
    """Qwen2-VL's merger sees every image's patches flattened, merged k = 4 at a time: the rows
    are split by `image_grid_thw`."""
    from strcvit_bench.adapters.per_sample import PerSampleSquares

    torch.manual_seed(0)

    class Merger(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm, self.fc = nn.LayerNorm(3), nn.Linear(12, 2)

        def forward(self, patches, image_grid_thw):
            return self.fc(self.norm(patches).view(-1, 12))

    model = Merger()
    params = dict(model.named_parameters())
    grid = torch.tensor([[1, 2, 2], [1, 2, 4], [1, 4, 2]])  # 4, 8 and 8 patches: 1, 2 and 2 merged rows
    patches = torch.randn(20, 3)
    got = PerSampleSquares(model, params).run(lambda: model(patches, image_grid_thw=grid).pow(2).sum(), 3)
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    for part, thw in zip(patches.split([4, 8, 8]), grid, strict=True):
        model.zero_grad(set_to_none=True)
        model(part, image_grid_thw=thw[None]).pow(2).sum().backward()
        for n, p in params.items():
            expected[n] += p.grad ** 2
    assert got is not None
    for n in params:
        assert torch.allclose(got[n], expected[n], rtol=1e-5, atol=1e-7), n
    bad = torch.tensor([[1, 2, 2], [1, 2, 4], [1, 2, 2]])  # shares that do not add up: no answer
    assert PerSampleSquares(model, params).run(lambda: model(patches, image_grid_thw=bad).pow(2).sum(), 3) is None


def _fisher_both_ways(method, params, rows, monkeypatch, atol: float) -> list[tuple[int, bool]]:
    """EWC's Fisher batched equals its Fisher one sample a pass (B ≠ 0, so A's gradient is not
    zero); the batched passes taken: (samples, answered)."""
    from strcvit_bench.adapters import per_sample

    with torch.no_grad():
        for n, p in params.items():
            if "lora_B" in n:
                p.normal_(std=0.1)
    passes: list[tuple[int, bool]] = []
    run = per_sample.PerSampleSquares.run
    monkeypatch.setattr(per_sample.PerSampleSquares, "run",
                        lambda self, fn, n: (r := run(self, fn, n), passes.append((n, r is not None)))[0])
    batched = method.estimate_fisher(0, rows)
    looped = method.estimate_fisher(0, rows, batched=False)
    assert set(batched) == set(looped) == set(params)
    for n in params:
        assert torch.allclose(batched[n], looped[n], rtol=1e-4, atol=atol), n
    assert all(v.abs().sum() > 0 for v in batched.values())
    return passes


def test_ewc_fisher_batched_equals_one_sample_per_pass_on_the_tiny_model(tiny_stream, monkeypatch):
    from strcvit_bench.streams.stream import open_stream
    from strcvit_bench.training import setup
    from strcvit_bench.training.config import RunConfig
    from strcvit_bench.training.rows import RowStore

    stream = open_stream(tiny_stream)
    cfg = RunConfig(stream=str(tiny_stream), method="ewc", method_options={"fisher_samples": 20},
                    pretrain_samples=1024)
    _, method, params = setup.build(cfg, stream)
    rows = RowStore(stream, hide_task=True).chunk(0)
    # the batched path was taken: 20 samples in two passes
    assert _fisher_both_ways(method, params, rows, monkeypatch, atol=1e-9) == [(16, True), (4, True)]


@pytest.mark.parametrize("family", ["qwen2_vl", "llava"])
def test_ewc_fisher_batched_on_hf_families(tmp_path, tiny_stream, monkeypatch, family):
    """On a real family's layout (Qwen2-VL's flattened merger, Llava's projector) the batched
    Fisher is the one-sample-per-pass Fisher, and the batched path is the one taken."""
    from strcvit_bench.models.hf import load_hf
    from strcvit_bench.streams.stream import open_stream
    from strcvit_bench.training.rows import RowStore

    from .hf_families import FAMILIES

    bundle = load_hf(str(FAMILIES[family](tmp_path / family)), dtype="float32")
    ctx = MethodContext(bundle=bundle, seed=0, num_chunks=3, chunk_size=24, task_ids_visible=False,
                        lookup_rows=lambda ids: [])
    method = EWC(EWCOptions(fisher_samples=6), ctx)
    params = method.setup()
    assert any("merger" in n or "projector" in n for n in params)
    rows = RowStore(open_stream(tiny_stream), hide_task=True).chunk(0)
    assert _fisher_both_ways(method, params, rows, monkeypatch, atol=1e-10) == [(6, True)]
