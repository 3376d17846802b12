from __future__ import annotations

import os

# the suite never touches the network: fail fast instead of waiting on Hub time-outs
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import copy  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

TINY_SPEC: dict[str, Any] = {
    "name": "tiny",
    "seed": 7,
    "chunk_size": 24,
    "num_chunks": 3,
    "tasks": [
        {"name": "shapes", "family": "vqa", "source": {"kind": "builtin", "generator": "scenes", "image_size": 32},
         "instructions": ["{question}", "Q: {question}"], "metric": "vqa_accuracy", "test_size": 8},
        {"name": "text", "family": "ocr", "source": {"kind": "builtin", "generator": "ocr", "image_size": 32},
         "metric": "anls", "test_size": 8},
        {"name": "aerial", "family": "remote_sensing",
         "source": {"kind": "builtin", "generator": "remote_sensing", "image_size": 32},
         "metric": "exact_match", "test_size": 8},
    ],
    "schedule": {"tasks": {
        "shapes": {"start": 0, "end": 1},
        "text": {"start": 1, "profile": "ramp_up"},
        "aerial": {"start": 2},
    }},
}


@pytest.fixture
def tiny_spec_data() -> dict[str, Any]:
    return copy.deepcopy(TINY_SPEC)


def write_spec(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def tiny_stream(tmp_path_factory) -> Path:
    """One small built stream shared by read-only tests."""
    from strcvit_bench.streams.builder import build_stream
    from strcvit_bench.streams.spec import parse_spec

    out = tmp_path_factory.mktemp("streams") / "tiny"
    build_stream(parse_spec(copy.deepcopy(TINY_SPEC)), out)
    return out


@pytest.fixture(autouse=True, scope="session")
def _fast_stream_shutdown():
    """datasets sleeps 5 s whenever a streaming iterator over local parquet is closed early
    (a guard for apache/arrow#45214); fixtures are tiny, so a short grace period is enough."""
    import datasets.config

    old = datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN
    datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0.05
    yield
    datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = old
