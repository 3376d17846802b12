"""The continual runner: train chunk by chunk, score every task after every chunk.

RUNDIR/
  run_config.json        the RunConfig (a resumed run must match it)
  results.json           schema-versioned results, rewritten atomically after every chunk
  predictions/base/…     predictions of the untrained model (for FWT)
  predictions/chunk_003/<task>.jsonl   id, prediction, references, score
  checkpoints/chunk_003/ see training/checkpoint.py
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from strcvit_bench.env import git_commit, hardware, library_versions
from strcvit_bench.errors import StrcvitError
from strcvit_bench.evaluation.authors import task_metric
from strcvit_bench.evaluation.evaluator import generate_answers, score_task
from strcvit_bench.evaluation.metrics import all_metrics, first_seen_from_counts
from strcvit_bench.evaluation.reuse import EvalReuse
from strcvit_bench.evaluation.uncertainty import bootstrap_run
from strcvit_bench.io import atomic_write_json, atomic_write_text
from strcvit_bench.methods.registry import get_method, method_label, parse_options
from strcvit_bench.parallel import Parallel
from strcvit_bench.seeding import derive_seed
from strcvit_bench.streams.stream import stream_seal, verify_stream
from strcvit_bench.training import checkpoint, setup
from strcvit_bench.training.config import RunConfig
from strcvit_bench.training.rows import RowStore
from strcvit_bench.training.trainer import train_chunk

SCHEMA_VERSION = 1
Progress = Callable[[str, int, int], None]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Run:
    """One run, on one process or, under `accelerate launch`, on each of several: every rank
    trains its share of each step and scores its share of each test set; rank 0 writes."""

    def __init__(self, config: RunConfig, resume: bool = False, progress: Progress | None = None):
        self.config = config
        if config.device != "auto":
            setup.device_for(config.device)  # a device that is not there: a usage error before any work
        self.parallel = Parallel(config.device)
        self.progress = progress if self.parallel.is_main else None
        self.out = Path(config.out)
        self.stream = verify_stream(config.stream)
        self.method_cls = get_method(config.method)
        self.options = parse_options(self.method_cls, config.method_options)
        self.resume_from = self._check_out_dir(resume)
        self.parallel.barrier()  # every rank has checked the directory before rank 0 writes to it

    def _check_out_dir(self, resume: bool) -> int | None:
        cfg_path = self.out / "run_config.json"
        if not cfg_path.exists():
            if resume:
                raise StrcvitError(f"--resume: {self.out} holds no run to resume")
            return None
        if not resume:
            raise StrcvitError(f"{self.out} already holds a run; pass --resume to continue it, or choose another --out")
        try:
            saved = RunConfig.model_validate(json.loads(cfg_path.read_text()))
        except (ValueError, ValidationError):
            raise StrcvitError(f"--resume: {cfg_path} is corrupt or not a strcvit run configuration; "
                               f"start the run again in a new --out") from None
        mine = {**self.config.identity(), "method_options": self.options.model_dump()}
        theirs = {**saved.identity(),
                  "method_options": parse_options(self.method_cls, saved.method_options).model_dump()}
        diff = sorted(k for k in mine if mine[k] != theirs.get(k))
        if diff:
            raise StrcvitError(f"--resume: {self.out} was run with different settings ({', '.join(diff)}); "
                               f"resume with the same settings or choose another --out")
        self._check_same_stream()
        return checkpoint.latest(self.out)

    def _check_same_stream(self) -> None:
        """The stream is the same when its fingerprint and seal are, whatever path reaches it."""
        try:
            before = json.loads((self.out / "results.json").read_text())["stream"]
        except (OSError, ValueError, KeyError, TypeError):
            return  # no chunk was scored yet: nothing of another stream can be mixed in
        now = {"fingerprint": self.stream.fingerprint, "content_seal": stream_seal(self.stream)}
        for key, value in now.items():
            if before.get(key) is not None and value is not None and before[key] != value:
                raise StrcvitError(f"--resume: {self.out} was run on another stream ({key} {before[key][:12]}… "
                                   f"there, {value[:12]}… in {self.stream.path}); resume on the same stream or "
                                   f"choose another --out")

    def _check_same_base(self, info: dict[str, Any]) -> None:
        """Adapters trained on one base and resumed on other base weights (a shipped base that
        replaced a local pre-training, a cache pre-trained again on another CPU) are a run of neither."""
        try:
            before = json.loads((self.out / "results.json").read_text())["model_info"].get("weights_sha256")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return
        now = info.get("weights_sha256")
        if before and now and before != now:
            raise StrcvitError(f"--resume: {self.out} was trained on other base weights (sha256 {before[:12]}… "
                               f"there, {now[:12]}… now, from {info.get('base', 'the cache')}); resume from that base "
                               f"(--shipped-base or --no-shipped-base, on the machine whose cache holds it), "
                               f"or start the run again in another --out")

    def _say(self, label: str, done: int, total: int) -> None:
        if self.progress:
            self.progress(label, done, total)

    def execute(self) -> dict[str, Any]:
        cfg, stream = self.config, self.stream
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.manual_seed(cfg.seed)
        main = self.parallel.is_main
        store = RowStore(stream, hide_task=not stream.manifest.get("task_ids_visible", False))
        bundle, method, params = setup.build(cfg, stream, store.lookup, self.progress, self.parallel,
                                              chunk_ids=store.chunk_ids)
        if self.resume_from is not None:
            self._check_same_base(bundle.info)
        if main:  # only once the model and method are built: a run that cannot start leaves nothing
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.out / "run_config.json", cfg.model_dump())
        self.method, self.bundle = method, bundle
        self._reuse = EvalReuse(bundle)  # every evaluation scores the same test batches
        tasks = stream.manifest["tasks"]
        tests = {t["name"]: stream.read_test(t["name"]).to_pylist()[: cfg.eval_limit] for t in tasks}
        self._tests = tests
        first_seen = first_seen_from_counts(stream.task_names, stream.composition())
        last = stream.num_chunks if cfg.max_chunks is None else min(stream.num_chunks, cfg.max_chunks)

        if self.resume_from is not None:
            state = setup.restore(self.out, self.resume_from, method, params)
            store.remember(self.resume_from)
            start = self.resume_from + 1
        else:
            state = {"accuracy_matrix": [], "per_chunk": [], "base_scores": None, "base_eval_seconds": None,
                     "item_scores": [], "base_item_scores": None}
            t0 = time.perf_counter()
            self._say("scoring the untrained model", 0, last)
            state["base_scores"], state["base_item_scores"] = self._evaluate(tests, tasks, "base", method)
            state["base_eval_seconds"] = time.perf_counter() - t0
            start = 0
        self._write_results(state, params, first_seen, method, bundle)
        for index in range(start, last):
            self._say(f"chunk {index}: training", index, last)
            rows = store.chunk(index)
            stats = train_chunk(bundle, method, params, index, rows, cfg, self.parallel)
            self._say(f"chunk {index}: evaluating", index, last)
            t0 = time.perf_counter()
            scores, items = self._evaluate(tests, tasks, f"chunk_{index:03d}", method)
            stats.update({"chunk": index, "eval_seconds": time.perf_counter() - t0, "peak_rss_mib": _peak_rss_mib()})
            if torch.cuda.is_available():
                stats["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
            state["accuracy_matrix"].append(scores)
            state.setdefault("item_scores", []).append(items)
            state["per_chunk"].append(stats)
            m_tensors, m_meta = method.state()
            if main:
                checkpoint.save(self.out, index, dict(params), m_tensors, m_meta, state)
            self._write_results(state, params, first_seen, method, bundle)
            self._say(f"chunk {index}: done", index + 1, last)
        self.parallel.barrier()  # results.json is complete before any rank returns
        return json.loads((self.out / "results.json").read_text())

    def _evaluate(self, tests: dict[str, list[dict]], tasks: list[dict], tag: str,
                  method) -> tuple[list[float], list[list[float]]]:
        """Every task's score, and its per-item scores (what the bootstrap CIs resample)."""
        scores, items, routing = [], [], {}
        par = self.parallel
        for task in tasks:
            rows = tests[task["name"]]
            method.routing_reset()
            mine = generate_answers(self.bundle, par.shard(rows), self.config.eval_batch_size, method.before_forward,
                                    self.config.precision, self._reuse)
            preds = par.unshard(mine, len(rows))  # every rank scored its share; all get all, in order
            summary = method.routing_summary()
            if summary is not None:
                routing[task["name"]] = summary
            score, records = score_task(task_metric(task, self.config.scoring), rows, preds)
            if par.is_main:
                atomic_write_text(self.out / "predictions" / tag / f"{task['name']}.jsonl",
                                  "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            scores.append(score)
            items.append([round(float(r["score"]), 6) for r in records])
        if routing and par.is_main:
            self._record_routing(tag, routing)
        return scores, items

    def _test_ids_digest(self) -> str:
        """Which test items were scored, in order: a paired comparison of two runs is only
        valid on the same items."""
        import hashlib

        ids = "\n".join(r["id"] for name in sorted(self._tests) for r in self._tests[name])
        return hashlib.sha256(ids.encode()).hexdigest()

    def _record_routing(self, tag: str, per_task: dict[str, Any]) -> None:
        """routing.json: per evaluation point and task, the mean expert activation (and, for
        two-stage routers, how often each expert is selected per sample)."""
        path = self.out / "routing.json"
        data = json.loads(path.read_text()) if path.exists() else {
            "schema_version": 1, "method": self.config.method, "points": {}}
        data["points"][tag] = per_task
        atomic_write_json(path, data)

    def _write_results(self, state: dict, params: dict, first_seen: list, method, bundle) -> None:
        if not self.parallel.is_main:
            return
        cfg, stream = self.config, self.stream
        R = state["accuracy_matrix"]
        per = state["per_chunk"]
        items = state.get("item_scores") or []
        if len(items) != len(R):  # a checkpoint of a version that kept no per-item scores
            items = []
        results = {
            "schema_version": SCHEMA_VERSION,
            "method": cfg.method,
            "method_options": self.options.model_dump(),
            "method_label": method_label(cfg.method, self.options.model_dump()),
            "method_info": method.info(),
            "model": cfg.model,
            "model_info": {k: v for k, v in bundle.info.items() if k != "cache"},
            "stream": {"name": stream.name, "fingerprint": stream.fingerprint, "content_seal": stream_seal(stream),
                       "path": str(stream.path),
                       "num_chunks": stream.num_chunks, "chunk_size": stream.manifest["chunk_size"],
                       "composition": stream.composition()},
            "seed": cfg.seed,
            "tasks": [{"name": t["name"], "family": t["family"], "metric": task_metric(t, cfg.scoring), "first_seen": s}
                      for t, s in zip(stream.manifest["tasks"], first_seen, strict=True)],
            "accuracy_matrix": R,
            "base_scores": state["base_scores"],
            "metrics": all_metrics(R, first_seen, state["base_scores"]) if R else {},
            # percentile bootstrap over test items, seeded by the run's seed: how much of every
            # number above is the finite test set's sampling error
            "uncertainty": bootstrap_run(items, first_seen, state.get("base_item_scores"),
                                         seed=derive_seed(cfg.seed, "bootstrap")) if items else {},
            "item_scores": {"base": state.get("base_item_scores"), "chunks": items,
                            "test_ids_sha256": self._test_ids_digest()},
            "per_chunk": per,
            "trainable_params": method.parameter_counts()["adapter"],
            "completed_chunks": len(R),
            "complete": len(R) == stream.num_chunks,
            "timings": {"train_seconds": sum(p["train_seconds"] for p in per),
                        "eval_seconds": sum(p["eval_seconds"] for p in per),
                        "base_eval_seconds": state["base_eval_seconds"]},
            "env": {"versions": library_versions(), "hardware": hardware(), "commit": git_commit(),
                    "processes": self.parallel.world},
            "config": cfg.model_dump(),
        }
        atomic_write_json(self.out / "results.json", results)


def run(config: RunConfig, resume: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    return Run(config, resume=resume, progress=progress).execute()
