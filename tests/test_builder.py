"""Building streams: determinism, invariants, Hub-compatible layout, atomicity."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
from PIL import Image

from strcvit_bench.errors import SourceError, StrcvitError, StreamError
from strcvit_bench.streams.builder import build_stream
from strcvit_bench.streams.schedule import chunk_counts
from strcvit_bench.streams.spec import parse_spec
from strcvit_bench.streams.stream import open_stream, verify_stream


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def check_invariants(stream_dir: Path) -> None:
    """Every built stream: exact chunk sizes, counts as scheduled, unique ids, no train/test overlap."""
    stream = open_stream(stream_dir)
    spec = parse_spec(stream.manifest["spec"])
    expected = chunk_counts(spec)
    ids: list[str] = []
    test_images: set[str] = set()
    for task in stream.task_names:
        table = stream.read_test(task).to_pylist()
        assert len(table) == spec.task(task).test_size
        assert {r["chunk"] for r in table} == {-1} and {r["task"] for r in table} == {task}
        ids += [r["id"] for r in table]
        test_images |= {hashlib.sha1(r["image"]["bytes"]).hexdigest() for r in table}
    for c in stream.manifest["chunks"]:
        rows = stream.read_chunk(c["index"]).to_pylist()
        assert len(rows) == spec.chunk_size
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["task"]] = counts.get(r["task"], 0) + 1
            assert r["chunk"] == c["index"]
            assert r["answer"] in r["answers"] and r["instruction"]
            assert hashlib.sha1(r["image"]["bytes"]).hexdigest() not in test_images
        assert counts == expected[c["index"]] == c["counts"]
        ids += [r["id"] for r in rows]
    assert len(ids) == len(set(ids))


def test_tiny_stream_invariants(tiny_stream):
    check_invariants(tiny_stream)


def test_same_spec_and_seed_give_identical_bytes(tmp_path, tiny_spec_data):
    a = build_stream(parse_spec(tiny_spec_data), tmp_path / "a", workers=2)
    b = build_stream(parse_spec(tiny_spec_data), tmp_path / "b", workers=0)  # parallelism changes nothing
    assert a["fingerprint"] == b["fingerprint"]
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    tiny_spec_data["seed"] = 8
    c = build_stream(parse_spec(tiny_spec_data), tmp_path / "c")
    assert c["fingerprint"] != a["fingerprint"]
    first = lambda d: pq.read_table(d / "data/chunk_000/train-00000-of-00001.parquet").column("id").to_pylist()  # noqa: E731
    assert first(tmp_path / "c") != first(tmp_path / "a")


def test_loads_offline_with_datasets(tiny_stream):
    configs = datasets.get_dataset_config_names(str(tiny_stream))
    assert configs == ["chunk_000", "chunk_001", "chunk_002", "test"]
    chunk = datasets.load_dataset(str(tiny_stream), "chunk_000", split="train")
    assert len(chunk) == 24
    row = chunk[0]
    assert isinstance(row["image"], Image.Image) and row["image"].size == (32, 32)
    assert isinstance(row["answers"], list) and row["chunk"] == 0
    tests = datasets.load_dataset(str(tiny_stream), "test")
    assert sorted(tests) == ["aerial", "shapes", "text"]


def test_manifest_contract(tiny_stream):
    m = json.loads((tiny_stream / "manifest.json").read_text())
    for key in ("name", "fingerprint", "seed", "chunk_size", "num_chunks", "spec", "tasks", "chunks", "created_with"):
        assert key in m
    assert m["tasks"][0] == {"name": "shapes", "family": "vqa", "metric": "vqa_accuracy", "test_size": 8,
                             "source": "builtin.scenes", "license": "cc0-1.0"}
    assert m["chunks"][1]["counts"] == {"shapes": 16, "text": 8}
    assert "configs:" in (tiny_stream / "README.md").read_text()


def test_refuses_existing_dir_and_overwrites_on_request(tmp_path, tiny_spec_data):
    spec = parse_spec(tiny_spec_data)
    build_stream(spec, tmp_path / "s")
    with pytest.raises(StrcvitError, match="--overwrite"):
        build_stream(spec, tmp_path / "s")
    build_stream(spec, tmp_path / "s", overwrite=True)
    check_invariants(tmp_path / "s")


def _image_folder(root: Path, per_class: int) -> None:
    for k, label in enumerate(("cat", "dog")):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (i * 40, k * 100, 0)).save(root / label / f"{i}.png")


def test_failure_leaves_nothing_behind(tmp_path, tiny_spec_data):
    # a local source with too few rows fails after the builder has started writing
    _image_folder(tmp_path / "imgs", per_class=3)
    tiny_spec_data["tasks"][2]["source"] = {"kind": "local", "format": "imagefolder", "path": str(tmp_path / "imgs")}
    tiny_spec_data["tasks"][2]["instructions"] = ["What animal is this?"]
    tiny_spec_data["tasks"][2]["test_size"] = 2
    # the 2 test rows come from the same folder: held out, not "duplicates"
    with pytest.raises(SourceError, match=r"ran out of rows in chunk 2 .*2 rows held out as test rows; "
                                          r"rows dropped so far: none"):
        build_stream(parse_spec(tiny_spec_data), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["imgs"]


def test_allow_short(tmp_path, tiny_spec_data):
    _image_folder(tmp_path / "imgs", per_class=3)
    tiny_spec_data["tasks"][2]["source"] = {"kind": "local", "format": "imagefolder", "path": str(tmp_path / "imgs")}
    tiny_spec_data["tasks"][2]["instructions"] = ["What animal is this?"]
    tiny_spec_data["tasks"][2]["test_size"] = 2
    tiny_spec_data["allow_short"] = True
    m = build_stream(parse_spec(tiny_spec_data), tmp_path / "out")
    # 6 images, 2 held out for test -> 4 train rows where 12 were scheduled
    assert m["chunks"][2]["counts"]["aerial"] == 4 and m["chunks"][2]["size"] == 16


def test_verify_detects_modified_files(tmp_path, tiny_spec_data):
    build_stream(parse_spec(tiny_spec_data), tmp_path / "s")
    verify_stream(tmp_path / "s")
    a = tmp_path / "s/data/chunk_000/train-00000-of-00001.parquet"
    b = tmp_path / "s/data/chunk_001/train-00000-of-00001.parquet"
    a_bytes = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(a_bytes)
    with pytest.raises(StreamError, match="chunk_000/train-00000-of-00001.parquet changed after"):
        verify_stream(tmp_path / "s")
    # a stream built before content seals: the fingerprint over row ids still catches a swap
    manifest = json.loads((tmp_path / "s/manifest.json").read_text())
    del manifest["content"]
    (tmp_path / "s/manifest.json").write_text(json.dumps(manifest))
    assert not open_stream(tmp_path / "s").sealed
    with pytest.raises(StreamError, match="do not match the manifest"):
        verify_stream(tmp_path / "s")


def test_seal_covers_every_file_and_the_result_deciding_fields(tiny_stream):
    from strcvit_bench.streams.format import SEALED_FIELDS, content_seal, data_files, file_sha256

    stream = verify_stream(tiny_stream)
    files = stream.manifest["content"]["files"]
    assert sorted(files) == sorted(data_files(stream.manifest)) and len(files) == 3 + 3
    assert all(file_sha256(tiny_stream / rel) == digest for rel, digest in files.items())
    assert {"chunks", "tasks", "spec", "fingerprint"} <= set(SEALED_FIELDS)
    edited = json.loads(json.dumps(stream.manifest))
    edited["tasks"][0]["metric"] = "exact_match"
    assert content_seal(edited, files) != stream.manifest["content"]["seal"]
    edited = json.loads(json.dumps(stream.manifest))
    edited["created_with"] = {"strcvit-bench": "another version"}  # not result-deciding
    assert content_seal(edited, files) == stream.manifest["content"]["seal"]


def test_open_stream_errors(tmp_path, tiny_stream):
    with pytest.raises(StreamError, match="manifest.json is missing"):
        open_stream(tmp_path)
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_stream, broken)
    (broken / "data/chunk_001/train-00000-of-00001.parquet").unlink()
    with pytest.raises(StreamError, match="chunk 1 is missing"):
        open_stream(broken)


def _build_with_local_rows(rows: list[dict], tmp_path, spec_data: dict) -> dict:
    """The tiny stream with its third task read from `rows` (a local parquet source)."""
    import pyarrow as pa

    path = tmp_path / "src.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    spec_data["tasks"][2]["source"] = {"kind": "local", "format": "parquet", "path": str(path),
                                       "columns": {"id": "qid"}}
    spec_data["tasks"][2]["test_size"] = 4
    return build_stream(parse_spec(spec_data), tmp_path / "ok")


def test_corrupt_images_skipped_and_counted_or_strict(tmp_path, tiny_spec_data):
    rows = []
    for i in range(30):
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (i * 8, 10, 10)).save(buf, format="PNG")
        data = buf.getvalue() if i % 10 else b"\x89PNG not really an image"
        rows.append({"image": {"bytes": data, "path": None}, "question": f"q{i}?", "answers": [f"a{i}"], "qid": i})
    m = _build_with_local_rows(rows, tmp_path, tiny_spec_data)
    assert m["dropped"]["aerial"]["corrupt_image"] >= 1
    check_invariants(tmp_path / "ok")
    from strcvit_bench.streams import builder

    with pytest.raises(SourceError, match="unreadable image"):
        builder.build_stream(parse_spec(tiny_spec_data), tmp_path / "strict", strict=True)


def test_truncated_image_is_dropped_or_strict_fails(tmp_path, tiny_spec_data):
    """A JPEG cut short passes PIL's verify() (it reads the header, not the scan data) and used
    to reach training and crash it there; the builder now decodes every image."""
    rows = []
    for i in range(30):
        buf = io.BytesIO()
        Image.effect_noise((64, 64), 40 + i).convert("RGB").save(buf, format="JPEG")
        data = buf.getvalue()
        if i % 3 == 0:
            data = data[:1000]
            with Image.open(io.BytesIO(data)) as im:
                im.verify()  # the old check passes it
        rows.append({"image": {"bytes": data, "path": None}, "question": f"q{i}?", "answers": [f"a{i}"], "qid": i})
    m = _build_with_local_rows(rows, tmp_path, tiny_spec_data)
    assert m["dropped"]["aerial"]["corrupt_image"] >= 1
    for rel in ("data/test/aerial.parquet", *[f"data/chunk_{i:03d}/train-00000-of-00001.parquet" for i in range(3)]):
        for row in pq.read_table(tmp_path / "ok" / rel).to_pylist():
            if row["task"] == "aerial":
                Image.open(io.BytesIO(row["image"]["bytes"])).load()
    with pytest.raises(SourceError, match="unreadable image"):
        build_stream(parse_spec(tiny_spec_data), tmp_path / "strict", strict=True)


def test_the_demo_stream_is_the_one_the_committed_leaderboard_was_trained_on(tmp_path):
    """Same spec + seed = same bytes, across changes to how the builder draws, encodes and writes
    (its prefetch, its parquet tables, the drawing helpers): the demo stream built here must be
    the files the committed runs record, byte for byte (their content seal)."""
    from strcvit_bench.streams.spec import load_spec

    root = Path(__file__).resolve().parent.parent
    results = sorted((root / "leaderboard" / "runs").glob("demo__*/tiny/lora__s0/results.json"))
    assert results, "no committed demo run"
    recorded = json.loads(results[0].read_text())["stream"]["content_seal"]
    manifest = build_stream(load_spec(root / "stream_specs" / "demo.yaml"), tmp_path / "demo", workers=2)
    assert manifest["content"]["seal"] == recorded


def test_rows_table_is_the_table_pyarrow_makes_from_the_rows(tmp_path):
    """The builder makes its parquet tables from buffers (no pandas import); they must be the
    tables `pa.Table.from_pylist` makes, and so the same parquet bytes, for every column kind:
    non-ASCII text, empty and several answers, all paths null, and some null (pyarrow's path)."""
    import pyarrow as pa

    from strcvit_bench.streams.format import ARROW_SCHEMA, rows_table

    rows = [{"id": f"s/train/{i}", "task": "t", "image": {"bytes": bytes([i]) * (i + 1), "path": None},
             "instruction": "Qu'est-ce que c'est ? été 北京", "answer": "ä" * i, "answers": ["x"] * i, "chunk": i - 1}
            for i in range(4)]
    for which in (rows, [{**r, "image": {**r["image"], "path": "a.png" if i % 2 else None}}
                         for i, r in enumerate(rows)]):
        made, expected = rows_table(which), pa.Table.from_pylist(which, schema=ARROW_SCHEMA)
        assert made.equals(expected, check_metadata=True)
        pq.write_table(made, tmp_path / "a.parquet")
        pq.write_table(expected, tmp_path / "b.parquet")
        assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
