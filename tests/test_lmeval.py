"""lm-eval integration: our tasks and our checkpoints through lm-eval's own evaluator, and
agreement with the runner's in-loop scores for the same checkpoint and test set."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from strcvit_bench.cli import app

lm_eval = pytest.importorskip("lm_eval")
runner = CliRunner()
FAST = ["--pretrain-samples", "1024", "--lr", "0.02", "--batch-size", "8", "--epochs-per-chunk", "4"]


@pytest.fixture(autouse=True)
def _model_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("STRCVIT_CACHE", str(tmp_path_factory.getbasetemp() / "model-cache"))


def test_lm_eval_scores_equal_the_runners(tmp_path, tiny_stream):
    run_dir = tmp_path / "run"
    r = runner.invoke(app, ["--quiet", "run", "--stream", str(tiny_stream), "--method", "strlora", "--out",
                            str(run_dir), "--max-chunks", "2", *FAST])
    assert r.exit_code == 0, r.output
    tasks_dir = tmp_path / "tasks"
    r = runner.invoke(app, ["export-lm-eval", str(tiny_stream), "--out", str(tasks_dir), "--per-chunk"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tasks_dir.glob("*.yaml")) == [
        "tiny_aerial.yaml", "tiny_chunk_000.yaml", "tiny_chunk_001.yaml", "tiny_chunk_002.yaml", "tiny_shapes.yaml",
        "tiny_text.yaml"]
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from strcvit_bench.share.lmeval import strcvit_lm

    model = strcvit_lm()(run=str(run_dir), chunk=1)
    out = simple_evaluate(model=model, tasks=["tiny"], log_samples=True,
                          task_manager=TaskManager(include_path=str(tasks_dir), include_defaults=False))
    results = json.loads((run_dir / "results.json").read_text())
    in_loop = dict(zip([t["name"] for t in results["tasks"]], results["accuracy_matrix"][1], strict=True))
    answers = []
    for task, score in in_loop.items():
        assert out["results"][f"tiny_{task}"]["score,none"] * 100 == pytest.approx(score, abs=1e-9)
        # the same answer to every item, not only the same mean: the comparison is not 0 == 0
        lines = (run_dir / "predictions" / "chunk_001" / f"{task}.jsonl").read_text().splitlines()
        theirs = [s["filtered_resps"][0] for s in sorted(out["samples"][f"tiny_{task}"], key=lambda s: s["doc_id"])]
        ours = [json.loads(line)["prediction"] for line in lines]
        assert theirs == ours
        answers += ours
    assert any(a.strip() for a in answers)
    chunk = simple_evaluate(model=model, tasks=["tiny_chunk_000"], limit=6,
                            task_manager=TaskManager(include_path=str(tasks_dir), include_defaults=False))
    assert 0.0 <= chunk["results"]["tiny_chunk_000"]["score,none"] <= 1.0


def test_a_corpus_metric_is_exported_with_an_aggregation_over_all_items(tmp_path, tiny_spec_data):
    """CIDEr-D needs every prediction of the task at once: the exported task keeps each item's
    prediction and scores them together, exactly as the runner does."""
    import importlib.util

    from strcvit_bench.evaluation.corpus import cider_d
    from strcvit_bench.streams.builder import build_stream
    from strcvit_bench.streams.spec import parse_spec

    tiny_spec_data["tasks"][0]["metric"] = "cider"
    stream = tmp_path / "stream"
    build_stream(parse_spec(tiny_spec_data), stream)
    tasks_dir = tmp_path / "tasks"
    r = runner.invoke(app, ["export-lm-eval", str(stream), "--out", str(tasks_dir), "--per-chunk"])
    assert r.exit_code == 0, r.output
    assert "aggregation: !function utils.aggregate\n" in (tasks_dir / "tiny_shapes.yaml").read_text()
    assert "aggregation: mean\n" in (tasks_dir / "tiny_text.yaml").read_text()
    assert "process_results: !function utils.process_cider\n" in (tasks_dir / "tiny_shapes.yaml").read_text()
    spec = importlib.util.spec_from_file_location("exported_utils", tasks_dir / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    docs = [{"task": "shapes", "answers": [a]} for a in ("a b c d", "e f g h", "a b x y")]
    preds = ["a b c d", "e f", "a b x y"]
    items = [utils.process_cider(d, [p])["score"] for d, p in zip(docs, preds, strict=True)]
    assert utils.aggregate(items) == pytest.approx(sum(cider_d(preds, [d["answers"] for d in docs])) / 3)
    # in a chunk task, a corpus metric is computed over its own task's items only
    mixed = items + [utils.process_by_task({"task": "text", "answers": ["x"]}, ["x"])["score"]]
    assert utils.aggregate(mixed) == pytest.approx((sum(cider_d(preds, [d["answers"] for d in docs])) + 1.0) / 4)
