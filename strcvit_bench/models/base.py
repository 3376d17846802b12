"""What the trainer, the evaluator and the methods need from a model, whatever its family.

A `ModelBundle` pairs the `nn.Module` with an `Encoder` that turns stream rows into tensors.
Methods only ever see the module and the encoded batch, so a method written against the tiny
default runs unchanged on Llava, Qwen2-VL or Idefics3.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from PIL import Image

from strcvit_bench.models.families import DEFAULT_PROJECTOR, DEFAULT_TARGET, Family, family_of

Rows = list[dict[str, Any]]  # stream rows ({id, image, instruction, answer, ...}) as methods and encoders see them


class Encoder(Protocol):
    """Turns rows ({image, instruction, answer, ...}) into model inputs."""

    pad_token_id: int
    eos_token_id: int

    def train_batch(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Inputs with `labels` (-100 outside the answer) plus `instruction_ids`/`instruction_mask`."""

    def prompt_batch(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Left-padded prompts for generation, plus `instruction_ids`/`instruction_mask`."""

    def decode(self, token_ids: torch.Tensor) -> list[str]:
        """Generated continuations (prompt excluded) to answer strings."""


@dataclass
class ModelBundle:
    model: torch.nn.Module
    encoder: Encoder
    name: str
    family: str
    target_modules: str = DEFAULT_TARGET
    projector_modules: str = DEFAULT_PROJECTOR
    max_new_tokens: int = 16
    info: dict[str, Any] = field(default_factory=dict)

    def family_info(self) -> Family:
        return family_of(self.family)

    def input_embeddings(self) -> torch.nn.Embedding:
        return self.model.get_input_embeddings()


def to_pil(image: Any) -> Image.Image:
    """A stream row's image (datasets' {bytes, path} dict, bytes or PIL) as an RGB PIL image."""
    if isinstance(image, dict):
        image = image.get("bytes") or image.get("path")
    if isinstance(image, (bytes, bytearray)):
        image = Image.open(io.BytesIO(image))
    elif isinstance(image, str):
        image = Image.open(image)
    return image.convert("RGB")


MODEL_INPUT_KEYS_EXCLUDED = ("instruction_ids", "instruction_mask")


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for `precision="bf16"` (CPU and GPU alike); nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def answer_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens the causal-LM loss averages over (labels shifted by one, -100 ignored)."""
    return int((batch["labels"][:, 1:] != -100).sum())


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch without the routing side-inputs, ready for `model(**...)`."""
    return {k: v for k, v in batch.items() if k not in MODEL_INPUT_KEYS_EXCLUDED}
