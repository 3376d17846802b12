"""`strcvit import-release` on a miniature of the authors' release: the stream equals the files
record for record, and everything that reads streams reads it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from strcvit_bench.cli import app
from strcvit_bench.streams.stream import open_stream, verify_stream

from .release_miniature import write_release

runner = CliRunner()


@pytest.fixture
def release(tmp_path):
    rel, images = tmp_path / "StrCVIT_dataset", tmp_path / "raw_images"
    expected = write_release(rel, images)
    return rel, images, expected


def _import(tmp_path, rel, images, *extra):
    out = tmp_path / "stream"
    result = runner.invoke(app, ["--quiet", "import-release", str(rel), "--image-root", str(images), "--out", str(out),
                                 *extra])
    return out, result


def test_the_import_equals_the_release_record_for_record(tmp_path, release):
    rel, images, expected = release
    out, result = _import(tmp_path, rel, images)
    assert result.exit_code == 0, result.output
    stream = verify_stream(out)  # fingerprint and content seal hold
    assert stream.num_chunks == 3
    for i, order in enumerate(expected["chunks"]):
        rows = stream.read_chunk(i).to_pylist()
        assert [(r["task"], r["instruction"], r["answer"]) for r in rows] == order  # same records, same order
        assert all(r["chunk"] == i for r in rows)
        counts = {}
        for task, _, _ in order:
            counts[task] = counts.get(task, 0) + 1
        assert stream.manifest["chunks"][i]["counts"] == counts
    assert stream.manifest["chunks"][1]["counts"] == {"vqav2": 4}                  # the single-task chunk
    assert "chartqa" not in stream.manifest["chunks"][2]["counts"]                # a task that vanished
    # images are the files' bytes, not re-encoded
    first = rel / "train" / "data_001.json"
    path = json.loads(first.read_text())[0]["images"][0].replace("<STRCVIT_IMAGE_ROOT>/", "")
    assert stream.read_chunk(0).to_pylist()[0]["image"]["bytes"] == (images / path).read_bytes()
    # test sets: one per task the stream trains on, each with its task's metric; GQA has no chunk
    metrics = {t["name"]: t["metric"] for t in stream.manifest["tasks"]}
    assert metrics == {"chartqa": "relaxed_accuracy", "grounding": "bbox_iou", "textcaps": "cider",
                       "vqav2": "vqa_accuracy"}
    for task, folder in (("vqav2", "VQAv2"), ("grounding", "Grounding"), ("textcaps", "TextCaps")):
        rows = stream.read_test(task).to_pylist()
        records = expected["tests"][folder]
        assert [r["id"] for r in rows] == [f"release/test/{folder}/{rec['question_id']}" for rec in records]
        if task == "grounding":
            assert [r["answers"] for r in rows] == [[rec["answer_bbox"]] for rec in records]
        elif task == "textcaps":
            assert [r["answers"] for r in rows] == [rec["answer"] for rec in records]  # every reference caption
        else:
            assert [r["answers"] for r in rows] == [[rec["answer"]] for rec in records]
    assert stream.manifest["dropped"] == {}


def test_proxy_tests_missing_images_and_strict(tmp_path, release):
    rel, images, _ = release
    out, result = _import(tmp_path, rel, images, "--tests", "test_proxy")
    assert result.exit_code == 0, result.output
    assert all(t["test_size"] == 2 for t in open_stream(out).manifest["tasks"])
    victim = json.loads((rel / "train" / "data_002.json").read_text())[0]["images"][0]
    (images / victim.replace("<STRCVIT_IMAGE_ROOT>/", "")).unlink()
    out2, result = _import(tmp_path / "b", rel, images)
    assert result.exit_code == 0, result.output
    stream = open_stream(out2)
    assert stream.manifest["dropped"] == {"vqav2": {"missing_image": 1}}
    assert stream.manifest["chunks"][1]["counts"] == {"vqav2": 3}
    _, strict = _import(tmp_path / "c", rel, images, "--strict")
    assert strict.exit_code == 2 and "missing image" in strict.output


def test_unmatched_images_and_custom_rules(tmp_path, release):
    rel, images, _ = release
    data = json.loads((rel / "train" / "data_003.json").read_text())
    data[0]["images"] = ["<STRCVIT_IMAGE_ROOT>/Elsewhere/x.png"]
    (rel / "train" / "data_003.json").write_text(json.dumps(data))
    _, result = _import(tmp_path, rel, images)
    assert result.exit_code == 2
    assert "Elsewhere/x.png" in result.output and "--task-rules" in result.output
    assert "COCO2014/val2014/" in result.output  # the rules it tried
    rules = tmp_path / "rules.yaml"
    rules.write_text("- {prefix: '', task: anything, family: other, metric: exact_match, test_dir: VQAv2}\n")
    (images / "Elsewhere").mkdir()
    (images / "Elsewhere" / "x.png").write_bytes((next((images / "Textcaps").glob("*.png"))).read_bytes())
    out, result = _import(tmp_path / "r", rel, images, "--task-rules", str(rules))
    assert result.exit_code == 0, result.output
    assert [t["name"] for t in open_stream(out).manifest["tasks"]] == ["anything"]
    rules.write_text("- {prefix: '', task: x, family: nope, metric: exact_match, test_dir: VQAv2}\n")
    _, bad = _import(tmp_path / "s", rel, images, "--task-rules", str(rules))
    assert bad.exit_code == 2 and "family 'nope'" in bad.output


def test_an_imported_stream_runs_and_scores_with_the_authors_rules(tmp_path, release, monkeypatch):
    rel, images, _ = release
    out, result = _import(tmp_path, rel, images)
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("STRCVIT_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    r = runner.invoke(app, ["--quiet", "run", "--stream", str(out), "--method", "lora", "--out", str(run_dir),
                            "--pretrain-samples", "64", "--batch-size", "4", "--scoring", "authors",
                            "--max-chunks", "1"])
    assert r.exit_code == 0, r.output
    results = json.loads((run_dir / "results.json").read_text())
    assert {t["name"]: t["metric"] for t in results["tasks"]} == {
        "chartqa": "authors.chartqa", "grounding": "authors.grounding", "textcaps": "cider", "vqav2": "authors.vqav2"}
    assert results["config"]["scoring"] == "authors"
