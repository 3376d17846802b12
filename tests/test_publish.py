"""Publishing without network: the exact upload folder loads back row for row, byte for byte;
the card parses; the upload call is checked against a mocked HfApi; bad streams are refused."""

from __future__ import annotations

import copy
import json
import shutil
from unittest import mock

import datasets
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from strcvit_bench.cli import app
from strcvit_bench.errors import StrcvitError
from strcvit_bench.share.publish import UPLOAD_PATTERNS, prepare, publish
from strcvit_bench.streams.builder import build_stream
from strcvit_bench.streams.spec import parse_spec

from .conftest import TINY_SPEC

runner = CliRunner()


def test_dry_run_folder_round_trips(tmp_path, tiny_stream):
    folder = tmp_path / "upload"
    r = runner.invoke(app, ["publish", str(tiny_stream), "--repo", "me/tiny", "--dry-run", "--folder", str(folder)])
    assert r.exit_code == 0, r.output
    assert "manifest.json" in r.output and "README.md" in r.output and "total" in r.output
    assert datasets.get_dataset_config_names(str(folder)) == ["chunk_000", "chunk_001", "chunk_002", "test"]
    for c in range(3):
        name = f"data/chunk_{c:03d}/train-00000-of-00001.parquet"
        original = pq.read_table(tiny_stream / name).to_pylist()
        loaded = datasets.load_dataset(str(folder), f"chunk_{c:03d}", split="train").cast_column(
            "image", datasets.Image(decode=False))
        assert len(loaded) == len(original)
        for a, b in zip(original, loaded, strict=True):
            assert a["id"] == b["id"] and a["answers"] == b["answers"] and a["instruction"] == b["instruction"]
            assert a["image"]["bytes"] == b["image"]["bytes"]
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(folder / "README.md")
    assert card.data.license == "cc0-1.0" and len(card.data.configs) == 4
    text = (folder / "README.md").read_text()
    assert json.loads((tiny_stream / "manifest.json").read_text())["fingerprint"] in text
    assert "## Spec" in text and "composition.png" in text and (folder / "composition.png").is_file()


def test_upload_call_with_a_mocked_api(tmp_path, tiny_stream):
    api = mock.Mock()
    publish(tiny_stream, "me/tiny", folder=tmp_path / "up", private=True, revision="v1", api=api)
    api.create_repo.assert_called_once_with("me/tiny", repo_type="dataset", private=True, exist_ok=True)
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs["repo_id"] == "me/tiny" and kwargs["repo_type"] == "dataset" and kwargs["revision"] == "v1"
    assert kwargs["folder_path"] == str(tmp_path / "up") and kwargs["allow_patterns"] == UPLOAD_PATTERNS


def test_no_token_is_a_clear_error(tmp_path, tiny_stream, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    r = runner.invoke(app, ["publish", str(tiny_stream), "--repo", "me/tiny", "--folder", str(tmp_path / "u")])
    assert r.exit_code == 2 and "no Hugging Face token" in r.output


def test_refuses_modified_streams_and_closed_licences(tmp_path, tiny_stream):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_stream, broken)
    a, b = (broken / f"data/chunk_00{i}/train-00000-of-00001.parquet" for i in (0, 1))
    a_bytes = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(a_bytes)
    r = runner.invoke(app, ["publish", str(broken), "--repo", "me/x", "--dry-run"])
    assert r.exit_code == 2 and "changed after the stream was built" in r.output
    relicensed = tmp_path / "relicensed"  # an edited licence breaks the seal
    shutil.copytree(tiny_stream, relicensed)
    m = json.loads((relicensed / "manifest.json").read_text())
    m["tasks"][1]["license"] = "cc-by-4.0"
    (relicensed / "manifest.json").write_text(json.dumps(m))
    r = runner.invoke(app, ["publish", str(relicensed), "--repo", "me/x", "--dry-run"])
    assert r.exit_code == 2 and "was edited after the build" in r.output
    spec = copy.deepcopy(TINY_SPEC)  # a stream whose source declares a closed licence
    spec["tasks"][1]["source"]["license"] = "other"
    closed = tmp_path / "closed"
    build_stream(parse_spec(spec), closed)
    with pytest.raises(StrcvitError, match=r"task 'text' \(source builtin.ocr, license other\)"):
        prepare(closed, tmp_path / "up")


def test_build_stream_from_a_published_folder(tmp_path, tiny_stream):
    folder = prepare(tiny_stream, tmp_path / "up")
    out = tmp_path / "fetched"
    r = runner.invoke(app, ["build-stream", "--from-hub", str(folder), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "manifest.json").read_text())["fingerprint"] in r.output
    r = runner.invoke(app, ["build-stream"])
    assert r.exit_code == 2 and "one of the two" in r.output


def test_dry_run_never_deletes_what_it_did_not_create(tmp_path, tiny_stream):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    r = runner.invoke(app, ["publish", str(tiny_stream), "--repo", "me/tiny", "--dry-run", "--folder", str(mine)])
    assert r.exit_code == 2 and "not an upload folder" in r.output.replace("\n", " ")
    assert (mine / "thesis.tex").read_text() == "years of work"
    # the stream's own parent (or the stream) as the folder: refused, the stream intact
    r = runner.invoke(app, ["publish", str(tiny_stream), "--repo", "me/tiny", "--dry-run",
                            "--folder", str(tiny_stream.parent)])
    assert r.exit_code == 2 and (tiny_stream / "manifest.json").is_file()
    # an earlier upload folder of the same stream is replaced, as before
    up = tmp_path / "up"
    for _ in range(2):
        r = runner.invoke(app, ["publish", str(tiny_stream), "--repo", "me/tiny", "--dry-run", "--folder", str(up)])
        assert r.exit_code == 0, r.output


@pytest.mark.parametrize("repo", ["not a repo", "me", "me/", "/x", "a/b/c", "me/../x"])
def test_bad_repo_ids_are_usage_errors(tmp_path, tiny_stream, repo):
    r = runner.invoke(app, ["publish", str(tiny_stream), "--repo", repo, "--dry-run", "--folder", str(tmp_path / "u")])
    assert r.exit_code == 2 and "not a Hub repository id" in r.output and not (tmp_path / "u").exists()
