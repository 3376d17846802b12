"""The `hf` source kind: any Hugging Face dataset, with presets for the field's datasets.

Large sources are read in streaming mode, so building a stream never downloads or holds a
whole source; a shuffle buffer gives a seeded order. Presets carry the datasets' actual Hub
column names; every field of a preset can be overridden in the spec.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from strcvit_bench.data.sources.base import ColumnMap, StrictModel, Which, quiet_datasets
from strcvit_bench.data.sources.tabular import TabularSource
from strcvit_bench.errors import SourceError

# Each preset: Hub id, config, splits, columns, license. `test_split: null` means the source
# has one labelled split and test rows are held out of it (by image, so no image is shared).
PRESETS: dict[str, dict[str, Any]] = {
    "vqav2": {
        "path": "lmms-lab/VQAv2", "split": "validation", "test_split": None,
        "columns": {"image": "image", "question": "question", "answers": "answers[].answer",
                    "answer": "multiple_choice_answer", "id": "question_id"},
        "license": "cc-by-4.0",
    },
    "gqa": {
        "path": "lmms-lab/GQA", "name": "train_balanced_instructions", "split": "train",
        "test_name": "testdev_balanced_instructions", "test_split": "testdev",
        "columns": {"image": "image", "question": "question", "answers": None, "answer": "answer", "id": "id"},
        "image_join": {"name": "train_balanced_images", "test_name": "testdev_balanced_images",
                       "key": "imageId", "id_column": "id", "image_column": "image"},
        "license": "cc-by-4.0",
    },
    "textvqa": {
        "path": "lmms-lab/textvqa", "split": "train", "test_split": "validation",
        "columns": {"image": "image", "question": "question", "answers": "answers", "id": "question_id"},
        "license": "cc-by-4.0",
    },
    "ocrvqa": {
        "path": "howard-hou/OCR-VQA", "split": "train", "test_split": "test",
        "columns": {"image": "image", "question": "questions", "answers": "answers", "id": "image_id"},
        "explode": ["questions", "answers"],
        "license": "other",
    },
    "textcaps": {
        "path": "lmms-lab/TextCaps", "split": "train", "test_split": "val",
        "columns": {"image": "image", "question": None, "answers": "reference_strs",
                    "answer": "caption_str", "id": "caption_id"},
        "license": "cc-by-4.0",
    },
    "chartqa": {
        "path": "HuggingFaceM4/ChartQA", "split": "train", "test_split": "test",
        "columns": {"image": "image", "question": "query", "answers": "label", "id": None},
        "license": "gpl-3.0",
    },
    "rsvqa_lr": {
        "path": "dmarsili/RSVQA-LR-2k", "split": "train", "test_split": "test",
        "columns": {"image": "image", "question": "question", "answers": None, "answer": "answer", "id": None},
        "license": "cc-by-4.0",
    },
    "imagenet1k": {
        "path": "ILSVRC/imagenet-1k", "split": "train", "test_split": "validation",
        "columns": {"image": "image", "question": None, "answers": None, "label": "label", "id": None},
        "license": "other",
    },
    "places365": {
        "path": "Andron00e/Places365-custom", "split": "train", "test_split": None,
        "columns": {"image": "image", "question": None, "answers": None, "label": "labels", "id": None},
        "license": "other",
    },
    "scienceqa": {
        "path": "derek-thomas/ScienceQA", "split": "train", "test_split": "test",
        "columns": {"image": "image", "question": "question", "answers": None, "choices": "choices",
                    "answer_index": "answer", "id": None},
        "license": "cc-by-nc-sa-4.0",
    },
}


class ImageJoin(StrictModel):
    """Images stored in a separate config (GQA): rows carry a key into it."""

    name: str
    test_name: str | None = None
    key: str
    id_column: str = "id"
    image_column: str = "image"


class HFSourceConfig(StrictModel):
    kind: Literal["hf"]
    preset: Literal[tuple(PRESETS)] | None = None  # type: ignore[valid-type]
    path: str | None = None
    name: str | None = None
    revision: str | None = None
    split: str = "train"
    test_split: str | None = None
    test_name: str | None = None
    columns: ColumnMap = Field(default_factory=ColumnMap)
    explode: list[str] = Field(default_factory=list)
    image_join: ImageJoin | None = None
    streaming: bool = True
    shuffle_buffer: int = Field(10_000, ge=0)
    license: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("preset") not in PRESETS:
            return data
        merged = dict(PRESETS[data["preset"]])
        for key, value in data.items():
            if key == "columns" and isinstance(value, dict):
                merged["columns"] = {**merged.get("columns", {}), **value}
            else:
                merged[key] = value
        return merged

    @model_validator(mode="after")
    def _needs_path(self) -> HFSourceConfig:
        if self.path is None:
            raise ValueError(f"an hf source needs `path` (a Hub id or local dataset dir) or `preset` "
                             f"(one of: {', '.join(PRESETS)})")
        return self


class HFSource(TabularSource):
    Config = HFSourceConfig

    def __init__(self, config: HFSourceConfig):
        super().__init__()
        self.config = config
        self.name = config.path.rstrip("/").split("/")[-1] if config.path else "hf"
        if config.name:
            self.name += f".{config.name}"
        self.license = config.license
        self.columns = config.columns
        self.explode = tuple(config.explode)
        self.streaming = config.streaming
        self.shuffle_buffer = config.shuffle_buffer
        self._images: dict[str, tuple[Any, dict[Any, int]]] = {}

    def split_name(self, which: Which) -> str:
        if which == "test" and self.config.test_split is not None:
            return self.config.test_split
        return self.config.split

    def _config_name(self, which: Which) -> str | None:
        if which == "test" and self.config.test_split is not None and self.config.test_name:
            return self.config.test_name
        return self.config.name

    def _load(self, name: str | None, split: str, streaming: bool) -> Any:
        datasets = quiet_datasets()

        try:
            return datasets.load_dataset(self.config.path, name, split=split, streaming=streaming,
                                         revision=self.config.revision)
        except Exception as exc:  # datasets raises many types: not found, offline, bad split
            raise SourceError(
                f"source {self.config.path!r} (config {name!r}, split {split!r}) could not be loaded: "
                f"{type(exc).__name__}: {exc}. Check the Hub id, config and split names, your network "
                f"or HF_TOKEN for gated datasets."
            ) from None

    def open(self, which: Which) -> Any:
        ds = self._load(self._config_name(which), self.split_name(which), self.config.streaming)
        if self.config.image_join is not None:
            self._attach_images(which)
        return ds

    def _attach_images(self, which: Which) -> None:
        datasets = quiet_datasets()

        join = self.config.image_join
        assert join is not None
        name = join.test_name if which == "test" and join.test_name else join.name
        split = self.split_name(which)
        images = self._load(name, split, streaming=False)
        images = images.cast_column(join.image_column, datasets.Image(decode=False))
        index = {key: i for i, key in enumerate(images[join.id_column])}
        self._images[which] = (images, index)
        self._join_current = which

    def records_to_rows(self, record: dict[str, Any]):
        join = self.config.image_join
        if join is not None:
            images, index = self._images[self._join_current]
            pos = index.get(record.get(join.key))
            record = {**record, self.columns.image: None if pos is None else images[pos][join.image_column]}
        yield from super().records_to_rows(record)

    def check_columns(self, available: list[str] | None) -> None:
        if self.config.image_join is not None and available is not None:
            available = [*available, self.columns.image]
        super().check_columns(available)
