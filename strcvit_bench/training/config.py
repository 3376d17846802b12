"""The run configuration: everything that defines a run, recorded in results.json."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from strcvit_bench.models.families import DEFAULT_PROJECTOR, DEFAULT_TARGET


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stream: str
    method: str = "lora"
    method_options: dict[str, Any] = Field(default_factory=dict)
    model: str = "tiny"
    out: str = "runs/run"
    seed: int = Field(0, description="seed of everything random in the run (adapters, batches, dropout)")
    epochs_per_chunk: int = Field(1, ge=1, description="passes over each chunk (the protocol: 1)")
    lr: float | None = Field(None, gt=0, description="first chunk's learning rate, warm-up + cosine "
                                                     "(default: 3e-3 for tiny, 1e-4 for HF models)")
    lr_later: float | None = Field(None, gt=0, description="later chunks' constant learning rate "
                                                           "(default: lr / 4 for tiny, lr / 5 for HF models)")
    warmup: float = Field(0.05, ge=0, lt=1, description="first chunk's warm-up, a fraction of its steps")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (the authors: 0.1)")
    batch_size: int | None = Field(None, ge=1, description="training batch (default: 8 for tiny, 16 for HF models)")
    eval_batch_size: int = Field(64, ge=1, description="rows per generation batch when scoring")
    eval_limit: int | None = Field(None, ge=1, description="score at most this many test rows per task")
    max_chunks: int | None = Field(None, ge=1, description="stop after this many chunks (resumable)")
    projector_lr: float | None = Field(None, gt=0, description="the projector's own learning rate, in every chunk "
                                       "(default: the adapters'; the authors: 1e-5)")
    target_modules: str = DEFAULT_TARGET
    projector_modules: str = DEFAULT_PROJECTOR
    train_projector: bool = Field(True, description="train the vision-to-language projector with the adapters")
    device: str = "auto"
    dtype: str = "auto"
    precision: Literal["fp32", "bf16"] = Field("fp32", description="autocast for training and generation")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimiser step (the batch size is the step's)")
    gradient_checkpointing: bool = False
    compile: bool = Field(False, description="torch.compile the model's forward")
    scoring: Literal["default", "authors"] = Field(
        "default", description="how tasks are scored: our documented metrics, or the StrCVIT authors' released "
        "evaluation rules (docs/metrics.md)")
    pretrain_samples: int | None = Field(None, ge=0, description="tiny model: captions seen in pre-training")
    shipped_base: bool = Field(True, description="tiny model: start from the pre-trained base the package ships "
                               "for the stream, where it ships one (--no-shipped-base: pre-train it here)")

    @field_validator("target_modules", "projector_modules")
    @classmethod
    def _regex(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a valid regular expression ({exc})") from None
        return pattern

    @field_validator("device")
    @classmethod
    def _device(cls, name: str) -> str:
        if name != "auto" and not re.fullmatch(r"cpu|cuda(:\d+)?", name):
            raise ValueError(f"{name!r}: expected auto, cpu, cuda or cuda:N")
        return name

    @property
    def train_batch_size(self) -> int:
        """Small batches give the tiny model enough optimiser steps in a single pass."""
        if self.batch_size is not None:
            return self.batch_size
        return 8 if self.model == "tiny" else 16

    @property
    def first_lr(self) -> float:
        """The authors' 1e-4 / 2e-5 for real models; the 2.2 M-parameter tiny model needs more."""
        if self.lr is not None:
            return self.lr
        return 3e-3 if self.model == "tiny" else 1e-4

    @property
    def later_lr(self) -> float:
        if self.lr_later is not None:
            return self.lr_later
        return self.first_lr / (4 if self.model == "tiny" else 5)

    def identity(self) -> dict[str, Any]:
        """What must match for `--resume` to continue a run (not where it writes or how it evaluates)."""
        # not the stream's path: the same stream may be reached by another path; the runner
        # compares its fingerprint and seal instead; nor where the tiny base comes from (shipped or
        # pre-trained here): the runner compares the base weights' hash instead
        return self.model_dump(exclude={"stream", "out", "max_chunks", "eval_batch_size", "device",
                                        "gradient_checkpointing", "compile", "shipped_base"})
