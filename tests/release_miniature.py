"""A miniature of the StrCVIT authors' release, in its real layout (chanceche/StrCVIT_dataset):
train/data_NNN.json ms-swift records, test/<Task>/{test,test_proxy}.json, image paths under
<STRCVIT_IMAGE_ROOT>, tiny images in the raw datasets' folders. Three chunks: chunk 1 holds one
task only, ChartQA vanishes after chunk 0, and there are grounding and caption records."""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

ROOT = "<STRCVIT_IMAGE_ROOT>"

# (image folder, task, training records per chunk)
TRAIN = [
    [("COCO2014/val2014/", "vqav2", 3), ("ChartQA/train/", "chartqa", 2), ("COCO2014/train2014/", "grounding", 2),
     ("Textcaps/", "textcaps", 2)],
    [("COCO2014/val2014/", "vqav2", 4)],                      # a single-task chunk
    [("Textcaps/", "textcaps", 2), ("COCO2014/train2014/", "grounding", 1), ("COCO2014/val2014/", "vqav2", 2)],
]
TESTS = {"VQAv2": "COCO2014/val2014/", "ChartQA": "ChartQA/test/", "Grounding": "COCO2014/train2014/",
         "TextCaps": "Textcaps/", "GQA": "GQA/images/"}  # GQA: a test set for a task no chunk has


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (12, 10), color).save(buf, format="PNG")
    return buf.getvalue()


def _image(image_root: Path, folder: str, name: str, k: int) -> str:
    path = image_root / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_png((k * 37 % 256, k * 91 % 256, k * 13 % 256)))
    return f"{ROOT}/{folder}{name}"


def _answer(task: str, k: int) -> str:
    return {"grounding": f"[0.1, 0.2, 0.{k % 9 + 1}, 0.9]", "textcaps": f"a sign that says {k}"}.get(task, str(k))


def write_release(release: Path, image_root: Path) -> dict:
    """Write the miniature; returns what it holds, for the tests to compare with."""
    expected: dict = {"chunks": [], "tests": {}}
    k = 0
    for i, chunk in enumerate(TRAIN):
        records, order = [], []
        for folder, task, n in chunk:
            for _ in range(n):
                k += 1
                path = _image(image_root, folder, f"train_{k:04d}.png", k)
                question = "<image>Please provide the bounding box of the dog." if task == "grounding" else \
                    f"<image>\nQuestion {k}?"
                records.append({"messages": [{"role": "user", "content": question},
                                             {"role": "assistant", "content": _answer(task, k)}], "images": [path]})
                order.append((task, question.replace("<image>", "").strip(), _answer(task, k)))
        # interleave tasks as a stream does: the file's order is the chunk's order
        perm = sorted(range(len(records)), key=lambda j: (j * 7) % len(records))
        records, order = [records[j] for j in perm], [order[j] for j in perm]
        (release / "train").mkdir(parents=True, exist_ok=True)
        (release / "train" / f"data_{i + 1:03d}.json").write_text(json.dumps(records, indent=1))
        expected["chunks"].append(order)
    (release / "train" / "record.json").write_text(json.dumps({"chunks": len(TRAIN)}))
    (release / "manifest.json").write_text(json.dumps({"name": "StrCVIT_dataset", "version": "miniature"}))
    for task_dir, folder in TESTS.items():
        for split in ("test", "test_proxy"):
            records = []
            for q in range(3 if split == "test" else 2):
                k += 1
                path = _image(image_root, folder, f"{split}_{k:04d}.png", k)
                record = {"question_id": 1000 + q, "image": path, "text": f"<image>\nTest question {q}?",
                          "answer": str(q)}
                if task_dir == "Grounding":
                    record.update(answer_bbox=f"[0.1, 0.1, 0.{q + 5}, 0.8]", size=[12, 10])
                if task_dir == "TextCaps":
                    record["answer"] = [f"a caption {q}", f"another caption {q}"]
                records.append(record)
            (release / "test" / task_dir).mkdir(parents=True, exist_ok=True)
            (release / "test" / task_dir / f"{split}.json").write_text(json.dumps(records))
            if split == "test":
                expected["tests"][task_dir] = records
    return expected
