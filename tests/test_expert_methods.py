"""MoELoRA, SMoLoRA and StrLoRA layers against their formulas, by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from strcvit_bench.adapters.context import BatchContext
from strcvit_bench.adapters.routing import topk_gates
from strcvit_bench.baselines.moelora import MoELoRALinear
from strcvit_bench.baselines.smolora import SMoLoRALinear
from strcvit_bench.strlora import routing
from strcvit_bench.strlora.layer import RouterBank, StrLoRALinear


def _base(d_in=6, d_out=5, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(d_in, d_out)


# --- MoELoRA ---------------------------------------------------------------------------------

def test_moelora_gates_and_formula():
    layer = MoELoRALinear(_base(), experts=3, rank_per_expert=2, alpha=12.0, dropout=0.0)
    x = torch.randn(2, 4, 6)
    assert torch.equal(layer(x), layer.base(x))  # B = 0: the frozen layer
    torch.nn.init.normal_(layer.lora_B)
    g = layer.gates(x)
    assert torch.allclose(g.sum(-1), torch.ones(2, 4))
    expected = layer.base(x)
    for e in range(3):
        A = layer.lora_A[2 * e: 2 * e + 2]
        B = layer.lora_B[:, 2 * e: 2 * e + 2]
        expected = expected + g[..., e: e + 1] * (x @ A.t() @ B.t()) * (12.0 / 6)
    assert torch.allclose(layer(x), expected, atol=1e-6)


def test_topk_keeps_exactly_k_and_renormalises():
    g = torch.softmax(torch.randn(5, 7, 4), -1)
    kept = topk_gates(g, 2)
    assert ((kept > 0).sum(-1) == 2).all() and torch.allclose(kept.sum(-1), torch.ones(5, 7))
    assert torch.equal(topk_gates(g, 0), g)


# --- SMoLoRA ---------------------------------------------------------------------------------

def test_smolora_separable_routing_and_mixing():
    layer = SMoLoRALinear(_base(), experts=4, rank_per_expert=2, alpha=8.0, dropout=0.0, if_dim=3)
    x = torch.randn(2, 5, 6)
    if_embedding = torch.randn(2, 3)
    layer.context.begin(if_embedding=if_embedding)
    assert torch.equal(layer(x), layer.base(x))  # B = 0
    torch.nn.init.normal_(layer.lora_B)
    vu = layer.vu_choice(x)
    ins = torch.zeros(2, 2).scatter(-1, (if_embedding @ layer.router_if.t()).argmax(-1, keepdim=True), 1.0)
    assert (vu.sum(-1) == 1).all() and set(vu.flatten().tolist()) <= {0.0, 1.0}
    scale = 8.0 / 8
    out = layer.base(x)
    for b in range(2):
        ev = int(vu[b].argmax())          # VU experts are 0, 1
        ei = 2 + int(ins[b].argmax())     # IF experts are 2, 3

        def expert(e, b=b):
            return x[b] @ layer.lora_A[2 * e: 2 * e + 2].t() @ layer.lora_B[:, 2 * e: 2 * e + 2].t() * scale

        v, i = expert(ev), expert(ei)
        mix = torch.softmax(torch.cat([v @ layer.lora_fc_A.t(), i @ layer.lora_fc_B.t()], -1), -1)
        assert torch.allclose(mix.sum(-1), torch.ones(5))
        out[b] = out[b] + mix[:, :1] * v + mix[:, 1:] * i
    assert torch.allclose(layer(x), out, atol=1e-5)


def test_smolora_rank_space_layer_has_the_written_out_layers_gradients():
    """The layer takes its heads and mix in rank space; its gradients must be those of the
    released form (two full outputs, heads on each, mix of the outputs)."""
    torch.manual_seed(1)
    layer = SMoLoRALinear(_base(), experts=4, rank_per_expert=2, alpha=8.0, dropout=0.0, if_dim=3)
    layer.context.begin(if_embedding=torch.randn(3, 3))
    torch.nn.init.normal_(layer.lora_B)
    x = torch.randn(3, 5, 6)
    weights = torch.randn(3, 5, layer.out_features)

    def written_out():
        vu = layer.vu_choice(x)
        ins = torch.zeros(3, 2).scatter(-1, (layer.context["if_embedding"] @ layer.router_if.t()).argmax(-1, True), 1.0)
        h = (x @ layer.lora_A.t()).unflatten(-1, (4, 2))
        zeros = torch.zeros_like(vu)
        v = (h * (torch.cat([vu, zeros], -1)[:, None, :, None] * layer.scale)).flatten(-2) @ layer.lora_B.t()
        i = (h * (torch.cat([zeros, ins], -1)[:, None, :, None] * layer.scale)).flatten(-2) @ layer.lora_B.t()
        mix = torch.softmax(torch.cat([v @ layer.lora_fc_A.t(), i @ layer.lora_fc_B.t()], -1), -1)
        return layer.base(x) + mix[..., :1] * v + mix[..., 1:] * i

    grads = []
    for forward in (layer, written_out):
        layer.zero_grad(set_to_none=True)
        out = forward(x) if forward is layer else forward()
        (out * weights).sum().backward()
        grads.append({n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None})
    assert set(grads[0]) == set(grads[1]) >= {"lora_A", "lora_B", "lora_fc_A", "lora_fc_B"}
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-5), n


def test_smolora_vu_routing_follows_the_sequence_content_and_gates_get_no_gradient():
    layer = SMoLoRALinear(_base(), experts=4, rank_per_expert=1, alpha=4.0, dropout=0.0, if_dim=3)
    layer.context.begin(if_embedding=torch.randn(1, 3))
    a = torch.randn(1, 5, 6)
    choices = {int(layer.vu_choice(s * a).argmax()) for s in (1.0, -1.0)}
    assert len(choices) == 2  # opposite content, other VU expert
    torch.nn.init.normal_(layer.lora_B)
    layer(a).sum().backward()
    assert layer.router_vu.grad is None and layer.router_if.grad is None  # hard argmax, as released
    assert layer.lora_fc_A.grad is not None and layer.lora_A.grad is not None


# --- StrLoRA routing formulas ------------------------------------------------------------------

def test_stage1_topk_exact_k_renormalised_and_straight_through():
    t = torch.randn(6, 8)
    W_r = torch.randn(4, 8, requires_grad=True)
    gates, hard, mask = routing.stage1(t, W_r, k=2)
    assert (mask.sum(-1) == 2).all()
    # forward value = the hard gates (up to float rounding of hard + soft - soft)
    assert torch.allclose(hard.sum(-1), torch.ones(6)) and torch.allclose(gates.detach(), hard, atol=1e-6)
    # backward is the dense softmax's: d(sum_e c_e g_e)/dlogits = J_softmax^T c
    c = torch.randn(6, 4)
    (gates * c).sum().backward()
    probs = torch.softmax(t @ W_r.detach().t(), -1)
    dlogits = probs * (c - (probs * c).sum(-1, keepdim=True))
    assert torch.allclose(W_r.grad, dlogits.t() @ t, atol=1e-5)


def test_stage2_logits_by_hand():
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])          # B=1, L=2, d_in=2
    t = torch.tensor([[1.0, -1.0, 0.0]])                  # d_model=3
    W_q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])          # D=2
    W_k = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    P = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    ln = (t - t.mean()) / torch.sqrt(t.var(unbiased=False) + 1e-5)
    k = (ln @ W_k.t())[0]
    p_hat = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1 / math.sqrt(2), 1 / math.sqrt(2)]])
    expected = torch.stack([torch.stack([(x[0, tok] @ W_q.t() * k) @ p_hat[e] for e in range(3)]) for tok in range(2)])
    got = routing.stage2_logits(x, t, W_q, W_k, P)[0] * math.sqrt(2)
    assert torch.allclose(got, expected, atol=1e-5)


def test_token_weights_sum_to_one_over_the_subset():
    logits = torch.randn(2, 5, 4)
    mask = torch.tensor([[True, False, True, False], [False, True, True, False]]).unsqueeze(1)
    p = routing.masked_softmax(logits, mask)
    assert torch.allclose(p.sum(-1), torch.ones(2, 5))
    assert (p[~mask.expand_as(p)] == 0).all()
    w = routing.top1_straight_through(p)
    assert torch.allclose(w.detach().sum(-1), torch.ones(2, 5)) and (w.detach()[~mask.expand_as(w)] == 0).all()
    assert ((w.detach() > 0.5).sum(-1) == 1).all()  # one expert per token


def test_stability_kl_zero_when_equal_positive_otherwise_and_reaches_the_router():
    mask = torch.tensor([[[True, True, False]]])
    teacher = torch.tensor([[[0.5, -0.5, 9.0]]])
    assert routing.stability_kl(teacher, teacher.clone(), mask).item() == pytest.approx(0.0, abs=1e-7)
    student_param = torch.tensor([[[0.0, 0.0, -3.0]]], requires_grad=True)
    kl = routing.stability_kl(teacher, student_param, mask)
    p_t = torch.softmax(torch.tensor([0.5, -0.5]), -1)
    by_hand = (p_t * (p_t.log() - math.log(0.5))).sum()
    assert kl.item() == pytest.approx(by_hand.item(), rel=1e-5) and kl.item() > 0
    kl.sum().backward()
    assert student_param.grad[0, 0, :2].abs().sum() > 0 and student_param.grad[0, 0, 2] == 0


@pytest.mark.parametrize("with_teacher", [True, False])
def test_token_routing_equals_autograd_through_the_definitions(with_teacher):
    """The fused stage 2 (choice + KL, backward by hand) against masked_softmax, straight-through
    top-1 and stability_kl composed by autograd: values and the gradients of x and M."""
    torch.manual_seed(1)
    x0, M0, M_ema = torch.randn(3, 5, 6), torch.randn(3, 6, 4), torch.randn(3, 6, 4)
    mask = torch.tensor([[True, False, True, False], [False, True, True, True], [True, True, False, False]])
    mask = mask.unsqueeze(1)
    token_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0]])
    G, tau = torch.randn(3, 5, 4), 0.5

    def run(fused: bool):
        x, M = x0.clone().requires_grad_(), M0.clone().requires_grad_()
        teacher = M_ema if with_teacher else None
        if fused:
            choice, kl = routing.TokenRouting.apply(x, M, teacher, mask, token_mask, tau)
        else:
            choice = routing.top1_straight_through(routing.masked_softmax(x @ M, mask, tau))
            kl = torch.zeros(())
            if with_teacher:
                per_token = routing.stability_kl(x.detach() @ M_ema, x.detach() @ M, mask, tau)
                kl = (per_token * token_mask).sum() / token_mask.sum()
        ((choice * G).sum() + 0.7 * kl).backward()
        return choice.detach(), kl.detach(), x.grad, M.grad

    fused, reference = run(True), run(False)
    assert torch.allclose(fused[0], reference[0])  # the reference adds p - p: one-hot up to rounding
    assert ((fused[0] == 1).sum(-1) == 1).all() and (fused[0][~mask.expand(3, 5, 4)] == 0).all()
    assert fused[1].item() == pytest.approx(reference[1].item(), abs=1e-6)
    assert (fused[1].item() > 0) == with_teacher
    for got, want in zip(fused[2:], reference[2:], strict=True):
        assert torch.allclose(got, want, atol=1e-5)


def test_ema_update():
    avg, cur = torch.tensor([1.0, 2.0]), torch.tensor([3.0, -2.0])
    routing.ema_update(avg, cur, 0.9)
    assert torch.allclose(avg, torch.tensor([0.9 * 1 + 0.1 * 3, 0.9 * 2 + 0.1 * -2]))


# --- the StrLoRA layer --------------------------------------------------------------------------

def _strlora(**kw):
    layer = StrLoRALinear(_base(), d_model=8, experts=4, rank_per_expert=2, alpha=8.0, dropout=0.0, top_k=2,
                          router_dim=4, **kw)
    layer.context.begin(instruction=torch.randn(3, 8))
    return layer


def test_strlora_layer_zero_b_is_the_frozen_layer_and_one_expert_per_token():
    layer = _strlora()
    x = torch.randn(3, 5, 6)
    assert torch.equal(layer(x), layer.base(x))
    torch.nn.init.normal_(layer.lora_B)
    layer.recording = True
    out = layer(x)
    # each token uses exactly one expert, inside its sample's stage-1 subset
    weights = layer.stat_weight
    assert layer.stat_tokens == 15 and weights.sum().item() == pytest.approx(15.0)
    _, _, mask = routing.stage1(layer.instruction(), layer.router_Wr, 2)
    logits = routing.stage2_logits(x, layer.instruction(), layer.router_Wq, layer.router_Wk, layer.router_P)
    choice = routing.masked_softmax(logits, mask.unsqueeze(1)).argmax(-1)
    expected = layer.base(x).clone()
    for b in range(3):
        for i in range(5):
            e = int(choice[b, i])
            assert mask[b, e]
            A, B = layer.lora_A[2 * e: 2 * e + 2], layer.lora_B[:, 2 * e: 2 * e + 2]
            expected[b, i] += (x[b, i] @ A.t() @ B.t()) * 1.0  # scale = alpha / total rank = 8 / 8
    assert torch.allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("stage1_grad", [True, False])
def test_stage1_router_learns_only_through_straight_through(stage1_grad):
    layer = _strlora(stage1_grad=stage1_grad)
    torch.nn.init.normal_(layer.lora_B)
    layer(torch.randn(3, 5, 6)).pow(2).sum().backward()
    assert (layer.router_Wr.grad is not None and layer.router_Wr.grad.abs().sum() > 0) == stage1_grad
    assert layer.router_Wq.grad.abs().sum() > 0 and layer.router_P.grad.abs().sum() > 0


def test_stability_loss_in_the_layer_only_trains_the_router():
    layer = _strlora()
    layer.train()
    layer.stability_active = True
    x = torch.randn(3, 5, 6, requires_grad=True)
    layer(x)
    assert layer.aux_loss().item() == pytest.approx(0.0, abs=1e-6)  # the EMA copy equals the router at start
    with torch.no_grad():
        layer.router_P.add_(torch.randn_like(layer.router_P))
    layer(x)
    assert layer.aux_loss().item() > 0
    layer.aux_loss().backward()
    assert x.grad is None or x.grad.abs().sum() == 0  # inputs detached
    assert layer.lora_A.grad is None and layer.router_P.grad.abs().sum() > 0
    before = layer.ema_P.clone()
    layer.update_ema(0.5)
    assert torch.allclose(layer.ema_P, 0.5 * before + 0.5 * layer.router_P.detach())


def test_ema_update_all_is_ema_update_bit_for_bit():
    torch.manual_seed(0)
    avgs, curs = [torch.randn(3, 4), torch.randn(5)], [torch.randn(3, 4), torch.randn(5)]
    one_by_one = [a.clone() for a in avgs]
    for a, c in zip(one_by_one, curs, strict=True):
        routing.ema_update(a, c, 0.999)
    routing.ema_update_all(avgs, curs, 0.999)
    assert all(torch.equal(a, b) for a, b in zip(avgs, one_by_one, strict=True))


@pytest.mark.parametrize("options", [{}, {"task_select": False}, {"token_weights": False}, {"stage1_grad": False}])
def test_router_bank_routes_every_layer_as_the_layer_alone(options):
    """The bank stacks the routers of layers of two input widths; each layer's output, KL and
    every gradient must be those of the same layer routing on its own."""
    context = BatchContext()
    layers = [StrLoRALinear(_base(d_in, 5, seed=i), d_model=8, experts=4, rank_per_expert=2, alpha=8.0, dropout=0.0,
                            top_k=2, router_dim=4, context=context, **options)
              for i, d_in in enumerate((6, 7, 6))]
    for layer in layers:
        torch.nn.init.normal_(layer.lora_B)
        layer.train()
        layer.copy_router_to_teacher()
        with torch.no_grad():
            layer.router_P.add_(torch.randn_like(layer.router_P))  # a teacher that differs
        layer.stability_active = True
    torch.manual_seed(1)
    t = torch.randn(3, 8)
    xs = [torch.randn(3, 5, layer.in_features) for layer in layers]
    g = torch.randn(3, 5, 5)

    def run(bank):
        for layer in layers:
            layer.bank = bank
            layer.zero_grad(set_to_none=True)
        context.begin(torch.ones(3, 5), instruction=t)
        outs = [layer(x) for layer, x in zip(layers, xs, strict=True)]
        aux = [layer.aux_loss() for layer in layers]
        total = sum((o * g).sum() for o in outs) + sum(a for a in aux if a is not None)
        total.backward()
        grads = [{n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None} for layer in layers]
        return outs, aux, grads

    alone, banked = run(None), run(RouterBank(layers))
    for a, b in zip(alone[0], banked[0], strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert [a is None for a in alone[1]] == [b is None for b in banked[1]]
    for a, b in zip(alone[1], banked[1], strict=True):
        assert a is None or torch.allclose(a, b, atol=1e-6)
    for a, b in zip(alone[2], banked[2], strict=True):
        assert set(a) == set(b) and len(a) >= 2
        for n in a:
            assert torch.allclose(a[n], b[n], atol=1e-5), n


def test_router_bank_runs_once_per_batch():
    context = BatchContext()
    layers = [StrLoRALinear(_base(), d_model=8, experts=4, rank_per_expert=2, alpha=8.0, dropout=0.0, top_k=2,
                            router_dim=4, context=context) for _ in range(2)]
    bank = RouterBank(layers)
    calls = []
    original = bank.plans
    bank.plans = lambda t: calls.append(1) or original(t)
    for layer in layers:
        layer.bank = bank
    context.begin(instruction=torch.randn(3, 8))
    with torch.no_grad():
        for x in (torch.randn(3, 5, 6), torch.randn(3, 1, 6)):  # a prompt, then a decoding step
            for layer in layers:
                layer(x)
    assert len(calls) == 1
    context.begin(instruction=torch.randn(3, 8))  # a new batch decides again
    with torch.no_grad():
        layers[0](torch.randn(3, 5, 6))
    assert len(calls) == 2


def test_ablations_change_the_routing():
    x = torch.randn(3, 5, 6)
    no_select = _strlora(task_select=False)
    _, _, mask = no_select.select()
    assert mask.all()
    no_tokens = _strlora(token_weights=False)
    torch.nn.init.normal_(no_tokens.lora_B)
    no_tokens.recording = True
    no_tokens(x)
    # without stage 2 every token of a sample carries the sample's two renormalised gates
    assert no_tokens.stat_weight.sum().item() == pytest.approx(15.0)
    assert (no_tokens.stat_weight > 0).sum() >= 2


# --- StrLoRA inside a model ----------------------------------------------------------------------

def test_strlora_stage1_selection_depends_only_on_the_instruction(tmp_path, monkeypatch):
    from PIL import Image

    from strcvit_bench.methods.base import MethodContext
    from strcvit_bench.models.base import model_inputs
    from strcvit_bench.models.tiny import PretrainRecipe, load_tiny
    from strcvit_bench.strlora import StrLoRA, StrLoRAOptions

    monkeypatch.setenv("STRCVIT_CACHE", str(tmp_path))
    bundle = load_tiny([], recipe=PretrainRecipe(samples=16, batch_size=16))
    ctx = MethodContext(bundle=bundle, seed=0, num_chunks=1, chunk_size=1, task_ids_visible=False,
                        lookup_rows=lambda ids: [])
    method = StrLoRA(StrLoRAOptions(), ctx)
    method.setup()

    def selections(instruction: str, color: tuple[int, int, int]) -> list[torch.Tensor]:
        rows = [{"image": Image.new("RGB", (48, 48), color), "instruction": instruction, "answer": "2"}]
        batch = bundle.encoder.train_batch(rows)
        method.before_forward(batch, rows)
        with torch.no_grad():
            bundle.model(**model_inputs(batch))
        return [layer.select()[2].clone() for layer in method.layers()]  # stage 1's experts

    base = selections("How many shapes are there?", (255, 0, 0))
    assert all(m.sum().item() == 2 for m in base)  # top-2 of 4 in every layer
    other_image = selections("How many shapes are there?", (0, 0, 255))
    assert all(torch.equal(a, b) for a, b in zip(base, other_image, strict=True))
    changed = [selections(q, (255, 0, 0)) for q in ("What is written in the image?", "Is there a road?",
                                                    "Which bar is the largest?", "What color is the circle?")]
    assert any(not torch.equal(a, b) for sel in changed for a, b in zip(base, sel, strict=True))


def test_stage2_map_is_the_query_first_form_in_value_and_gradient():
    """Folding W_q, k and P into one (d_in x E) map per sample must not change what is learned."""
    torch.manual_seed(0)
    leaves = {"x": torch.randn(3, 5, 6), "t": torch.randn(3, 8), "W_q": torch.randn(4, 6),
              "W_k": torch.randn(4, 8), "P": torch.randn(3, 4)}
    g = torch.randn(3, 5, 3)

    def grads(logits_of):
        ps = {k: v.clone().requires_grad_() for k, v in leaves.items()}
        out = logits_of(**ps)
        (out * g).sum().backward()
        return out.detach(), {k: v.grad for k, v in ps.items()}

    def query_first(x, t, W_q, W_k, P):
        q = x @ W_q.t()
        k = torch.nn.functional.layer_norm(t, t.shape[-1:]) @ W_k.t()
        return ((q * k.unsqueeze(1)) @ torch.nn.functional.normalize(P, dim=-1).t()) / 2.0  # sqrt(D = 4)

    fast, fast_grads = grads(lambda x, t, W_q, W_k, P: routing.stage2_logits(x, t, W_q, W_k, P))
    slow, slow_grads = grads(query_first)
    assert torch.allclose(fast, slow, atol=1e-5)
    for name in leaves:
        assert torch.allclose(fast_grads[name], slow_grads[name], atol=1e-4), name
