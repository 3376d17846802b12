"""The demo starts its longest runs first, by the times its leaderboards recorded."""

from __future__ import annotations

import json
from pathlib import Path

from strcvit_bench import demo
from strcvit_bench.demo import Job, longest_first, recorded_seconds, run_jobs
from strcvit_bench.training.config import RunConfig


def _store(board: Path, fingerprint: str, label: str, seed: int, seconds: tuple[float, float, float | None],
           method: str | None = None, model: str = "tiny", complete: bool = True) -> None:
    run = board / "runs" / f"demo__{fingerprint[:12]}" / model / f"{label}__s{seed}"
    run.mkdir(parents=True)
    train, evaluation, base = seconds
    (run / "results.json").write_text(json.dumps({
        "method": method or label, "method_label": label, "model": model, "complete": complete,
        "stream": {"fingerprint": fingerprint},
        "timings": {"train_seconds": train, "eval_seconds": evaluation, "base_eval_seconds": base}}))


def test_recorded_seconds_average_the_complete_runs_of_this_stream_and_model(tmp_path):
    fp = "ab" * 32
    _store(tmp_path / "a", fp, "lora", 0, (10.0, 2.0, 1.0))
    _store(tmp_path / "a", fp, "lora", 1, (14.0, 2.0, None))           # no base evaluation recorded
    _store(tmp_path / "b", fp, "strlora", 0, (20.0, 3.0, 1.0))
    _store(tmp_path / "b", fp, "cram", 0, (99.0, 0.0, 0.0), complete=False)  # interrupted: no estimate
    _store(tmp_path / "b", "cd" * 32, "replay", 0, (99.0, 0.0, 0.0))   # another stream
    _store(tmp_path / "b", fp, "ewc", 0, (99.0, 0.0, 0.0), model="Qwen/Qwen2-VL-2B-Instruct")
    damaged = tmp_path / "b" / "runs" / "demo__x" / "tiny" / "moelora__s0"
    damaged.mkdir(parents=True)
    (damaged / "results.json").write_text("{not json")
    got = recorded_seconds([tmp_path / "a", tmp_path / "b", tmp_path / "absent"], fp)
    assert got == {"lora": 14.5, "strlora": 24.0}                      # (13 + 16) / 2; 20 + 3 + 1


def test_longest_first_orders_by_recorded_time_and_puts_the_unknown_first():
    def cfg(method: str, **options) -> tuple[str, RunConfig]:
        return method, RunConfig(stream="s", method=method, method_options=options, out="o")

    todo = [cfg("lora"), cfg("replay"), cfg("lora", rank=13, alpha=26.0), cfg("ewc"), cfg("strlora")]
    seconds = {"lora": 10.0, "replay": 30.0, "lora[alpha=26.0,rank=13]": 12.0, "strlora": 20.0}
    order = [(label, c.method_options) for label, c in longest_first(todo, seconds)]
    assert order == [("ewc", {}), ("replay", {}), ("strlora", {}), ("lora", {"rank": 13, "alpha": 26.0}),
                     ("lora", {})]
    assert longest_first(todo, {}) == todo  # nothing recorded: the order given


def test_the_demo_hands_its_pool_the_runs_longest_first(tmp_path, monkeypatch):
    stream = demo.build_demo_stream(tmp_path, 2, 16, False, lambda label: _NoProgress())
    fp = json.loads((stream / "manifest.json").read_text())["fingerprint"]
    _store(tmp_path / "board", fp, "lora", 0, (5.0, 1.0, 1.0))
    _store(tmp_path / "board", fp, "replay", 0, (50.0, 1.0, 1.0))
    _store(tmp_path / "board", fp, "strlora", 0, (20.0, 1.0, 1.0))
    handed = []
    monkeypatch.setattr(demo, "_run_parallel", lambda todo, workers, say: handed.extend(todo))
    jobs = [Job("lora", "lora"), Job("strlora", "strlora"), Job("replay", "replay")]
    list(run_jobs(jobs, 2, stream, tmp_path / "demo", None, {}, print, lambda label: _NoProgress(), workers=2,
                  history=[tmp_path / "board"]))
    assert [(c.method, c.seed) for _, c in handed] == [("replay", 0), ("replay", 1), ("strlora", 0), ("strlora", 1),
                                                        ("lora", 0), ("lora", 1)]


class _NoProgress:
    def __enter__(self):
        return lambda *a: None

    def __exit__(self, *exc) -> None:
        return None
