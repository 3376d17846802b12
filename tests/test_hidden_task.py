"""What reaches a method: no task, no source, and at evaluation no answers."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from strcvit_bench.baselines.joint import Joint
from strcvit_bench.cli import app
from strcvit_bench.methods import registry
from strcvit_bench.methods.base import Method
from strcvit_bench.streams.stream import open_stream

runner = CliRunner()
FAST = ["--pretrain-samples", "1024", "--lr", "0.02", "--batch-size", "8", "--eval-batch-size", "32"]
OPAQUE = re.compile(r"[0-9a-f]{16}")


@pytest.fixture(autouse=True)
def _model_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("STRCVIT_CACHE", str(tmp_path_factory.getbasetemp() / "model-cache"))


class Spy(Method):
    name = "spy"
    description = "LoRA that records every row its hooks are handed"
    seen: list[tuple[str, dict]] = []

    def before_chunk(self, index, rows):
        Spy.seen += [("chunk", r) for r in rows]

    def before_forward(self, batch, rows):
        Spy.seen += [("train" if self.model.training else "eval", r) for r in rows]

    def after_chunk(self, index, rows):
        Spy.seen += [("chunk", r) for r in rows]


@pytest.fixture
def spy_registered():
    registry.METHODS.register("spy", Spy)
    yield
    registry.METHODS.unregister("spy")


def test_hooks_never_see_task_source_or_evaluation_answers(tiny_stream, tmp_path, spy_registered):
    Spy.seen = []
    r = runner.invoke(app, ["--quiet", "run", "--stream", str(tiny_stream), "--method", "spy", "--out",
                            str(tmp_path / "spy"), *FAST])
    assert r.exit_code == 0, r.output
    stream = open_stream(tiny_stream)
    names = set(stream.task_names)
    evaluated = [row for kind, row in Spy.seen if kind == "eval"]
    trained = [row for kind, row in Spy.seen if kind != "eval"]
    assert evaluated and trained
    for row in evaluated:
        assert set(row) == {"id", "image", "instruction"}  # what a deployed model is given
    for row in Spy.seen:
        assert "task" not in row[1]
        assert OPAQUE.fullmatch(row[1]["id"]), row[1]["id"]  # no <source>/<split>/... id
        assert not any(isinstance(v, str) and v in names for v in row[1].values())
    # the predictions still name the rows by the stream's ids, for re-scoring
    pred = (tmp_path / "spy" / "predictions" / "chunk_000").glob("*.jsonl")
    first = json.loads(next(iter(pred)).read_text().splitlines()[0])
    assert "/" in first["id"] and first["references"]


def test_joint_trains_equal_slices_of_one_shuffle_of_the_whole_stream(tiny_stream):
    from strcvit_bench.methods.base import MethodContext
    from strcvit_bench.training.rows import RowStore

    stream = open_stream(tiny_stream)
    store = RowStore(stream, hide_task=True)
    ctx = MethodContext(bundle=None, seed=3, num_chunks=stream.num_chunks, chunk_size=24,  # type: ignore[arg-type]
                        task_ids_visible=False, lookup_rows=store.lookup,
                        chunk_ids=store.chunk_ids)
    joint = Joint.__new__(Joint)
    joint.options, joint.ctx = Joint.Options(), ctx
    import random

    slices = []
    for i in range(stream.num_chunks):
        rows = store.chunk(i)
        batches = list(joint.batches(i, rows, 5, random.Random(0)))
        assert [len(b) for b in batches] == [5] * (len(rows) // 5) + ([len(rows) % 5] if len(rows) % 5 else [])
        slices.append([r["id"] for b in batches for r in b])
    stream_ids = [i for c in store.chunk_ids() for i in c]
    flat = [i for s in slices for i in s]
    assert sorted(flat) == sorted(stream_ids) and len(set(flat)) == len(flat)  # every row once
    assert flat != stream_ids  # shuffled across chunk boundaries: later chunks' rows come early
    assert set(slices[0]) - set(store.chunk_ids()[0])
    again = Joint.__new__(Joint)
    again.options, again.ctx = Joint.Options(), ctx
    assert again.slice_ids(1, len(slices[1])) == slices[1]  # seeded: a resumed run sees the same slices


def test_joint_runs_end_to_end(tiny_stream, tmp_path):
    r = runner.invoke(app, ["--quiet", "run", "--stream", str(tiny_stream), "--method", "joint", "--out",
                            str(tmp_path / "joint"), *FAST])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "joint" / "results.json").read_text())
    assert res["complete"] and res["method"] == "joint"
    lo, hi = res["uncertainty"]["metrics_ci95"]["final_average_accuracy"]
    assert lo <= res["metrics"]["final_average_accuracy"] <= hi
    assert len(res["item_scores"]["chunks"]) == 3 and len(res["item_scores"]["chunks"][0][0]) == 8
