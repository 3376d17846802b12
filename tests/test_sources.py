"""Sources offline: hf presets on local fixtures with the real column names, local formats,
and the builtin generators' determinism and variety."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import datasets
import pytest
from PIL import Image

from strcvit_bench.data.sources import make_source
from strcvit_bench.data.sources.builtin import FAMILY_MODULES
from strcvit_bench.data.sources.builtin.source import BuiltinSource, BuiltinSourceConfig
from strcvit_bench.data.sources.hf import HFSourceConfig
from strcvit_bench.data.sources.local import LocalSourceConfig
from strcvit_bench.data.sources.tabular import get_path
from strcvit_bench.errors import SourceError
from strcvit_bench.streams.builder import build_stream
from strcvit_bench.streams.spec import parse_spec

from .test_builder import check_invariants


def _img(i: int, size: int = 8) -> Image.Image:
    return Image.new("RGB", (size, size), ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256))


def _spec(task_source: dict, tmp_path: Path, test_size: int = 4, chunk_size: int = 6, num_chunks: int = 2,
          instructions=None) -> dict:
    return {
        "name": "fixture", "seed": 1, "chunk_size": chunk_size, "num_chunks": num_chunks,
        "tasks": [{"name": "t", "family": "vqa", "source": task_source, "metric": "vqa_accuracy",
                   "test_size": test_size, **({"instructions": instructions} if instructions else {})}],
        "schedule": {"tasks": {"t": {}}},
    }


def test_get_path():
    rec = {"answers": [{"answer": "a"}, {"answer": "b"}], "texts": [{"user": "u0"}, {"user": "u1"}], "q": "x"}
    assert get_path(rec, "answers[].answer") == ["a", "b"]
    assert get_path(rec, "texts[1].user") == "u1"
    assert get_path(rec, "q") == "x"


def test_vqav2_preset_on_a_local_copy(tmp_path):
    # VQAv2's Hub columns: several questions per image, answers as a list of dicts
    n_images, per_image = 12, 3
    features = datasets.Features({
        "question_type": datasets.Value("string"), "multiple_choice_answer": datasets.Value("string"),
        "answers": [{"answer": datasets.Value("string"), "answer_confidence": datasets.Value("string"),
                     "answer_id": datasets.Value("int64")}],
        "image_id": datasets.Value("int64"), "answer_type": datasets.Value("string"),
        "question_id": datasets.Value("int64"), "question": datasets.Value("string"), "image": datasets.Image(),
    })
    rows = {k: [] for k in features}
    for i in range(n_images):
        for q in range(per_image):
            rows["question_type"].append("what")
            rows["multiple_choice_answer"].append(f"ans{i}{q}")
            rows["answers"].append([{"answer": f"ans{i}{q}", "answer_confidence": "yes", "answer_id": k}
                                    for k in range(1, 4)])
            rows["image_id"].append(i)
            rows["answer_type"].append("other")
            rows["question_id"].append(i * 10 + q)
            rows["question"].append(f"What is {i}-{q}?")
            rows["image"].append(_img(i))
    repo = tmp_path / "vqav2"
    repo.mkdir()
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(repo / "validation.parquet"))
    spec = _spec({"kind": "hf", "preset": "vqav2", "path": str(repo)}, tmp_path, test_size=3)
    m = build_stream(parse_spec(spec), tmp_path / tmp_path.name)
    check_invariants(tmp_path / tmp_path.name)
    # test rows come from the validation split; train rows sharing their images are excluded
    assert m["dropped"]["t"]["shares_test_image"] >= 1
    r = datasets.load_dataset(str(tmp_path / tmp_path.name), "chunk_000", split="train")[0]
    assert r["id"].startswith("vqav2/validation/") and r["answers"] == [r["answer"]] * 3


def test_imagenet_preset_label_names_become_answers(tmp_path):
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=["tench, Tinca tinca", "goldfish"])})
    repo = tmp_path / "imagenet"
    repo.mkdir()
    for split, n in (("train", 20), ("validation", 6)):
        datasets.Dataset.from_dict({"image": [_img(i + (100 if split == "train" else 0)) for i in range(n)],
                                    "label": [i % 2 for i in range(n)]}, features=features
                                   ).to_parquet(str(repo / f"{split}.parquet"))
    spec = _spec({"kind": "hf", "preset": "imagenet1k", "path": str(repo)}, tmp_path,
                 instructions=["What is in this image?"])
    build_stream(parse_spec(spec), tmp_path / tmp_path.name)
    rows = datasets.load_dataset(str(tmp_path / tmp_path.name), "test", split="t")
    answers = {tuple(r["answers"]) for r in rows}
    assert answers == {("tench", "Tinca tinca"), ("goldfish",)}
    assert {r["answer"] for r in rows} == {"tench", "goldfish"}
    assert {r["id"].split("/")[1] for r in rows} == {"validation"}


def test_ocrvqa_preset_explodes_question_lists(tmp_path):
    repo = tmp_path / "ocrvqa"
    repo.mkdir()
    for split, n in (("train", 10), ("test", 4)):
        datasets.Dataset.from_dict({
            "image": [_img(i + (50 if split == "test" else 0)) for i in range(n)],
            "image_id": [f"{split}{i}" for i in range(n)],
            "questions": [["Who wrote this book?", "What is the title?"] for _ in range(n)],
            "answers": [[f"author{i}", f"title{i}"] for i in range(n)],
        }, features=datasets.Features({"image": datasets.Image(), "image_id": datasets.Value("string"),
                                       "questions": [datasets.Value("string")],
                                       "answers": [datasets.Value("string")]})
        ).to_parquet(str(repo / f"{split}.parquet"))
    spec = parse_spec(_spec({"kind": "hf", "preset": "ocrvqa", "path": str(repo)}, tmp_path))
    build_stream(spec, tmp_path / tmp_path.name)
    rows = datasets.load_dataset(str(tmp_path / tmp_path.name), "chunk_000", split="train")
    assert all(r["id"].rsplit("_", 1)[1] in ("0", "1") for r in rows)
    assert all(r["answer"].startswith("author") == r["instruction"].startswith("Who") for r in rows)


def test_scienceqa_preset_choices_and_missing_images(tmp_path):
    repo = tmp_path / "sqa"
    repo.mkdir()
    for split, n in (("train", 16), ("test", 8)):
        datasets.Dataset.from_dict({
            "image": [None if i % 4 == 0 else _img(i + (40 if split == "test" else 0)) for i in range(n)],
            "question": [f"Which is hotter {i}?" for i in range(n)],
            "choices": [["sun", "ice"] for _ in range(n)],
            "answer": [0 for _ in range(n)],
        }, features=datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"),
                                       "choices": [datasets.Value("string")], "answer": datasets.Value("int64")})
        ).to_parquet(str(repo / f"{split}.parquet"))
    spec = _spec({"kind": "hf", "preset": "scienceqa", "path": str(repo)}, tmp_path,
                 instructions=["{question} Options: {options}"])
    m = build_stream(parse_spec(spec), tmp_path / tmp_path.name)
    assert m["dropped"]["t"]["no_image"] >= 1
    r = datasets.load_dataset(str(tmp_path / tmp_path.name), "chunk_000", split="train")[0]
    assert r["instruction"].endswith("Options: A. sun B. ice") and r["answer"] == "sun"


def test_missing_column_is_named(tmp_path):
    repo = tmp_path / "chart"
    repo.mkdir()
    datasets.Dataset.from_dict({"image": [_img(i) for i in range(4)], "question": ["q"] * 4, "label": [["1"]] * 4},
                               features=datasets.Features({"image": datasets.Image(),
                                                           "question": datasets.Value("string"),
                                                           "label": [datasets.Value("string")]})
                               ).to_parquet(str(repo / "train.parquet"))
    spec = _spec({"kind": "hf", "preset": "chartqa", "path": str(repo), "test_split": None}, tmp_path)
    with pytest.raises(SourceError, match=r"column 'query' \(columns.question\) not found.*label, question"):
        build_stream(parse_spec(spec), tmp_path / tmp_path.name)
    assert not (tmp_path / tmp_path.name).exists()


def test_unloadable_hub_source_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    src = make_source(HFSourceConfig.model_validate({"kind": "hf", "path": "nobody/nothing-here"}),
                      stream_seed=0, task_name="t", base_dir=None)
    with pytest.raises(SourceError, match="could not be loaded"):
        next(src.iter_rows("train", 0))


def test_local_jsonl_with_image_folder(tmp_path):
    (tmp_path / "images").mkdir()
    lines = []
    for i in range(20):
        _img(i).save(tmp_path / "images" / f"{i}.png")
        lines.append(json.dumps({"qid": f"q{i}", "img": f"{i}.png", "q": f"Color {i}?", "a": [f"c{i}"]}))
    (tmp_path / "data.jsonl").write_text("\n".join(lines))
    src = {"kind": "local", "format": "jsonl", "path": "data.jsonl", "image_root": "images",
           "columns": {"image": "img", "question": "q", "answers": "a", "id": "qid"}}
    spec = parse_spec(_spec(src, tmp_path))
    build_stream(spec, tmp_path / tmp_path.name, base_dir=tmp_path)  # relative paths resolve against the spec's folder
    check_invariants(tmp_path / tmp_path.name)
    r = datasets.load_dataset(str(tmp_path / tmp_path.name), "chunk_000", split="train")[0]
    assert r["id"].startswith("data/train/q") and r["answer"] == "c" + r["id"].split("/q")[1]


def test_llava_and_swift_conversation_files(tmp_path):
    (tmp_path / "img").mkdir()
    llava, swift = [], []
    for i in range(16):
        _img(i).save(tmp_path / "img" / f"{i}.png")
        llava.append({"id": f"l{i}", "image": f"{i}.png", "conversations": [
            {"from": "human", "value": f"<image>\nWhat is item {i}?"}, {"from": "gpt", "value": f"item{i}"}]})
        swift.append({"messages": [{"role": "user", "content": f"<image>What is item {i}?"},
                                   {"role": "assistant", "content": f"item{i}"}], "images": [f"{i}.png"]})
    (tmp_path / "llava.json").write_text(json.dumps(llava))
    (tmp_path / "swift.jsonl").write_text("\n".join(json.dumps(s) for s in swift))
    for fmt, name in (("llava", "llava.json"), ("swift", "swift.jsonl")):
        src = LocalSourceConfig.model_validate({"kind": "local", "format": fmt, "path": str(tmp_path / name),
                                                "image_root": str(tmp_path / "img")})
        rows = list(make_source(src, stream_seed=0, task_name="t", base_dir=None).iter_rows("train", 3))
        assert len(rows) == 16
        r = rows[0]
        assert r.question.startswith("What is item") and "<image>" not in r.question
        assert r.target == "item" + r.question.split("item ")[1].rstrip("?")


@pytest.mark.parametrize("generator", sorted(FAMILY_MODULES))
def test_builtin_generators_are_deterministic_and_varied(generator):
    cfg = BuiltinSourceConfig(kind="builtin", generator=generator, image_size=40)
    a = BuiltinSource(cfg, default_seed=5)
    b = BuiltinSource(cfg, default_seed=5)
    ra = [a.make_row("train", i) for i in range(200)]
    rb = [b.make_row("train", i) for i in range(3)]
    assert [r.question for r in ra[:3]] == [r.question for r in rb]
    assert ra[0].image.tobytes() == rb[0].image.tobytes() and ra[0].image.size == (40, 40)
    # variety: many distinct answers and question phrasings, no answer dominating
    answers = Counter(r.target for r in ra)
    questions = {r.question for r in ra}
    assert len(answers) >= 8 and len(questions) >= (3 if generator == "captions" else 4)
    assert answers.most_common(1)[0][1] < 0.5 * len(ra)
    assert len({r.image.tobytes() for r in ra}) == len(ra)
    # train and test splits draw different rows
    assert a.make_row("test", 0).image.tobytes() != ra[0].image.tobytes()


def test_question_types_restrict_the_questions():
    cfg = BuiltinSourceConfig(kind="builtin", generator="remote_sensing", question_types=["road"])
    src = BuiltinSource(cfg, default_seed=1)
    assert {src.make_row("train", i).question for i in range(30)} == {"Is there a road in the image?"}
    with pytest.raises(ValueError, match="allowed: road"):
        BuiltinSourceConfig(kind="builtin", generator="remote_sensing", question_types=["rivers"])


def test_jitter_is_its_formula():
    """c + (byte · (2·amount + 1) >> 8) − amount, clamped to 0..255, one byte of a 24-bit draw per
    channel (red the low byte): hand-computed."""
    from strcvit_bench.data.sources.builtin.render import jitter

    class Bits:
        def __init__(self, value):
            self.value = value

        def getrandbits(self, k):
            assert k == 24
            return self.value

    # amount 18, span 37: byte 0x80 → +18 − 18, 0x00 → −18, 0xFF → +36 − 18
    assert jitter((10, 250, 128), Bits(0xFF0080)) == (10, 232, 146)
    assert jitter((5, 250, 0), Bits(0x00FF00)) == (0, 255, 0)  # clamped both ways
    assert jitter((100, 100, 100), Bits(0x402010), amount=8) == (100 + (16 * 17 >> 8) - 8,
                                                                  100 + (32 * 17 >> 8) - 8,
                                                                  100 + (64 * 17 >> 8) - 8)
