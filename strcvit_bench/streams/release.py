"""`strcvit import-release`: the StrCVIT authors' released stream, exactly, as a stream directory.

The release (Hub dataset chanceche/StrCVIT_dataset) ships ms-swift training files
`train/data_001.json … data_025.json` — one per chunk, records `{"messages": [user, assistant],
"images": [path]}` — and per-task test files `test/<Task>/{test,test_proxy,val_proxy}.json`
(records `{question_id, image, text, answer}`; grounding adds `answer_bbox` and `size`,
TextCaps has a list of captions). Image paths start with `<STRCVIT_IMAGE_ROOT>`.

Chunk i is exactly the records of `data_{i+1:03d}.json`, in file order: nothing is resampled
or reordered, so a run sees the paper's stream. A training record carries no task label; it
is derived from the image's folder with the authors' README table (`DEFAULT_RULES`, longest
prefix first), overridable with a YAML list of rules. A record no rule matches is an error.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from strcvit_bench.env import library_versions
from strcvit_bench.errors import StrcvitError
from strcvit_bench.io import atomic_directory
from strcvit_bench.streams.builder import seal_and_write, write_rows
from strcvit_bench.streams.format import SCHEMA_VERSION, Fingerprint, chunk_path, test_path

PLACEHOLDER = "<STRCVIT_IMAGE_ROOT>"
TEST_FILES = ("test", "test_proxy", "val_proxy")


@dataclass(frozen=True)
class Rule:
    prefix: str      # image path under the image root, e.g. "COCO2014/val2014/"
    task: str
    family: str
    metric: str
    test_dir: str    # the task's folder under test/


# the authors' README table ("Expected image path under <STRCVIT_IMAGE_ROOT>")
DEFAULT_RULES = (
    Rule("AD/", "ad", "vqa", "vqa_accuracy", "AD"),
    Rule("COCO2014/val2014/", "vqav2", "vqa", "vqa_accuracy", "VQAv2"),
    Rule("COCO2014/train2014/", "grounding", "other", "bbox_iou", "Grounding"),
    Rule("GQA/", "gqa", "vqa", "exact_match", "GQA"),
    Rule("ImageNet_withlabel/", "imagenet", "classification", "classification", "ImageNet"),
    Rule("Places/", "places", "classification", "classification", "Places365"),
    Rule("RS/", "rs", "remote_sensing", "exact_match", "RS"),
    Rule("Fin/", "fin", "chart", "exact_match", "Fin"),
    Rule("OCR-VQA/", "ocrvqa", "ocr", "vqa_accuracy", "OCRVQA"),
    Rule("Textcaps/", "textcaps", "ocr", "cider", "TextCaps"),
    Rule("ChartQA/", "chartqa", "chart", "relaxed_accuracy", "ChartQA"),
)


def load_rules(path: Path | None) -> tuple[Rule, ...]:
    """The default rules, or a YAML list of {prefix, task, family, metric, test_dir}."""
    if path is None:
        return DEFAULT_RULES
    import yaml

    from strcvit_bench.evaluation.scoring import METRICS
    from strcvit_bench.streams.spec import FAMILIES, NAME_PATTERN

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise StrcvitError(f"--task-rules {path}: not a readable YAML file ({exc})") from None
    keys = ("prefix", "task", "family", "metric", "test_dir")
    if not isinstance(data, list) or not data:
        raise StrcvitError(f"--task-rules {path}: expected a list of rules, each with {', '.join(keys)}")
    rules = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or set(item) != set(keys) or not all(isinstance(v, str) for v in item.values()):
            raise StrcvitError(f"--task-rules {path}: rule {i} must have exactly the string keys {', '.join(keys)}")
        if not re.fullmatch(NAME_PATTERN, item["task"]):
            raise StrcvitError(f"--task-rules {path}: rule {i}: task {item['task']!r} is not a valid name")
        if item["family"] not in FAMILIES:
            raise StrcvitError(f"--task-rules {path}: rule {i}: family {item['family']!r}; allowed: "
                               f"{', '.join(FAMILIES)}")
        if item["metric"] not in METRICS:
            raise StrcvitError(f"--task-rules {path}: rule {i}: metric {item['metric']!r}; allowed: "
                               f"{', '.join(METRICS.names())}")
        rules.append(Rule(**item))
    return tuple(rules)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise StrcvitError(f"{path}: not a readable JSON file ({exc})") from None


class _Importer:
    def __init__(self, release: Path, image_root: Path, rules: tuple[Rule, ...], strict: bool):
        self.release, self.image_root, self.strict = release, image_root, strict
        self.rules = sorted(rules, key=lambda r: -len(r.prefix))  # the longest prefix decides
        self.dropped: dict[str, dict[str, int]] = {}

    def relative(self, path: str) -> str:
        return path.replace(PLACEHOLDER, "", 1).lstrip("/")

    def rule_for(self, path: str, where: str) -> Rule:
        rel = self.relative(path)
        for rule in self.rules:
            if rel.startswith(rule.prefix):
                return rule
        raise StrcvitError(f"{where}: image {path!r} matches no task rule (prefixes: "
                           f"{', '.join(r.prefix for r in self.rules)}); pass --task-rules RULES.yaml with a rule "
                           f"for it")

    def image(self, path: str, task: str, where: str) -> bytes | None:
        """The image file's bytes as stored (no re-encoding), or None when missing or unreadable."""
        file = self.image_root / self.relative(path)
        try:
            data = file.read_bytes()
            with Image.open(io.BytesIO(data)) as im:
                im.load()
            return data
        except FileNotFoundError:
            reason = "missing_image"
        except Exception:  # noqa: BLE001 - any decoder error is a corrupt file
            reason = "corrupt_image"
        if self.strict:
            raise StrcvitError(f"{where}: image {file} is {reason.replace('_', ' ')}; drop --strict to count and "
                               f"skip such records")
        counts = self.dropped.setdefault(task, {})
        counts[reason] = counts.get(reason, 0) + 1
        return None

    def train_row(self, record: Any, chunk: int, k: int, where: str) -> tuple[Rule, dict[str, Any] | None]:
        try:
            (path,) = record["images"]
            messages = record["messages"]
            user = next(m["content"] for m in messages if m["role"] == "user")
            answer = next(m["content"] for m in messages if m["role"] == "assistant")
        except (KeyError, TypeError, ValueError, StopIteration):
            raise StrcvitError(f"{where}: record {k} is not an ms-swift record with one image, a user and an "
                               f"assistant turn") from None
        rule = self.rule_for(path, f"{where} record {k}")
        image = self.image(path, rule.task, f"{where} record {k}")
        if image is None:
            return rule, None
        instruction = user.replace("<image>", "").strip()
        return rule, {"id": f"release/train/data_{chunk + 1:03d}/{k}", "task": rule.task,
                      "image": {"bytes": image, "path": None}, "instruction": instruction, "answer": answer,
                      "answers": [answer], "chunk": chunk}

    def test_row(self, record: Any, rule: Rule, where: str) -> dict[str, Any] | None:
        try:
            qid, path, text = record["question_id"], record["image"], record["text"]
            answer = record["answer_bbox"] if "answer_bbox" in record else record["answer"]
        except (KeyError, TypeError):
            raise StrcvitError(f"{where}: a record lacks question_id, image, text or answer") from None
        answers = [str(a) for a in answer] if isinstance(answer, list) else [str(answer)]
        if not answers:
            raise StrcvitError(f"{where}: question {qid} has no answer")
        image = self.image(path, rule.task, f"{where} question {qid}")
        if image is None:
            return None
        return {"id": f"release/test/{rule.test_dir}/{qid}", "task": rule.task, "image": {"bytes": image, "path": None},
                "instruction": text.replace("<image>", "").strip(), "answer": answers[0], "answers": answers,
                "chunk": -1}


def import_release(release: Path, image_root: Path, out: Path, *, tests: str = "test", rules_path: Path | None = None,
                   strict: bool = False, name: str = "strcvit", overwrite: bool = False) -> dict[str, Any]:
    """Write the release as a stream directory in `out`; returns its manifest."""
    if tests not in TEST_FILES:
        raise StrcvitError(f"--tests {tests!r}: expected one of {', '.join(TEST_FILES)}")
    train_files = sorted((release / "train").glob("data_*.json"))
    if not train_files:
        raise StrcvitError(f"{release} is not a StrCVIT release: no train/data_*.json (download "
                           f"chanceche/StrCVIT_dataset; docs/reproducing.md)")
    expected = [f"data_{i + 1:03d}.json" for i in range(len(train_files))]
    if [f.name for f in train_files] != expected:
        raise StrcvitError(f"{release / 'train'}: chunk files must be data_001.json … data_{len(expected):03d}.json "
                           f"without gaps; found {', '.join(f.name for f in train_files)}")
    if not image_root.is_dir():
        raise StrcvitError(f"--image-root {image_root} is not a directory")
    if out.exists() and not overwrite:
        raise StrcvitError(f"{out} already exists; pass --overwrite to replace it")
    imp = _Importer(release, image_root, load_rules(rules_path), strict)
    digest = hashlib.sha256()
    for f in [*train_files, release / "manifest.json", release / "train" / "record.json"]:
        if f.is_file():
            digest.update(f.name.encode() + b"\0" + f.read_bytes())
    spec = {"name": name, "description": f"The StrCVIT authors' released stream ({len(train_files)} chunks), "
                                         f"imported from {release.name} with its {tests} sets.",
            "imported_from": {"release_sha256": digest.hexdigest(), "tests": tests,
                              "rules": [asdict(r) for r in imp.rules]}}
    fp = Fingerprint(spec)
    used: dict[str, Rule] = {}
    chunks_meta, tests_meta = [], []
    with atomic_directory(out, overwrite=overwrite) as tmp:
        chunks = []
        for i, f in enumerate(train_files):
            records = _read_json(f)
            if not isinstance(records, list):
                raise StrcvitError(f"{f}: expected a JSON list of records")
            rows, counts = [], {}
            for k, record in enumerate(records):
                rule, row = imp.train_row(record, i, k, str(f))
                used.setdefault(rule.task, rule)
                if row is not None:
                    rows.append(row)
                    counts[rule.task] = counts.get(rule.task, 0) + 1
            chunks.append((rows, counts))
        for rule in sorted(used.values(), key=lambda r: r.task):
            folder = release / "test" / rule.test_dir
            file = folder / f"{tests}.json"
            if not file.is_file():
                present = ", ".join(sorted(p.name for p in folder.glob("*.json"))) or "nothing"
                raise StrcvitError(f"task {rule.task!r} has no test set {file} (the folder holds {present}); "
                                   f"choose --tests among {', '.join(TEST_FILES)}")
            records = _read_json(file)
            rows = [r for r in (imp.test_row(rec, rule, str(file)) for rec in records) if r is not None]
            if not rows:
                raise StrcvitError(f"{file}: no test record with a readable image under {image_root}")
            write_rows(tmp / test_path(rule.task), rows)
            fp.add_ids(f"test/{rule.task}", [r["id"] for r in rows])
            tests_meta.append({"name": rule.task, "family": rule.family, "metric": rule.metric,
                               "test_size": len(rows), "source": f"release/{rule.test_dir}/{tests}.json",
                               "license": "cc-by-nc-4.0"})
        for i, (rows, counts) in enumerate(chunks):
            write_rows(tmp / chunk_path(i), rows)
            fp.add_ids(f"chunk/{i}", [r["id"] for r in rows])
            chunks_meta.append({"index": i, "size": len(rows), "counts": counts})
        manifest = {
            "schema_version": SCHEMA_VERSION, "name": name, "fingerprint": fp.hexdigest(), "seed": 0,
            "chunk_size": max(c["size"] for c in chunks_meta), "num_chunks": len(chunks_meta),
            "task_ids_visible": False, "spec": spec, "tasks": tests_meta, "chunks": chunks_meta,
            "dropped": {k: v for k, v in sorted(imp.dropped.items()) if v},
            "created_with": library_versions(("strcvit-bench", "datasets", "pyarrow", "pillow")),
        }
        seal_and_write(tmp, manifest)
    return manifest
