"""lm-eval integration: our test sets as lm-eval tasks, and run checkpoints as an lm-eval model.

`export_tasks` writes one task YAML per test set (tag = the stream's name) whose
`process_results` calls our own metric functions, so lm-eval and the runner score alike.
`StrcvitLM` (registered as `strcvit`) loads a run's checkpoint after chunk K — base model,
method adapters and routers — and answers lm-eval's multimodal `generate_until` requests
with the runner's own generation, so it also evaluates on any other lm-eval multimodal task.
lm-eval finds models only once imported: `python -m strcvit_bench.share.lmeval_cli` is
lm-eval's CLI with `strcvit` registered.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from strcvit_bench.errors import StrcvitError
from strcvit_bench.evaluation.corpus import CorpusMetric
from strcvit_bench.evaluation.scoring import get_metric
from strcvit_bench.io import atomic_write_text
from strcvit_bench.streams.stream import open_stream

UTILS = '''"""Written by `strcvit export-lm-eval`: images and scoring for these tasks."""
import io

from PIL import Image

from strcvit_bench.evaluation.corpus import CorpusMetric, score_items
from strcvit_bench.evaluation.scoring import get_metric


def doc_to_visual(doc):
    image = doc["image"]
    if isinstance(image, dict):
        image = Image.open(io.BytesIO(image["bytes"]))
    return [image.convert("RGB")]


def _scorer(name):
    def process_results(doc, results):
        return {"score": get_metric(name)(results[0], doc["answers"])}
    return process_results


def _collector(name, task=None):
    """For corpus-level metrics: keep the prediction, score the task's items together."""
    def process_results(doc, results):
        return {"score": (name, task or doc.get("task"), results[0], list(doc["answers"]))}
    return process_results


def aggregate(items):
    """Mean item score, corpus-level metrics (CIDEr-D) computed over each task's items at once."""
    groups = {}
    for name, task, prediction, references in items:
        groups.setdefault((name, task), []).append((prediction, references))
    scores = [s for (name, _), pairs in groups.items()
              for s in score_items(name, [p for p, _ in pairs], [r for _, r in pairs])]
    return sum(scores) / len(scores) if scores else float("nan")


'''


def export_tasks(stream_dir: str | Path, out: str | Path, max_gen_toks: int = 16, per_chunk: bool = False) -> list[str]:
    """Task YAMLs for every test set (tag: the stream's name) and, with `per_chunk`, for every
    chunk's training rows (tag: `<stream>_chunks`; each row scored with its own task's metric)."""
    stream = open_stream(stream_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {t["name"]: t["metric"] for t in stream.manifest["tasks"]}
    corpus = {m for m in metrics.values() if isinstance(get_metric(m), CorpusMetric)}
    by_task = ("def process_by_task(doc, results):\n"
               "    name = TASK_METRICS[doc[\"task\"]]\n"
               "    if name in CORPUS_METRICS:\n"
               "        return _collector(name)(doc, results)\n"
               "    return {\"score\": (name, doc[\"task\"], results[0], list(doc[\"answers\"]))}\n")
    scorers = "".join(f"process_{m.replace('.', '_')} = " + (f"_collector({m!r})" if m in corpus else f"_scorer({m!r})")
                      + "\n" for m in sorted(set(metrics.values())))
    atomic_write_text(out / "utils.py", UTILS + scorers + f"\nTASK_METRICS = {metrics!r}\n"
                      f"CORPUS_METRICS = {sorted(corpus)!r}\n\n\n" + by_task)
    # (name, tag, parquet, process_results, aggregation): per-sample metrics average per item
    # (lm-eval's mean, with its standard error); corpus-level ones need every item at once
    entries = [(f"{stream.name}_{t['name']}", stream.name, stream.test_file(t["name"]),
                f"process_{t['metric'].replace('.', '_')}",
                "!function utils.aggregate" if t["metric"] in corpus else "mean")
               for t in stream.manifest["tasks"]]
    if per_chunk:
        entries += [(f"{stream.name}_chunk_{c['index']:03d}", f"{stream.name}_chunks", stream.chunk_file(c["index"]),
                     "process_by_task", "!function utils.aggregate") for c in stream.manifest["chunks"]]
    names = []
    for name, tag, data_file, scorer, aggregation in entries:
        config = {
            "task": name,
            "tag": [tag],
            "dataset_path": "parquet",
            "dataset_kwargs": {"data_files": {"test": str(Path(data_file).resolve())}},
            "test_split": "test",
            "output_type": "generate_until",
            "doc_to_image": "!function utils.doc_to_visual",
            "doc_to_text": "{{instruction}}",
            "doc_to_target": "{{answer}}",
            "process_results": f"!function utils.{scorer}",
            "metric_list": [{"metric": "score", "aggregation": aggregation, "higher_is_better": True}],
            "generation_kwargs": {"until": ["\n\n"], "max_gen_toks": max_gen_toks, "do_sample": False},
            "metadata": {"version": 1, "fingerprint": stream.fingerprint},
        }
        text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
        text = re.sub(r"'(!function utils\.\w+)'", r"\1", text)  # YAML tags, not strings
        atomic_write_text(out / f"{name}.yaml", text)
        names.append(name)
    return names


def load_checkpoint(run_dir: str | Path, chunk: int | str = "last"):
    """(bundle, method, config) of a run after chunk K, ready to generate."""
    from strcvit_bench.streams.stream import open_stream as _open
    from strcvit_bench.training import checkpoint, setup
    from strcvit_bench.training.config import RunConfig

    run_dir = Path(run_dir)
    cfg_path = run_dir / "run_config.json"
    if not cfg_path.is_file():
        raise StrcvitError(f"{run_dir} is not a run directory (no run_config.json)")
    cfg = RunConfig.model_validate(json.loads(cfg_path.read_text()))
    index = checkpoint.latest(run_dir) if chunk in ("last", None) else int(chunk)
    if index is None or not (checkpoint.chunk_dir(run_dir, index) / "state.json").is_file():
        raise StrcvitError(f"{run_dir} has no checkpoint for chunk {chunk}")
    bundle, method, params = setup.build(cfg, _open(cfg.stream))
    setup.restore(run_dir, index, method, params)
    bundle.model.eval()
    return bundle, method, cfg


def _lm_class():
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model

    @register_model("strcvit")
    class StrcvitLM(LM):
        MULTIMODAL = True

        def __init__(self, run: str, chunk: str | int = "last", batch_size: int | str = 32, **kwargs: Any):
            super().__init__()
            self.bundle, self.method, self.config = load_checkpoint(run, chunk)
            self.batch = int(batch_size) if str(batch_size).isdigit() else 32

        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            from strcvit_bench.evaluation.evaluator import generate_answers

            rows, untils = [], []
            for req in requests:
                ctx, gen_kwargs = req.args[0], req.args[1]
                visuals = req.args[2].get("visual", []) if len(req.args) > 2 else []
                if not visuals:
                    raise StrcvitError("strcvit models answer image+text requests; this request has no image")
                rows.append({"id": f"lm-eval/{len(rows)}", "image": visuals[0], "instruction": ctx})
                untils.append([u for u in gen_kwargs.get("until", []) if u])
            answers = generate_answers(self.bundle, rows, self.batch, self.method.before_forward)
            out = []
            for answer, until in zip(answers, untils, strict=True):
                for stop in until:
                    answer = answer.split(stop)[0]
                out.append(answer)
            return out

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("strcvit models are scored by generation (generate_until tasks)")

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("strcvit models are scored by generation (generate_until tasks)")

    return StrcvitLM


_CLASS = None


def strcvit_lm():
    """The registered lm-eval model class (registration happens once, on first use)."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _lm_class()
    return _CLASS
