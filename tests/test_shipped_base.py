"""The tiny base the package ships for the demo: that runs start from it, that it is the base the
committed leaderboard's runs started from, that `strcvit demo-base` tells whether pre-training
here makes the same bits, and that a run is never resumed onto other base weights."""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from strcvit_bench import demo
from strcvit_bench.cli import app
from strcvit_bench.models import tiny
from strcvit_bench.streams.stream import verify_stream
from strcvit_bench.training.setup import stream_texts

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
SMALL = functools.partial(tiny.PretrainRecipe, samples=16, batch_size=16)


def _nudge(model_dir: Path) -> None:
    """Other base weights, as another CPU's pre-training would give (a few ulps apart)."""
    tensors = load_file(model_dir / "model.safetensors")
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-6
    save_file(tensors, model_dir / "model.safetensors", metadata={"format": "pt"})


def test_the_demo_starts_from_the_shipped_base_of_the_committed_leaderboard(tmp_path):
    stream = demo.build_demo_stream(tmp_path, None, None, False, lambda _: contextlib.nullcontext())
    bundle = tiny.load_tiny(stream_texts(verify_stream(stream)), cache=tmp_path / "empty-cache")
    assert bundle.info["base"] == "shipped" and bundle.info["cached"] is True
    assert not (tmp_path / "empty-cache").exists()  # nothing pre-trained, nothing cached
    assert Path(bundle.info["cache"]).parent == tiny.SHIPPED
    assert bundle.info["weights_sha256"] == tiny.weights_sha256(Path(bundle.info["cache"]))
    # the committed runs recorded their base's pre-training: the shipped base is that one
    committed = sorted((ROOT / "leaderboard" / "runs").glob("demo__*/tiny/*/results.json"))
    assert committed
    losses = {json.loads(p.read_text())["model_info"]["pretrain_stats"]["final_loss"] for p in committed}
    assert losses == {bundle.info["pretrain_stats"]["final_loss"]}


def test_a_shipped_base_is_preferred_and_can_be_declined(tmp_path, monkeypatch):
    monkeypatch.setattr(tiny, "SHIPPED", tmp_path / "bases")
    made = tiny.load_tiny(["hello world"], recipe=SMALL(), cache=tmp_path / "a", shipped=False)
    assert made.info["base"] == "pre-trained"
    shipped = tiny.SHIPPED / f"tiny-{made.info['base_key']}"
    shutil.copytree(made.info["cache"], shipped)
    _nudge(shipped)  # so the test can tell which weights were loaded
    used = tiny.load_tiny(["hello world"], recipe=SMALL(), cache=tmp_path / "b")
    assert used.info["base"] == "shipped" and not (tmp_path / "b").exists()
    assert used.info["weights_sha256"] == tiny.weights_sha256(shipped) != made.info["weights_sha256"]
    gaps = [float((a - b).abs().max()) for a, b in zip(used.model.state_dict().values(),
                                                       made.model.state_dict().values(), strict=True)]
    assert 0 < max(gaps) < 1e-5  # the nudged weights, not the pre-trained ones
    declined = tiny.load_tiny(["hello world"], recipe=SMALL(), cache=tmp_path / "b", shipped=False)
    assert declined.info["base"] == "pre-trained" and declined.info["weights_sha256"] == made.info["weights_sha256"]
    other = tiny.load_tiny(["other words"], recipe=SMALL(), cache=tmp_path / "b")  # another vocabulary: no shipped base
    assert other.info["base"] == "pre-trained"


def test_demo_base_compares_writes_and_reports_a_difference(tmp_path, monkeypatch):
    monkeypatch.setattr(tiny, "SHIPPED", tmp_path / "bases")
    monkeypatch.setattr(tiny, "PretrainRecipe", SMALL)
    none = runner.invoke(app, ["--quiet", "demo-base"])
    assert none.exit_code == 1 and "ships no base" in none.output
    wrote = runner.invoke(app, ["--quiet", "demo-base", "--write"])
    assert wrote.exit_code == 0, wrote.output
    [shipped] = tiny.SHIPPED.glob("tiny-*")
    assert (shipped / "model.safetensors").is_file() and (shipped / "tokenizer.json").is_file()
    same = runner.invoke(app, ["--quiet", "demo-base"])
    assert same.exit_code == 0 and "equal, bit for bit" in same.output, same.output
    _nudge(shipped)
    differs = runner.invoke(app, ["--quiet", "demo-base"])
    assert differs.exit_code == 1 and "differs from the shipped base" in differs.output
    assert "largest |difference| 1e-06" in differs.output.replace("\n", " ")


@pytest.mark.usefixtures("tiny_stream")
def test_a_run_is_not_resumed_onto_other_base_weights(tmp_path, tiny_stream, monkeypatch):
    monkeypatch.setenv("STRCVIT_CACHE", str(tmp_path / "cache"))
    args = ["--quiet", "run", "--stream", str(tiny_stream), "--method", "lora", "--out", str(tmp_path / "r"),
            "--pretrain-samples", "64", "--max-chunks", "1"]
    assert runner.invoke(app, args).exit_code == 0
    # where the base is looked up is not a resume setting: the same weights resume (what guards it is their hash)
    same = runner.invoke(app, [*args, "--no-shipped-base", "--resume"])
    assert same.exit_code == 0, same.output
    [base] = (tmp_path / "cache" / "models").glob("tiny-*")
    _nudge(base)  # the cache pre-trained again elsewhere, or a shipped base that replaced it
    resumed = runner.invoke(app, [*args[:-2], "--resume"])
    assert resumed.exit_code == 2 and "other base weights" in resumed.output, resumed.output
