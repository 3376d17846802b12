"""The GPU-path options run unchanged on CPU: gradient checkpointing and accumulation reproduce
the plain run; bf16 autocast trains and scores."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from strcvit_bench.cli import app

runner = CliRunner()
BASE = ["--pretrain-samples", "1024", "--batch-size", "8", "--max-chunks", "2", "--eval-batch-size", "32"]


@pytest.fixture(autouse=True)
def _model_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("STRCVIT_CACHE", str(tmp_path_factory.getbasetemp() / "model-cache"))


def _run(stream, out, *flags) -> dict:
    r = runner.invoke(app, ["--quiet", "run", "--stream", str(stream), "--method", "strlora", "--out", str(out),
                            *BASE, *flags])
    assert r.exit_code == 0, r.output
    return json.loads((out / "results.json").read_text())


def test_checkpointing_and_accumulation_reproduce_the_plain_run(tmp_path, tiny_stream):
    plain = _run(tiny_stream, tmp_path / "plain")
    other = _run(tiny_stream, tmp_path / "gc", "--gradient-checkpointing", "--grad-accum", "3")
    for a, b in zip(plain["per_chunk"], other["per_chunk"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)
    assert other["accuracy_matrix"] == plain["accuracy_matrix"]
    assert other["config"]["grad_accum"] == 3 and other["config"]["gradient_checkpointing"] is True


def test_bf16_autocast_trains_and_scores(tmp_path, tiny_stream):
    r = _run(tiny_stream, tmp_path / "bf16", "--precision", "bf16")
    assert r["config"]["precision"] == "bf16" and r["complete"] is False and r["completed_chunks"] == 2
    assert all(math.isfinite(p["train_loss"]) for p in r["per_chunk"])


def test_bad_training_options_exit_2(tmp_path, tiny_stream):
    r = runner.invoke(app, ["run", "--stream", str(tiny_stream), "--out", str(tmp_path / "x"), "--precision", "fp8"])
    assert r.exit_code == 2 and "--precision" in r.output and "Traceback" not in r.output


def test_the_authors_preset_fills_what_is_not_given(tmp_path, tiny_stream):
    """`--preset authors`: the release's settings, under anything given explicitly."""
    r = _run(tiny_stream, tmp_path / "preset", "--preset", "authors", "--precision", "fp32", "--max-chunks", "1",
             "--opt", "alpha=64")
    cfg = r["config"]
    assert (cfg["lr"], cfg["lr_later"], cfg["warmup"], cfg["weight_decay"], cfg["projector_lr"]) == (
        1e-4, 2e-5, 0.05, 0.1, 1e-5)
    assert cfg["batch_size"] == 8 and cfg["precision"] == "fp32"  # given explicitly: kept
    opts = r["method_options"]
    assert (opts["rank"], opts["experts"], opts["dropout"], opts["alpha"]) == (64, 4, 0.05, 64.0)
    bad = runner.invoke(app, ["--quiet", "run", "--stream", str(tiny_stream), "--out", str(tmp_path / "x"),
                              "--preset", "paper"])
    assert bad.exit_code == 2 and "available: authors" in bad.output


def test_the_projector_gets_its_own_learning_rate():
    import torch

    from strcvit_bench.training.trainer import make_optimizer, param_groups

    params = {"model.multi_modal_projector.linear.weight": torch.nn.Parameter(torch.zeros(2)),
              "model.layers.0.q_proj.lora_A": torch.nn.Parameter(torch.zeros(2)),
              "model.layers.0.q_proj.lora_B": torch.nn.Parameter(torch.zeros(2))}
    params["model.layers.0.q_proj.lora_B"].requires_grad_(False)
    projector = r".*multi_modal_projector\..*"
    assert param_groups(params, projector, None) == [params["model.multi_modal_projector.linear.weight"],
                                                     params["model.layers.0.q_proj.lora_A"]]
    opt = make_optimizer(param_groups(params, projector, 1e-5), 1e-4, 0.1)
    assert [(len(g["params"]), g["lr"]) for g in opt.param_groups] == [(1, 1e-4), (1, 1e-5)]
    assert opt.param_groups[1]["params"][0] is params["model.multi_modal_projector.linear.weight"]
