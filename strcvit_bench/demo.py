"""The main job on the embedded default: build the demo stream, train every method over
seeds, write the leaderboard. The CLI's `demo` command only parses options and prints.

Besides the eight stream methods the demo runs two reference rows: `joint` (the i.i.d. upper
bound on the same budget) and `lora-matched`, a LoRA whose rank gives it StrLoRA's trainable
parameters within 10 %, so a reader sees whether StrLoRA beats LoRA by routing or by size.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strcvit_bench.errors import StrcvitError

JOINT = "joint"
MATCHED = "lora-matched"
# Every demo run trains in one thread, however many cores the machine has and however many runs go
# at once: a CPU matmul's rounding depends on how many threads split it, so a run's bits would
# otherwise depend on the machine's core count, and a fresh clone would not reproduce the
# committed leaderboard. One thread is also where a small model is most efficient per core
# (benchmarks/RESULTS.md): the demo spends the cores on runs side by side instead.
RUN_THREADS = 1


def demo_methods() -> tuple[str, ...]:
    """Every registered method (plugins included), then the two reference rows."""
    from strcvit_bench.methods.registry import METHODS

    return (*(n for n in METHODS.names() if n != JOINT), MATCHED, JOINT)
SPEC = Path(__file__).resolve().parent.parent / "stream_specs" / "demo.yaml"
COMMITTED = SPEC.parent.parent / "leaderboard"  # the checkout's committed leaderboard: its runs' timings

Say = Callable[[str], None]
ProgressFactory = Callable[[str], AbstractContextManager[Any]]


@dataclass
class Job:
    label: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)


def trainable_params(stream_dir: Path, method: str, options: dict[str, Any], base: dict[str, Any]) -> int:
    """The trainable parameters `method` starts with on the tiny model (built, not trained); `base`:
    the RunConfig fields that choose the tiny base (pretrain_samples, shipped_base)."""
    from strcvit_bench.streams.stream import verify_stream
    from strcvit_bench.training import setup
    from strcvit_bench.training.config import RunConfig

    cfg = RunConfig(stream=str(stream_dir), method=method, method_options=options, **base)
    _, m, _ = setup.build(cfg, verify_stream(stream_dir))
    return m.parameter_counts()["trainable"]


def matched_lora_rank(stream_dir: Path, base: dict[str, Any] | None = None, target: str = "strlora") -> int:
    """The LoRA rank whose trainable parameters are nearest `target`'s default (linear in rank)."""
    base = base or {}
    goal = trainable_params(stream_dir, target, {}, base)
    p1 = trainable_params(stream_dir, "lora", {"rank": 1, "alpha": 2.0}, base)
    p2 = trainable_params(stream_dir, "lora", {"rank": 2, "alpha": 4.0}, base)
    per_rank, fixed = p2 - p1, 2 * p1 - p2
    rank = max(1, round((goal - fixed) / per_rank))
    if abs(fixed + rank * per_rank - goal) > 0.1 * goal:
        raise StrcvitError(f"no LoRA rank comes within 10 % of {target}'s {goal:,} parameters")
    return rank


def jobs_for(names: list[str], stream_dir: Path, base: dict[str, Any]) -> list[Job]:
    from strcvit_bench.methods.registry import get_method

    jobs = []
    for name in names:
        if name == MATCHED:
            rank = matched_lora_rank(stream_dir, base)
            jobs.append(Job(MATCHED, "lora", {"rank": rank, "alpha": 2.0 * rank}))  # LoRA's scale α/r = 2 kept
        else:
            get_method(name)
            jobs.append(Job(name, name))
    return jobs


def build_demo_stream(out: Path, num_chunks: int | None, chunk_size: int | None, rebuild: bool,
                      progress: ProgressFactory) -> Path:
    from strcvit_bench.streams.builder import build_stream
    from strcvit_bench.streams.spec import load_spec

    if not SPEC.is_file():
        raise StrcvitError(f"the demo spec {SPEC} is missing; run the demo from a checkout of strcvit-bench")
    spec = load_spec(SPEC, num_chunks=num_chunks, chunk_size=chunk_size)
    stream_dir = out / "stream"
    manifest = stream_dir / "manifest.json"
    same = manifest.is_file() and json.loads(manifest.read_text()).get("spec") == spec.model_dump(mode="json")
    if rebuild or not same:
        with progress("building the demo stream") as update:
            build_stream(spec, stream_dir, base_dir=SPEC.parent, overwrite=True, progress=update)
    return stream_dir


def demo_base(write: bool, progress: ProgressFactory) -> dict[str, Any]:
    """Pre-train the demo's tiny base here, ignoring the shipped one, and compare the two tensor
    by tensor: equal on the CPU class and versions that made the shipped one, a few ulps apart on
    others. `write` ships the new one instead (after a change to the tiny model, its recipe, the
    generators or the demo stream). Nothing is written to the user's model cache."""
    import shutil
    import tempfile

    from safetensors.torch import load_file

    from strcvit_bench.models import tiny
    from strcvit_bench.streams.stream import verify_stream
    from strcvit_bench.training.setup import stream_texts

    with tempfile.TemporaryDirectory() as tmp:
        texts = stream_texts(verify_stream(build_demo_stream(Path(tmp), None, None, False, progress)))
        with progress("pre-training the tiny base") as update:
            here = tiny.load_tiny(texts, shipped=False, cache=Path(tmp) / "cache", progress=update)
        made = Path(here.info["cache"])
        shipped = tiny.SHIPPED / f"tiny-{here.info['base_key']}"
        report: dict[str, Any] = {"shipped": str(shipped), "present": (shipped / "config.json").is_file(),
                                  "final_loss": here.info["pretrain_stats"]["final_loss"]}
        if report["present"]:
            a, b = load_file(made / "model.safetensors"), load_file(shipped / "model.safetensors")
            same_names = a.keys() == b.keys()
            report["equal"] = same_names and all(a[k].equal(b[k]) for k in a)
            report["max_abs_diff"] = (max(float((a[k] - b[k]).abs().max()) for k in a) if same_names
                                      else float("inf"))
        if write:  # copied beside, the old moved aside, then renamed into place: only renames while no base is there
            partial = tiny.SHIPPED / f".{shipped.name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(made, partial)
            aside = []
            for old in tiny.SHIPPED.glob("tiny-*"):
                stale = old.with_name(f".{old.name}.old")  # left by an interrupted --write
                shutil.rmtree(stale, ignore_errors=True)
                aside.append(old.rename(stale))
            partial.rename(shipped)
            for old in aside:
                shutil.rmtree(old)
            report["written"] = True
    return report


def _summary(m: dict[str, Any]) -> str:
    """The run's headline metrics; BWT and forgetting are undefined (None) after one chunk."""
    keys = (("final avg", "final_average_accuracy"), ("mean avg", "mean_average_accuracy"), ("BWT", "bwt"),
            ("forgetting", "forgetting"))
    return "  ".join(f"{label} {'–' if m.get(k) is None else format(m[k], '.1f')}" for label, k in keys)


def recorded_seconds(leaderboards: Sequence[Path], fingerprint: str) -> dict[str, float]:
    """Each method label's mean recorded time (training and evaluation) over the complete runs
    of this stream on the tiny model in these leaderboards' run stores."""
    times: dict[str, list[float]] = {}
    for board in leaderboards:
        for path in sorted((board / "runs").glob("*/*/*/results.json")):
            try:
                r = json.loads(path.read_text())
                if not (r.get("complete") and r["model"] == "tiny" and r["stream"]["fingerprint"] == fingerprint):
                    continue
                t = r["timings"]
                seconds = t["train_seconds"] + t["eval_seconds"] + (t.get("base_eval_seconds") or 0.0)
                label = r.get("method_label") or r["method"]
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a run of another schema or a damaged file: no estimate from it
            times.setdefault(label, []).append(seconds)
    return {label: sum(v) / len(v) for label, v in times.items()}


def longest_first(todo: list[tuple[str, Any]], seconds: dict[str, float]) -> list[tuple[str, Any]]:
    """The runs in the order that finishes a pool soonest, near enough: longest first (LPT), so
    the short runs fill in at the end instead of one long run keeping a core busy while the
    others idle. A run with no recorded time (a plugin, another stream) goes first: it may be
    the longest. The order changes when a run finishes, never its bits."""
    from strcvit_bench.methods.registry import get_method, method_label, parse_options

    def cost(item: tuple[str, Any]) -> float:
        cfg = item[1]
        label = method_label(cfg.method, parse_options(get_method(cfg.method), cfg.method_options).model_dump())
        return seconds.get(label, math.inf)

    return sorted(todo, key=cost, reverse=True)


def run_jobs(jobs: list[Job], seeds: int, stream_dir: Path, out: Path, eval_limit: int | None,
             base: dict[str, Any], say: Say, progress: ProgressFactory,
             workers: int | None = None, history: Sequence[Path] = ()) -> Iterator[Path]:
    """Every (job, seed) run; a finished run is kept, an interrupted one resumed. `workers` runs
    at once (default: one per CPU core, at most one per run), each in one thread (RUN_THREADS)
    and, with more than one, each in a process of its own: the runs are the same either way.
    `history`: leaderboards whose runs of this stream say how long each method takes, to start
    the longest first."""
    from strcvit_bench.training.config import RunConfig

    work, todo = [(j, s) for j in jobs for s in range(seeds)], []
    for k, (job, seed) in enumerate(work):
        run_dir = out / "runs" / f"{job.label}-s{seed}"
        results_path = run_dir / "results.json"
        if results_path.is_file() and json.loads(results_path.read_text()).get("complete"):
            say(f"[{k + 1}/{len(work)}] {job.label} seed {seed}: already complete, kept")
            continue
        config = RunConfig(stream=str(stream_dir), method=job.method, method_options=job.options, seed=seed,
                           out=str(run_dir), eval_limit=eval_limit, **base)
        todo.append((f"[{k + 1}/{len(work)}] {job.label} seed {seed}", config))
    if workers is None:
        import os

        workers = max(1, min(os.cpu_count() or 1, len(todo)))
    if workers <= 1:
        from strcvit_bench.env import torch_threads
        from strcvit_bench.training.runner import run

        for label, config in todo:
            with progress(label) as update, torch_threads(RUN_THREADS):
                results = run(config, resume=(Path(config.out) / "run_config.json").is_file(), progress=update)
            say(f"    {_summary(results['metrics'])}")
    elif todo:
        fingerprint = json.loads((stream_dir / "manifest.json").read_text())["fingerprint"]
        _run_parallel(longest_first(todo, recorded_seconds(history, fingerprint)), workers, say)
    yield from (out / "runs" / f"{job.label}-s{seed}" for job, seed in work)


def _run_parallel(todo: list[tuple[str, Any]], workers: int, say: Say) -> None:
    """The runs in `workers` processes. The tiny base is pre-trained (and cached) first, here, so
    no two processes pre-train it (it pre-trains with a fixed thread count of its own: models/tiny.py)."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    first = todo[0][1]
    base = {"pretrain_samples": first.pretrain_samples, "shipped_base": first.shipped_base}
    trainable_params(Path(first.stream), "lora", {}, base)  # pre-trains the base, into the cache (if not shipped)
    say(f"running {len(todo)} runs, {workers} at a time, {RUN_THREADS} thread(s) each")
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                             initargs=(RUN_THREADS, os.getpid())) as pool:
        futures = {pool.submit(_run_one, config.model_dump()): label for label, config in todo}
        for future in as_completed(futures):
            say(f"{futures[future]}: {_summary(future.result())}")


def _worker_init(threads: int, parent: int) -> None:
    import torch

    from strcvit_bench.streams.builder import exit_with_parent

    torch.set_num_threads(threads)
    exit_with_parent(parent)
    from strcvit_bench.env import keep_freed_memory, quiet_transformers

    quiet_transformers()  # a spawned process starts with transformers' own progress bars on
    keep_freed_memory()


def _run_one(config: dict[str, Any]) -> dict[str, Any]:
    from strcvit_bench.training.config import RunConfig
    from strcvit_bench.training.runner import run

    cfg = RunConfig.model_validate(config)
    return run(cfg, resume=(Path(cfg.out) / "run_config.json").is_file())["metrics"]
