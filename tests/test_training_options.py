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
