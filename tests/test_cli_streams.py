"""The stream commands through the CLI, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from strcvit_bench.cli import app
from strcvit_bench.demo import demo_methods

from .conftest import write_spec
from .test_builder import check_invariants

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in ("build-stream", "inspect", "demo"):
        assert cmd in result.output


def test_build_stream_overrides_and_refuses_existing(tmp_path, tiny_spec_data):
    tiny_spec_data["num_chunks"] = 5
    spec = write_spec(tmp_path / "tiny.yaml", tiny_spec_data)
    out = tmp_path / "out"
    args = ["--quiet", "build-stream", str(spec), "--out", str(out), "--seed", "3", "--num-chunks", "3",
            "--chunk-size", "10"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    m = json.loads((out / "manifest.json").read_text())
    assert (m["seed"], m["num_chunks"], m["chunk_size"]) == (3, 3, 10)
    assert m["fingerprint"] in result.output
    check_invariants(out)
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0


def test_inspect_prints_composition_and_writes_plot(tmp_path, tiny_stream):
    plot = tmp_path / "comp.png"
    result = runner.invoke(app, ["inspect", str(tiny_stream), "--plot", str(plot), "--verify"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "shapes" in said and "aerial" in said and "verified against the seal" in said
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 2000


def test_inspect_on_a_non_stream(tmp_path):
    result = runner.invoke(app, ["inspect", str(tmp_path)])
    assert result.exit_code == 2 and "not a built stream" in result.output


def test_shipped_specs_are_valid():
    from strcvit_bench.streams.schedule import chunk_counts
    from strcvit_bench.streams.spec import load_spec

    specs = sorted((ROOT / "stream_specs").glob("*.yaml"))
    assert {p.stem for p in specs} >= {"demo", "strcvit"}
    for p in specs:
        spec = load_spec(p)
        counts = chunk_counts(spec)
        assert len(counts) == spec.num_chunks and all(sum(c.values()) == spec.chunk_size for c in counts)


def test_strcvit_spec_reproduces_the_papers_composition():
    """docs/streams.md: the authors' per-chunk table, SA split evenly over its five tasks."""
    from strcvit_bench.streams.schedule import chunk_counts
    from strcvit_bench.streams.spec import load_spec

    spec = load_spec(ROOT / "stream_specs" / "strcvit.yaml")
    counts = chunk_counts(spec)
    assert (spec.num_chunks, spec.chunk_size, len(spec.tasks)) == (25, 2000, 11)
    sa = ("driving", "vqav2", "gqa", "ocrvqa", "rsvqa")
    row = lambda t, names: sum(counts[t].get(n, 0) for n in names)  # noqa: E731
    assert row(0, sa) == 1186 and counts[0]["chartqa"] == 210 and counts[0]["textcaps"] == 182
    assert counts[12] == {n: 400 for n in sa}
    assert counts[21] == {"textcaps": 2000}
    assert all("places365" not in c for c in counts[11:])


def test_small_demo_runs_every_method_and_writes_the_leaderboard(tmp_path, monkeypatch):
    """The demo's whole path on a shrunk demo stream (the full demo: `pytest -m slow`)."""
    monkeypatch.setenv("STRCVIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--num-chunks", "2", "--chunk-size", "16", "--pretrain-samples", "32",
            "--eval-limit", "4"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    check_invariants(out / "stream")
    md = (out / "leaderboard" / "leaderboard.md").read_text()
    for method in demo_methods():
        assert json.loads((out / "runs" / f"{method}-s0" / "results.json").read_text())["complete"]
    for method in ("lora", "replay", "ewc", "moelora", "smolora", "strlora", "branchlora", "cram", "joint"):
        assert f"| {method} | 1 |" in md
    # the parameter-matched LoRA: within 10 % of StrLoRA's trainable parameters, its own row
    matched = json.loads((out / "runs" / "lora-matched-s0" / "results.json").read_text())
    strlora = json.loads((out / "runs" / "strlora-s0" / "results.json").read_text())
    rank = matched["method_options"]["rank"]
    assert rank > 8 and matched["method_options"]["alpha"] == 2 * rank
    assert abs(matched["per_chunk"][0]["trainable_params"] / strlora["per_chunk"][0]["trainable_params"] - 1) <= 0.1
    assert f"| lora[alpha={2 * rank:.1f},rank={rank}] | 1 |" in md
    assert "Paired differences against `lora`" in md
    assert (out / "leaderboard" / "plots" / "demo__tiny__average.png").is_file()
    assert (out / "leaderboard" / "index.html").is_file() and "index.html" in result.output
    again = runner.invoke(app, args)  # finished runs are kept, not redone
    assert again.exit_code == 0 and again.output.count("already complete") == len(demo_methods())


def test_demo_runs_are_the_same_bits_side_by_side_or_in_turn(tmp_path, monkeypatch):
    """`--jobs 2`: two runs at once, each in its own process; `--jobs 1`: in turn, here. Every demo
    run trains in one thread either way (whatever the machine's threads), so their results are
    the same bits."""
    import torch

    monkeypatch.setenv("STRCVIT_CACHE", str(tmp_path / "cache"))
    small = ["--num-chunks", "2", "--chunk-size", "16", "--pretrain-samples", "32", "--eval-limit", "4",
             "--methods", "lora,strlora,cram"]
    par = runner.invoke(app, ["demo", "--out", str(tmp_path / "par"), "--jobs", "2", *small])
    assert par.exit_code == 0, par.output
    assert "3 runs, 2 at a time, 1 thread(s) each" in par.output
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # a sequential demo must not train in the caller's threads
    try:
        seq = runner.invoke(app, ["demo", "--out", str(tmp_path / "seq"), "--jobs", "1", *small])
        assert torch.get_num_threads() == 2  # and gives them back
    finally:
        torch.set_num_threads(threads)
    assert seq.exit_code == 0, seq.output
    for method in ("lora", "strlora", "cram"):
        a, b = (json.loads((tmp_path / d / "runs" / f"{method}-s0" / "results.json").read_text())
                for d in ("par", "seq"))
        assert a["accuracy_matrix"] == b["accuracy_matrix"], method
        assert [c["train_loss"] for c in a["per_chunk"]] == [c["train_loss"] for c in b["per_chunk"]], method
        assert a["env"]["hardware"]["torch_threads"] == b["env"]["hardware"]["torch_threads"] == 1


def test_the_tiny_base_pretrains_in_fixed_threads(tmp_path, monkeypatch):
    """Its bits must not depend on the machine's core count: PRETRAIN_THREADS, whatever the caller's."""
    import torch

    from strcvit_bench.models import tiny

    monkeypatch.setenv("STRCVIT_CACHE", str(tmp_path))
    seen = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tiny.load_tiny([], recipe=tiny.PretrainRecipe(samples=8, batch_size=4),
                       progress=lambda *a: seen.append(torch.get_num_threads()))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert seen and set(seen) == {tiny.PRETRAIN_THREADS} and tiny.PRETRAIN_THREADS != 1


@pytest.mark.slow
def test_full_demo(tmp_path):
    """The README's main command as a user runs it (about 14 minutes on a 2-core CPU)."""
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    lb = (tmp_path / "demo" / "leaderboard" / "leaderboard.md").read_text()
    assert all(f"| {m} | 1 |" in lb for m in ("lora", "replay", "ewc", "moelora", "smolora", "strlora", "joint"))


def test_a_one_chunk_demo_reports_undefined_forgetting_as_such():
    """After one chunk BWT and forgetting are undefined (None): the demo's summary line says so
    instead of failing (it once raised TypeError there)."""
    from strcvit_bench.demo import _summary

    line = _summary({"final_average_accuracy": 31.25, "mean_average_accuracy": 30.0, "bwt": None, "forgetting": None})
    assert line == "final avg 31.2  mean avg 30.0  BWT –  forgetting –"
