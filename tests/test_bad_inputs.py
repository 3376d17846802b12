"""The corpus of bad inputs users fed us (`tests/bad_inputs/`, one case a file): each must end
in a clear error with its exit code and message, no traceback, and no lost or stray files.

A case: `args` (the CLI's, with {stream} the shared tiny stream and {tmp} a fresh directory),
`files` to create first, `spec` (the tiny spec with `patch` applied, written to {tmp}/spec.yaml),
`exit_code`, a `message` fragment, and paths that must be `absent` or `present` afterwards.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from strcvit_bench.cli import app

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
        (tmp_path / "spec.yaml").write_text(yaml.safe_dump(_patched_spec(data["spec"].get("patch", {}))))
    result = CliRunner().invoke(app, [fill(a) for a in data["args"]])
    output = " ".join(result.output.split())
    assert result.exit_code == data["exit_code"], (result.output, result.exception)
    assert data["message"] in output, output
    assert "Traceback" not in result.output
    for path in data.get("absent", []):
        assert not Path(fill(path)).exists(), path
    for path in data.get("present", []):
        assert Path(fill(path)).exists(), path
