"""Models: the tiny default's encoder and cache, and the real HF loading path on tiny models of
three families (Llava, Qwen2-VL, Idefics3) built offline."""

from __future__ import annotations

import json
import re

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from strcvit_bench.adapters import LoRALinear
from strcvit_bench.baselines.lora import LoRA
from strcvit_bench.cli import app
from strcvit_bench.methods.base import MethodContext, MethodOptions
from strcvit_bench.models.base import loss_inputs, model_inputs
from strcvit_bench.models.hf import load_hf
from strcvit_bench.models.tiny import (
    EOS,
    IMAGE,
    SEP,
    PretrainRecipe,
    TinyConfig,
    TinyEncoder,
    build_tokenizer,
    load_tiny,
)

from .hf_families import FAMILIES

ROWS = [{"image": Image.new("RGB", (60, 50), (200, 10, 10)), "instruction": "What is this?", "answer": "a red cat"},
        {"image": Image.new("RGB", (48, 48)), "instruction": "Blue?", "answer": "no"}]


def test_tiny_encoder_layout_and_labels():
    tok = build_tokenizer(["what is this ? a red cat is it blue no"])
    enc = TinyEncoder(tok, TinyConfig())
    b = enc.train_batch(ROWS)
    ids, labels = b["input_ids"][0].tolist(), b["labels"][0].tolist()
    assert ids[1:37] == [IMAGE] * 36 and b["pixel_values"].shape == (2, 3, 48, 48)
    sep = ids.index(SEP)
    assert all(v == -100 for v in labels[: sep + 1])  # no loss on the prompt
    assert tok.decode(labels[sep + 1: sep + 4]) == "a red cat" and labels[sep + 4] == EOS
    p = enc.prompt_batch(ROWS)
    assert p["input_ids"][1, 0] == 0 and p["attention_mask"][1, 0] == 0  # left padding
    assert p["input_ids"][0, -1] == SEP and p["input_ids"][1, -1] == SEP
    assert b["instruction_mask"].sum(1).tolist() == [4, 2]
    assert enc.decode(torch.tensor([[tok.convert_tokens_to_ids("red"), tok.convert_tokens_to_ids("cat"), EOS, 9]])) == [
        "red cat"]


def test_tiny_base_is_cached_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("STRCVIT_CACHE", str(tmp_path))
    a = load_tiny(["hello world"], recipe=PretrainRecipe(samples=32, batch_size=16))
    assert a.info["cached"] is False and a.info["pretrain_stats"]["steps"] == 2
    b = load_tiny(["hello world"], recipe=PretrainRecipe(samples=32, batch_size=16))
    assert b.info["cached"] is True
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values(),
                                                    strict=True))
    c = load_tiny(["hello world"], recipe=PretrainRecipe(samples=64, batch_size=16))
    assert c.info["cached"] is False  # another recipe, another cache entry
    assert len(list((tmp_path / "models").iterdir())) == 2


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_hf_family_loads_trains_and_generates(tmp_path, family):
    path = FAMILIES[family](tmp_path / family)
    bundle = load_hf(str(path))
    ctx = MethodContext(bundle=bundle, seed=0, num_chunks=1, chunk_size=2, task_ids_visible=False,
                        lookup_rows=lambda ids: [])
    method = LoRA(MethodOptions(), ctx)
    params = method.setup()
    wrapped = [n for n, m in bundle.model.named_modules() if isinstance(m, LoRALinear)]
    assert wrapped and all(re.search(r"(language_model|text_model)\.layers\.", n) for n in wrapped)
    assert any("vision" in n or "visual" in n for n, _ in bundle.model.named_parameters())
    frozen_vision = [n for n, p in bundle.model.named_parameters()
                     if ("vision" in n or "visual" in n) and "merger" not in n and p.requires_grad]
    assert frozen_vision == []  # adapters never go on the vision tower
    assert any(re.search(r"multi_modal_projector|connector|merger", n) for n in params)
    batch = bundle.encoder.train_batch(ROWS)
    assert (batch["labels"] != -100).sum().item() > 0
    loss = bundle.model(**model_inputs(batch)).loss
    loss.backward()
    assert all(p.grad is not None for n, p in params.items() if "lora_A" in n)
    prompts = bundle.encoder.prompt_batch(ROWS)
    out = bundle.model.generate(**model_inputs(prompts), max_new_tokens=2, do_sample=False)
    assert len(bundle.encoder.decode(out[:, prompts["input_ids"].shape[1]:])) == 2


LONGER = [*ROWS, {"image": Image.new("RGB", (48, 48), (0, 90, 200)), "instruction": "Describe this image.",
                  "answer": "a blue dog yes"}]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_training_loss_takes_logits_only_where_it_reads_them(tmp_path, family):
    """The output layer runs on the answer's positions only; the gradients are the same bits."""
    bundle = load_hf(str(FAMILIES[family](tmp_path / family)))
    ctx = MethodContext(bundle=bundle, seed=0, num_chunks=1, chunk_size=2, task_ids_visible=False,
                        lookup_rows=lambda ids: [])
    params = LoRA(MethodOptions(), ctx).setup()
    with torch.no_grad():  # B = 0 at init would leave A's gradient zero either way
        for n, p in params.items():
            if "lora_B" in n:
                p.normal_(std=0.05, generator=torch.Generator().manual_seed(1))
    model, batch = bundle.model, bundle.encoder.train_batch(LONGER)

    def run(inputs):
        model.zero_grad(set_to_none=True)
        out = model(**inputs)
        out.loss.backward()
        return out, {n: p.grad.clone() for n, p in params.items() if p.grad is not None}

    full, full_grads = run(model_inputs(batch))
    kept, kept_grads = run(loss_inputs(model, batch))
    assert kept.logits.shape[1] < full.logits.shape[1] == batch["input_ids"].shape[1]
    assert kept.loss.item() == pytest.approx(full.loss.item(), rel=1e-6)
    assert full_grads.keys() == kept_grads.keys() and any("lora_A" in n for n in full_grads)
    assert all(torch.equal(full_grads[n], kept_grads[n]) for n in full_grads)


def test_a_model_without_logits_to_keep_gets_the_whole_batch():
    class Plain(torch.nn.Module):
        def forward(self, input_ids, labels=None):
            return input_ids

    batch = {"input_ids": torch.ones(2, 5, dtype=torch.long), "labels": torch.full((2, 5), -100),
             "instruction_ids": torch.ones(2, 1, dtype=torch.long)}
    batch["labels"][:, 3:] = 7
    inputs = loss_inputs(Plain(), batch)
    assert set(inputs) == {"input_ids", "labels"} and inputs["labels"].shape == (2, 5)


def test_run_cli_on_a_hf_model_path(tmp_path, tiny_stream):
    path = FAMILIES["qwen2_vl"](tmp_path / "qwen")
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["--quiet", "run", "--stream", str(tiny_stream), "--model", str(path), "--method",
                                 "lora", "--max-chunks", "1", "--eval-limit", "3", "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert res["model"] == str(path) and res["model_info"]["model_type"] == "qwen2_vl"
    assert res["completed_chunks"] == 1 and res["complete"] is False


def test_every_registered_family_has_a_tiny_test_model():
    from strcvit_bench.models.families import FAMILIES as REGISTERED

    assert set(FAMILIES) == set(REGISTERED.names())


def _routed_methods() -> list[str]:
    from strcvit_bench.methods.experts import ExpertMethod
    from strcvit_bench.methods.registry import METHODS

    return [name for name, cls in METHODS.items() if issubclass(cls, ExpertMethod)]


# a chunk of two rows is too small for CRAM's default of 8 rows before it opens an expert
SMALL_CHUNK_OPTIONS = {"cram": {"min_rows": 1}}


@pytest.mark.parametrize("method", _routed_methods())
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_expert_methods_on_hf_families(tmp_path, family, method):
    from strcvit_bench.methods.registry import get_method, parse_options

    bundle = load_hf(str(FAMILIES[family](tmp_path / family)))
    ctx = MethodContext(bundle=bundle, seed=0, num_chunks=2, chunk_size=2, task_ids_visible=False,
                        lookup_rows=lambda ids: [])
    cls = get_method(method)
    m = cls(parse_options(cls, SMALL_CHUNK_OPTIONS.get(method, {})), ctx)
    params = m.setup()
    rows = [{**r, "id": f"row{i}"} for i, r in enumerate(ROWS)]
    # StrLoRA: the stability loss is on from the second chunk; BranchLoRA and CRAM cluster the
    # rows by the family's image view (read at its projector's input) and open a router / expert
    m.before_chunk(1, rows)
    bundle.model.train()
    batch = bundle.encoder.train_batch(rows)
    m.before_forward(batch, rows)
    loss = m.loss(bundle.model(**model_inputs(batch)).loss, batch)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in params.items() if "lora_B" in n)
    torch.optim.SGD([p for p in params.values() if p.requires_grad], lr=0.1).step()
    m.after_step()
    m.after_chunk(1, rows)  # CRAM keeps the expert: its block learned a direction
    bundle.model.eval()
    m.routing_reset()
    prompts = bundle.encoder.prompt_batch(ROWS)  # test rows: routed by what the model sees
    m.before_forward(prompts, ROWS)
    out = bundle.model.generate(**model_inputs(prompts), max_new_tokens=2, do_sample=False)
    assert out.shape[0] == 2
    summary = m.routing_summary()
    assert summary is not None and abs(sum(summary["mean_weight"]) - 1) < 1e-3
