"""The StrCVIT paper's base-model families — InternVL3.5 (transformers' format), Gemma 3 and
Qwen2.5-VL — through the real runner: every registered method trains on them, generates,
resumes exactly, and the routed ones report their routing (BranchLoRA and CRAM route on the
family's vision features, read at its projector)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from strcvit_bench.cli import app
from strcvit_bench.methods.experts import ExpertMethod
from strcvit_bench.methods.registry import METHODS

from .hf_families import FAMILIES

PAPER_FAMILIES = ("internvl", "gemma3", "qwen2_5_vl")
runner = CliRunner()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper-models")
    return {family: FAMILIES[family](root / family) for family in PAPER_FAMILIES}


def _run(stream, model, method, out, *extra):
    # CRAM opens an expert for a pseudo-task only from 8 rows on; these chunks have fewer per task
    opts = ["--opt", "min_rows=2"] if method == "cram" else []
    return runner.invoke(app, ["--quiet", "run", "--stream", str(stream), "--model", str(model), "--method", method,
                               "--eval-limit", "2", "--batch-size", "8", "--out", str(out), *opts, *extra])


@pytest.mark.parametrize("method", METHODS.names())
@pytest.mark.parametrize("family", PAPER_FAMILIES)
def test_paper_family_trains_generates_resumes_and_routes(tmp_path, tiny_stream, models, family, method):
    whole = tmp_path / "whole"
    r = _run(tiny_stream, models[family], method, whole, "--max-chunks", "2")
    assert r.exit_code == 0, r.output
    part = tmp_path / "part"
    assert _run(tiny_stream, models[family], method, part, "--max-chunks", "1").exit_code == 0
    r = _run(tiny_stream, models[family], method, part, "--max-chunks", "2", "--resume")
    assert r.exit_code == 0, r.output
    a, b = (json.loads((d / "results.json").read_text()) for d in (whole, part))
    assert a["model_info"]["model_type"] == family and a["completed_chunks"] == 2
    assert a["accuracy_matrix"] == b["accuracy_matrix"]
    assert [c["train_loss"] for c in a["per_chunk"]] == [c["train_loss"] for c in b["per_chunk"]]
    predictions = sorted((whole / "predictions" / "chunk_001").glob("*.jsonl"))
    assert predictions and all(p.read_text() == (part / p.relative_to(whole)).read_text() for p in predictions)
    routed = issubclass(METHODS.get(method), ExpertMethod)
    assert (whole / "routing.json").is_file() == routed
    if routed:
        points = json.loads((whole / "routing.json").read_text())["points"]
        weights = [v["mean_weight"] for v in points["chunk_001"].values()]
        assert weights and all(abs(sum(w) - 1) < 1e-3 for w in weights)
