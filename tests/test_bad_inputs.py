"""The corpus of bad inputs users fed us (`tests/bad_inputs/`, one case a file): each must end
in a clear error with its exit code and message, no traceback, and no lost or stray files.

A case: `args` (the CLI's, with {stream} the shared tiny stream and {tmp} a fresh directory),
`files` to create first, `spec` (the tiny spec with `patch` applied, written to {tmp}/spec.yaml,
optionally in another `encoding` or as `text` given verbatim), `copy` (the tiny stream copied
to {copy}, then `damage`d: a truncated chunk, an edited test answer or edited manifest counts),
`before` (commands that must succeed first), `exit_code`, a `message` fragment, paths that
must be `absent` or `present` afterwards, and `after` (commands that must then succeed: the
failure left nothing in their way).
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from typer.testing import CliRunner

from strcvit_bench.cli import app
from strcvit_bench.streams.format import ARROW_SCHEMA

from .conftest import TINY_SPEC

CASES = sorted((Path(__file__).parent / "bad_inputs").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _model_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("STRCVIT_CACHE", str(tmp_path_factory.getbasetemp() / "model-cache"))


def _patched_spec(patch: dict) -> dict:
    spec = copy.deepcopy(TINY_SPEC)
    for dotted, value in patch.items():
        *path, last = dotted.split(".")
        node = spec
        for key in path:
            node = node[int(key)] if key.isdigit() else node[key]
        node[last] = value
    return spec


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_bad_input(case, tmp_path, tiny_stream, monkeypatch):
    data = yaml.safe_load(case.read_text())
    if data.get("requires") == "no_cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    monkeypatch.chdir(tmp_path)
    fill = lambda text: text.replace("{stream}", str(tiny_stream)).replace("{tmp}", str(tmp_path))  # noqa: E731
    for rel, content in (data.get("files") or {}).items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(content)
    if "spec" in data:
        spec = data["spec"]
        text = spec.get("text") or yaml.safe_dump(_patched_spec(spec.get("patch", {})), allow_unicode=True)
        (tmp_path / "spec.yaml").write_bytes(text.encode(spec.get("encoding", "utf-8")))
    if data.get("copy"):
        shutil.copytree(tiny_stream, tmp_path / "copy")
        _damage(tmp_path / "copy", data.get("damage"))
    fill_copy = lambda text: fill(text).replace("{copy}", str(tmp_path / "copy"))  # noqa: E731
    for before in data.get("before", []):
        done = CliRunner().invoke(app, [fill_copy(a) for a in before])
        assert done.exit_code == 0, (before, done.output, done.exception)
    result = CliRunner().invoke(app, [fill_copy(a) for a in data["args"]])
    output = " ".join(result.output.split())
    assert result.exit_code == data["exit_code"], (result.output, result.exception)
    assert data["message"] in output, output
    assert "Traceback" not in result.output
    for path in data.get("absent", []):
        assert not Path(fill_copy(path)).exists(), path
    for path in data.get("present", []):
        assert Path(fill_copy(path)).exists(), path
    for after in data.get("after", []):
        done = CliRunner().invoke(app, [fill_copy(a) for a in after])
        assert done.exit_code == 0, (after, done.output, done.exception)


def _damage(stream: Path, kind: str | None) -> None:
    """What users do to a stream after building it, on purpose or not."""
    chunk = stream / "data/chunk_000/train-00000-of-00001.parquet"
    if kind == "truncate_chunk":
        chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    elif kind == "edit_test_answer":
        path = stream / "data/test/text.parquet"
        rows = pq.read_table(path).to_pylist()
        rows[0]["answer"] = rows[0]["answer"] + "x"
        pq.write_table(pa.Table.from_pylist(rows, schema=ARROW_SCHEMA), path)
    elif kind == "edit_counts":
        manifest = json.loads((stream / "manifest.json").read_text())
        first = manifest["chunks"][1]["counts"]
        task = next(iter(first))
        first[task] += 1
        (stream / "manifest.json").write_text(json.dumps(manifest))
    elif kind is not None:
        raise ValueError(f"unknown damage {kind!r}")
