"""Data parallelism: the step's gradient does not depend on how the batch is split, and a
2-process run (accelerate launch, gloo on CPU) of every method equals a 1-process run with the
same global batch."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from strcvit_bench.cli import app
from strcvit_bench.training.launch import free_port

sys.path.insert(0, str(Path(__file__).parent))
from distributed_runs import SETTINGS  # noqa: E402

METHODS = ["lora", "replay", "ewc", "moelora", "smolora", "strlora", "branchlora", "cram"]


@pytest.fixture(autouse=True)
def _model_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("STRCVIT_CACHE", str(tmp_path_factory.getbasetemp() / "model-cache"))


class Recorder(torch.optim.Optimizer):
    """Stands in for AdamW: keeps each step's gradients, changes nothing."""

    steps: list[list[torch.Tensor]] = []

    def __init__(self, params, lr=0.0, weight_decay=0.0):
        super().__init__(params, {"lr": lr})

    def step(self, closure=None):
        Recorder.steps.append([None if p.grad is None else p.grad.clone()
                               for g in self.param_groups for p in g["params"]])


def test_an_accumulated_step_has_the_gradient_of_the_whole_step(tiny_stream, monkeypatch):
    """Micro-batches of unequal answer lengths, weighted by their share of the step's tokens,
    give exactly the one-piece gradient; a plain mean of micro-batch means would not."""
    from strcvit_bench.streams.stream import open_stream
    from strcvit_bench.training import setup, trainer
    from strcvit_bench.training.config import RunConfig

    stream = open_stream(tiny_stream)
    rows = stream.read_chunk(1).to_pylist()[:7]
    for k in (0, 3):  # answers of unequal length (the generators' are mostly one word)
        rows[k]["answer"] += " red circle"
    grads = {}
    for accum in (1, 3):
        cfg = RunConfig(stream=str(tiny_stream), method="lora", grad_accum=accum, batch_size=7, pretrain_samples=1024)
        bundle, method, params = setup.build(cfg, stream)  # may pre-train the base: with the real AdamW
        Recorder.steps = []
        with monkeypatch.context() as patch:
            patch.setattr(trainer, "make_optimizer", lambda params, lr, weight_decay: Recorder(params, lr))
            trainer.train_chunk(bundle, method, params, 1, copy.deepcopy(rows), cfg)
        grads[accum] = Recorder.steps
    assert len(grads[1]) == len(grads[3]) == 1
    lengths = {len(r["answer"].split()) for r in rows}
    assert len(lengths) > 1  # answers of different lengths: the weighting matters
    assert sum(g is not None for g in grads[1][0]) > 0
    for one, three in zip(grads[1][0], grads[3][0], strict=True):
        assert (one is None) == (three is None)
        if one is not None:
            assert torch.allclose(one, three, rtol=1e-4, atol=1e-7)


def _launch(stream: Path, out: Path, cache: str, methods: list[str]) -> None:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(free_port()), str(Path(__file__).parent / "distributed_runs.py"), str(stream), str(out), cache, *methods]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]


def test_two_processes_equal_one_for_every_method(tmp_path, tiny_stream):
    """Tolerances: the same decisions (replay buffer, clusters, experts, frozen branches: method_info
    equal), chunk losses within 1e-3 relative, adapter weights within 1e-2 (they are ~0.1-0.5 in
    size; gradient sums in another order and Adam's normalisation leave ~1e-5 to 5e-3), every
    accuracy within one test row (12.5 points on 8 rows; in practice equal)."""
    import os

    from safetensors.torch import load_file

    from strcvit_bench.training.config import RunConfig
    from strcvit_bench.training.runner import run

    for method in METHODS:
        run(RunConfig(stream=str(tiny_stream), method=method, out=str(tmp_path / "one" / method), **SETTINGS))
    _launch(tiny_stream, tmp_path / "two", os.environ["STRCVIT_CACHE"], METHODS)
    for method in METHODS:
        a, b = (json.loads((tmp_path / k / method / "results.json").read_text()) for k in ("one", "two"))
        assert a["env"]["processes"] == 1 and b["env"]["processes"] == 2, method
        assert a["method_info"] == b["method_info"], method
        assert [r["train_samples"] for r in a["per_chunk"]] == [r["train_samples"] for r in b["per_chunk"]]
        for la, lb in zip(a["per_chunk"], b["per_chunk"], strict=True):
            assert lb["train_loss"] == pytest.approx(la["train_loss"], rel=1e-3), method
        for ra, rb in zip(a["accuracy_matrix"], b["accuracy_matrix"], strict=True):
            assert all(abs(x - y) <= 12.5 for x, y in zip(ra, rb, strict=True)), method
        wa, wb = (load_file(str(tmp_path / k / method / "checkpoints" / "chunk_001" / "trainable.safetensors"))
                  for k in ("one", "two"))
        assert wa.keys() == wb.keys()
        assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-2, method
        if (tmp_path / "one" / method / "routing.json").exists():  # routing statistics summed over ranks
            ra_, rb_ = (json.loads((tmp_path / k / method / "routing.json").read_text()) for k in ("one", "two"))
            for point, tasks in ra_["points"].items():
                for task, summary in tasks.items():
                    assert rb_["points"][point][task]["tokens"] == summary["tokens"], (method, point, task)


def test_num_processes_relaunches_under_accelerate(tmp_path, tiny_stream):
    out = tmp_path / "cli"
    r = CliRunner().invoke(app, ["--quiet", "run", "--stream", str(tiny_stream), "--method", "replay", "--out",
                                 str(out), "--pretrain-samples", "1024", "--max-chunks", "1", "--num-processes", "2"])
    assert r.exit_code == 0, r.output
    results = json.loads((out / "results.json").read_text())
    assert results["env"]["processes"] == 2 and results["completed_chunks"] == 1
    assert "replay on tiny" in r.output  # the matrix, printed once, by the parent
    assert len(list((out / "predictions" / "chunk_000").glob("*.jsonl"))) == 3
