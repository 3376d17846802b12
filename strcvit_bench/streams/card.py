"""The dataset card (README.md) that makes a stream directory a loadable Hub dataset repo."""

from __future__ import annotations

from typing import Any

import yaml

from strcvit_bench.streams.format import TEST_CONFIG, chunk_config, chunk_path, test_path


def card_metadata(manifest: dict[str, Any]) -> dict[str, Any]:
    configs = [
        {"config_name": chunk_config(c["index"]), "data_files": [{"split": "train", "path": chunk_path(c["index"])}]}
        for c in manifest["chunks"]
    ]
    configs.append({
        "config_name": TEST_CONFIG,
        "data_files": [{"split": t["name"], "path": test_path(t["name"])} for t in manifest["tasks"]],
    })
    licenses = sorted({t.get("license") or "other" for t in manifest["tasks"]})
    return {
        "license": licenses[0] if len(licenses) == 1 else "other",
        "task_categories": ["visual-question-answering", "image-text-to-text"],
        "tags": ["strcvit", "continual-learning", "streaming", "instruction-tuning"],
        "configs": configs,
    }


def composition_markdown(manifest: dict[str, Any]) -> str:
    names = [t["name"] for t in manifest["tasks"]]
    lines = ["| chunk | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for c in manifest["chunks"]:
        lines.append(f"| {c['index']} | " + " | ".join(str(c["counts"].get(n, 0)) for n in names) + " |")
    return "\n".join(lines)


def render_card(manifest: dict[str, Any]) -> str:
    meta = yaml.safe_dump(card_metadata(manifest), sort_keys=False, allow_unicode=True)
    tasks = "\n".join(
        f"| {t['name']} | {t['family']} | {t['metric']} | {t['test_size']} | {t.get('source', '')} | "
        f"{t.get('license') or 'other'} |"
        for t in manifest["tasks"]
    )
    name = manifest["name"]
    return f"""---
{meta}---

# {name} — a StrCVIT stream

{manifest["spec"].get("description") or ""}

Built with [strcvit-bench](https://github.com/strcvit-bench/strcvit-bench): {manifest["num_chunks"]} chunks of
{manifest["chunk_size"]} samples, seed {manifest["seed"]}, fingerprint `{manifest["fingerprint"]}`.
Train in chunk order, single pass; evaluate every task after every chunk.

## Tasks

| task | family | metric | test size | source | license |
|---|---|---|---|---|---|
{tasks}

## Composition (rows per task and chunk)

{composition_markdown(manifest)}

## Load

```python
from datasets import load_dataset
chunk0 = load_dataset("<repo or path>", "{chunk_config(0)}", split="train")
tests = load_dataset("<repo or path>", "{TEST_CONFIG}")   # one split per task
```

Rows: `id`, `task`, `image`, `instruction`, `answer` (training target), `answers` (all references),
`chunk` (-1 for test rows). `manifest.json` holds the parsed spec and the per-chunk counts.
"""
