"""StrLoRA as the authors released it: the teacher's birth, router freezing, the router width."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from strcvit_bench.cli import app
from strcvit_bench.streams.stream import open_stream
from strcvit_bench.strlora.method import default_router_dim
from strcvit_bench.training import setup
from strcvit_bench.training.config import RunConfig

runner = CliRunner()
FAST = ["--pretrain-samples", "1024", "--lr", "0.02", "--batch-size", "8", "--eval-batch-size", "32"]


@pytest.fixture(autouse=True)
def _model_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("STRCVIT_CACHE", str(tmp_path_factory.getbasetemp() / "model-cache"))


def _method(stream: Path, **options):
    cfg = RunConfig(stream=str(stream), method="strlora", method_options=options, pretrain_samples=1024)
    _, method, _ = setup.build(cfg, open_stream(stream))
    return method


def _router(layer) -> list[torch.Tensor]:
    return [layer.router_Wq.detach().clone(), layer.router_Wk.detach().clone(), layer.router_P.detach().clone()]


def _teacher(layer) -> list[torch.Tensor]:
    return [layer.ema_Wq.clone(), layer.ema_Wk.clone(), layer.ema_P.clone()]


def test_teacher_is_born_at_chunk_1_as_a_copy_of_the_trained_router(tiny_stream):
    method = _method(tiny_stream)
    layer = method.layers()[0]
    method.before_chunk(0, [])
    born_before = _teacher(layer)
    with torch.no_grad():  # chunk 0 "trains" the router; the loss is off, so the teacher must not follow
        for p in (layer.router_Wq, layer.router_Wk, layer.router_P):
            p.add_(torch.randn_like(p))
    method.after_step()
    assert all(torch.equal(a, b) for a, b in zip(_teacher(layer), born_before, strict=True))
    assert method.teacher_born is None and method.state()[0] == {}
    method.before_chunk(1, [])
    assert method.teacher_born == 1
    assert all(torch.equal(a, b) for a, b in zip(_teacher(layer), _router(layer), strict=True))
    # from now on it follows every step, and a later chunk does not copy again
    copied = layer.router_P.detach().clone()
    with torch.no_grad():
        layer.router_P.add_(1.0)
    method.after_step()
    m = method.options.ema_momentum
    assert torch.allclose(layer.ema_P, m * copied + (1 - m) * (copied + 1.0))
    teacher = _teacher(layer)
    method.before_chunk(2, [])
    assert all(torch.equal(a, b) for a, b in zip(_teacher(layer), teacher, strict=True))


def test_freeze_router_after_names_the_first_frozen_chunk(tiny_stream):
    method = _method(tiny_stream, freeze_router_after=4)
    layer = method.layers()[0]
    method.before_chunk(3, [])
    assert layer.router_Wq.requires_grad and layer.router_Wr.requires_grad
    method.before_chunk(4, [])
    assert not any(p.requires_grad for n, p in layer.named_parameters(recurse=False) if n.startswith("router_"))
    assert layer.lora_A.requires_grad


def test_router_width_scales_with_the_hidden_size(tiny_stream):
    assert default_router_dim(4096) == 64 and default_router_dim(1536) == 24 and default_router_dim(256) == 4
    scaled = _method(tiny_stream)
    assert scaled.router_dim == 4 and scaled.layers()[0].router_Wq.shape[0] == 4
    authors = _method(tiny_stream, router_dim=64)
    assert authors.layers()[0].router_Wq.shape[0] == 64
    assert authors.parameter_counts()["trainable"] > scaled.parameter_counts()["trainable"]


@pytest.mark.parametrize("method", ["strlora", "moelora", "branchlora"])
def test_top_k_above_the_experts_is_refused(tiny_stream, tmp_path, method):
    r = runner.invoke(app, ["--quiet", "run", "--stream", str(tiny_stream), "--method", method, "--out",
                            str(tmp_path / "x"), "--opt", "top_k=9", *FAST])
    assert r.exit_code == 2 and re.search(r"top_k.9 exceeds experts.4", r.output)
    assert not (tmp_path / "x").exists()


def _stats(run_dir: Path) -> list[dict]:
    return [p["method_stats"] for p in json.loads((run_dir / "results.json").read_text())["per_chunk"]]


def test_stability_kl_is_zero_at_the_teachers_birth_and_resume_keeps_it(tiny_stream, tmp_path):
    full = tmp_path / "full"
    assert runner.invoke(app, ["--quiet", "run", "--stream", str(tiny_stream), "--method", "strlora", "--out",
                               str(full), *FAST]).exit_code == 0
    stats = _stats(full)
    assert stats[0]["stability_kl_first_step"] is None and stats[0]["teacher_born_chunk"] is None
    assert stats[1]["teacher_born_chunk"] == 1
    assert stats[1]["stability_kl_first_step"] == pytest.approx(0.0, abs=1e-9)  # the teacher was just copied
    assert stats[1]["stability_kl_mean"] > 0 and stats[2]["stability_kl_first_step"] > 0
    # stopped after chunk 0 (no teacher saved: the loss was off), resumed: the same run
    part = tmp_path / "part"
    assert runner.invoke(app, ["--quiet", "run", "--stream", str(tiny_stream), "--method", "strlora", "--out",
                               str(part), *FAST, "--max-chunks", "1"]).exit_code == 0
    assert runner.invoke(app, ["--quiet", "run", "--stream", str(tiny_stream), "--method", "strlora", "--out",
                               str(part), *FAST, "--resume"]).exit_code == 0
    assert _stats(part) == stats
    a, b = (json.loads((d / "results.json").read_text()) for d in (full, part))
    assert a["accuracy_matrix"] == b["accuracy_matrix"] and a["method_info"] == b["method_info"]
