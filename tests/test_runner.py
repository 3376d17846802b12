"""The continual runner end to end through the CLI, on a tiny stream and a barely pre-trained tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from strcvit_bench.cli import app
from strcvit_bench.methods.registry import METHODS

runner = CliRunner()
FAST = ["--pretrain-samples", "1024", "--lr", "0.02", "--batch-size", "8", "--eval-batch-size", "32",
        "--epochs-per-chunk", "2"]


@pytest.fixture(autouse=True)
def _model_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("STRCVIT_CACHE", str(tmp_path_factory.getbasetemp() / "model-cache"))


def _run(tiny_stream: Path, out: Path, method: str, *extra: str):
    result = runner.invoke(app, ["--quiet", "run", "--stream", str(tiny_stream), "--method", method,
                                 "--out", str(out), *FAST, *extra])
    return result


def _answer_loss(run_dir: Path, chunk: int | None) -> float:
    """Mean answer NLL on the last chunk's rows of the run's model after `chunk` (None: untrained),
    reloaded through the public checkpoint path and routed as deployed (no task labels)."""
    import torch

    from strcvit_bench.streams.stream import open_stream
    from strcvit_bench.training import setup
    from strcvit_bench.training.config import RunConfig

    cfg = RunConfig.model_validate(json.loads((run_dir / "run_config.json").read_text()))
    stream = open_stream(cfg.stream)
    bundle, method, params = setup.build(cfg, stream)
    if chunk is not None:
        setup.restore(run_dir, chunk, method, params)
    rows = [{k: v for k, v in r.items() if k != "task"} for r in stream.read_chunk(stream.num_chunks - 1).to_pylist()]
    bundle.model.eval()
    with torch.no_grad():
        return float(method.batch_loss(rows))


def _predictions(run_dir: Path, tag: str) -> dict[str, list[str]]:
    return {p.stem: [json.loads(line)["prediction"] for line in p.read_text().splitlines()]
            for p in sorted((run_dir / "predictions" / tag).glob("*.jsonl"))}


@pytest.mark.parametrize("method", METHODS.names())  # every registered method
def test_run_end_to_end(tmp_path, tiny_stream, method):
    out = tmp_path / method
    result = _run(tiny_stream, out, method)
    assert result.exit_code == 0, result.output
    r = json.loads((out / "results.json").read_text())
    assert r["schema_version"] == 1 and r["method"] == method and r["complete"] is True
    assert r["stream"]["fingerprint"] == json.loads((tiny_stream / "manifest.json").read_text())["fingerprint"]
    assert [t["name"] for t in r["tasks"]] == ["shapes", "text", "aerial"]
    assert [t["first_seen"] for t in r["tasks"]] == [0, 1, 2]
    assert len(r["accuracy_matrix"]) == 3 and all(len(row) == 3 for row in r["accuracy_matrix"])
    assert all(0 <= v <= 100 for row in r["accuracy_matrix"] for v in row)
    assert len(r["base_scores"]) == 3
    for key in ("final_average_accuracy", "mean_average_accuracy", "bwt", "forgetting", "plasticity", "fwt"):
        assert key in r["metrics"]
    assert r["trainable_params"] > 0 and len(r["per_chunk"]) == 3
    # per-item scores behind every cell, and a seeded bootstrap interval around every number
    items = r["item_scores"]["chunks"]
    cells = [100 * sum(t) / len(t) for row in items for t in row]
    assert cells == pytest.approx([v for row in r["accuracy_matrix"] for v in row])
    for key, value in r["metrics"].items():
        ci = r["uncertainty"]["metrics_ci95"][key]
        assert value is None or ci[0] - 1e-9 <= value <= ci[1] + 1e-9, key
    assert r["uncertainty"]["test_items"] == [8, 8, 8] and len(r["uncertainty"]["accuracy_matrix_ci95"]) == 3
    assert {"train_loss", "train_seconds", "eval_seconds", "peak_rss_mib", "trainable_params",
            "adapter_params"} <= set(r["per_chunk"][0])
    curve = [p["adapter_params"] for p in r["per_chunk"]]
    assert curve[-1] == r["trainable_params"]
    if method == "cram":  # grows with every expert it adds, and adds one in the first chunk
        assert curve == sorted(curve) and r["method_info"]["experts"] >= 1
        assert curve[0] > r["per_chunk"][0]["trainable_params"]
    elif method == "branchlora":  # a router per cluster; frozen branches leave fewer to train
        assert r["method_info"]["routers"] >= 1
        assert r["per_chunk"][1]["trainable_params"] < curve[1]
    else:
        assert len(set(curve)) == 1 and curve[0] == r["per_chunk"][0]["trainable_params"]
    assert r["env"]["versions"]["torch"] and r["seed"] == 0 and r["config"]["method"] == method
    for t in range(3):
        assert (out / "checkpoints" / f"chunk_{t:03d}" / "trainable.safetensors").is_file()
    # training changed what the model answers, and lowered the loss of the answers it trained on
    # (exact-match scores on 8 test rows after 6 steps per chunk are noise; the loss is not)
    base, last = _predictions(out, "base"), _predictions(out, "chunk_002")
    assert base != last
    assert _answer_loss(out, 2) < _answer_loss(out, None)
    # every prediction can be re-scored offline from the files
    from strcvit_bench.evaluation.scoring import get_metric

    rec = json.loads((out / "predictions" / "chunk_002" / "shapes.jsonl").read_text().splitlines()[0])
    assert get_metric("vqa_accuracy")(rec["prediction"], rec["references"]) == rec["score"]
    if method == "replay":
        assert r["method_info"]["buffer_filled"] > 0
        assert json.loads((out / "checkpoints" / "chunk_002" / "method.json").read_text())["items"]
    routing_file = out / "routing.json"
    from strcvit_bench.methods.experts import ExpertMethod

    assert routing_file.exists() == issubclass(METHODS.get(method), ExpertMethod)  # routed methods report it
    if routing_file.exists():
        routing = json.loads(routing_file.read_text())
        trained = {"chunk_000", "chunk_001", "chunk_002"}
        # CRAM has no expert before it has trained on a chunk, so nothing to route at "base"
        assert set(routing["points"]) == (trained if method == "cram" else trained | {"base"})
        per_task = routing["points"]["chunk_002"]
        assert set(per_task) == {"shapes", "text", "aerial"}
        assert all(abs(sum(v["mean_weight"]) - 1) < 1e-3 for v in per_task.values())
        assert all(len(v["per_layer_mean_weight"]) == 14 for v in per_task.values())  # 2 layers x 7 linears
        if method == "strlora":
            assert all(abs(sum(v["selection_frequency"]) - 2) < 1e-4 for v in per_task.values())
        shown = runner.invoke(app, ["inspect-run", str(out), "--plot", str(tmp_path / "r.png")])
        assert shown.exit_code == 0, shown.output
        assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def _comparable(r: dict) -> dict:
    return {k: r[k] for k in ("accuracy_matrix", "base_scores", "metrics", "trainable_params", "method_info")} | {
        "losses": [p["train_loss"] for p in r["per_chunk"]], "params": [p["adapter_params"] for p in r["per_chunk"]],
        "method_stats": [p["method_stats"] for p in r["per_chunk"]], "items": r["item_scores"]["chunks"],
        "uncertainty": r["uncertainty"]}


@pytest.mark.parametrize("method", ["replay", "ewc", "strlora", "branchlora", "cram"])
def test_resume_after_an_interruption_gives_the_same_results(tmp_path, tiny_stream, method, monkeypatch):
    full = tmp_path / "full"
    assert _run(tiny_stream, full, method).exit_code == 0
    # stop after chunk 1 (a clean interruption) ...
    part = tmp_path / "part"
    assert _run(tiny_stream, part, method, "--max-chunks", "2").exit_code == 0
    assert json.loads((part / "results.json").read_text())["complete"] is False
    # ... and crash in the middle of chunk 2's training
    from strcvit_bench.training import runner as runner_mod

    real = runner_mod.train_chunk

    def crash(bundle, method_obj, params, index, rows, config, parallel=None):
        """Chunk 2 dies after two optimiser steps: its parameters are half-updated in memory."""
        if index == 2:
            steps = {"n": 0}
            real_after = method_obj.after_step

            def after_step():
                real_after()
                steps["n"] += 1
                if steps["n"] == 2:
                    raise RuntimeError("simulated crash")

            method_obj.after_step = after_step
        return real(bundle, method_obj, params, index, rows, config, parallel)

    monkeypatch.setattr(runner_mod, "train_chunk", crash)
    crashed = _run(tiny_stream, part, method, "--resume")
    assert isinstance(crashed.exception, RuntimeError) and str(crashed.exception) == "simulated crash"
    monkeypatch.setattr(runner_mod, "train_chunk", real)
    resumed = _run(tiny_stream, part, method, "--resume")
    assert resumed.exit_code == 0, resumed.output
    a = json.loads((full / "results.json").read_text())
    b = json.loads((part / "results.json").read_text())
    assert _comparable(a) == _comparable(b)
    assert _predictions(full, "chunk_002") == _predictions(part, "chunk_002")


def test_a_cold_and_a_warm_model_cache_give_the_same_run(tmp_path, tiny_stream, monkeypatch):
    """The first run pre-trains the tiny base in-process, the second reads it from the cache:
    nothing the method draws at random may depend on which happened."""
    monkeypatch.setenv("STRCVIT_CACHE", str(tmp_path / "fresh-cache"))
    cold, warm = tmp_path / "cold", tmp_path / "warm"
    assert _run(tiny_stream, cold, "lora", "--max-chunks", "1").exit_code == 0
    assert _run(tiny_stream, warm, "lora", "--max-chunks", "1").exit_code == 0
    a, b = (json.loads((d / "results.json").read_text()) for d in (cold, warm))
    assert a["model_info"]["cached"] is False and b["model_info"]["cached"] is True
    assert _comparable(a) == _comparable(b)


def test_run_refuses_to_overwrite_and_checks_resume_settings(tmp_path, tiny_stream):
    out = tmp_path / "r"
    assert _run(tiny_stream, out, "lora", "--max-chunks", "1").exit_code == 0
    again = _run(tiny_stream, out, "lora")
    assert again.exit_code == 2 and "--resume" in again.output
    other = _run(tiny_stream, out, "lora", "--resume", "--seed", "5")
    assert other.exit_code == 2 and "seed" in other.output


def test_bad_inputs_exit_2(tmp_path, tiny_stream):
    r = runner.invoke(app, ["run", "--stream", str(tmp_path), "--method", "lora"])
    assert r.exit_code == 2 and "not a built stream" in r.output
    r = runner.invoke(app, ["run", "--stream", str(tiny_stream), "--method", "sgd"])
    assert r.exit_code == 2 and "unknown method 'sgd'" in r.output
    r = runner.invoke(app, ["run", "--stream", str(tiny_stream), "--method", "replay", "--opt", "size=3"])
    assert r.exit_code == 2 and "unknown option" in r.output
    r = runner.invoke(app, ["run", "--stream", str(tiny_stream), "--model", str(tmp_path / "no-model"),
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "could not be loaded" in r.output
    assert "Traceback" not in r.output
    # a run that could not start leaves nothing behind: the corrected command just works
    assert not (tmp_path / "o").exists()
    assert _run(tiny_stream, tmp_path / "o", "lora", "--max-chunks", "1").exit_code == 0


def test_methods_command_lists_methods_and_options():
    r = runner.invoke(app, ["methods"])
    assert r.exit_code == 0
    for text in ("lora", "replay", "ewc", "moelora", "smolora", "strlora", "branchlora", "cram", "buffer_size",
                 "replay_ratio", "lam", "gamma", "top_k", "if_encoder", "stability_weight", "ema_momentum",
                 "key_threshold", "freeze_top_k", "tau", "ortho_weight"):
        assert text in r.output


def test_strlora_ablation_switches(tmp_path, tiny_stream):
    out = tmp_path / "abl"
    r = _run(tiny_stream, out, "strlora", "--opt", "task_select=false", "--opt", "stability=false",
             "--max-chunks", "1")
    assert r.exit_code == 0, r.output
    opts = json.loads((out / "results.json").read_text())["method_options"]
    assert opts["task_select"] is False and opts["stability"] is False and opts["token_weights"] is True
    bad = _run(tiny_stream, tmp_path / "x", "lora", "--opt", "task_select=false")
    assert bad.exit_code == 2 and "task_select: unknown option" in bad.output


def test_out_of_memory_is_a_clear_error(tmp_path, tiny_stream, monkeypatch):
    import torch

    from strcvit_bench.adapters.lora import LoRALinear

    real = LoRALinear.forward

    def oom_when_training(self, x):
        if self.training:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, x)

    monkeypatch.setattr(LoRALinear, "forward", oom_when_training)
    r = _run(tiny_stream, tmp_path / "oom", "lora")
    assert r.exit_code == 2 and "lower --batch-size" in r.output and "Traceback" not in r.output
