"""What the trainer, the evaluator and the methods need from a model, whatever its family.

A `ModelBundle` pairs the `nn.Module` with an `Encoder` that turns stream rows into tensors.
Methods only ever see the module and the encoded batch, so a method written against the tiny
default runs unchanged on Llava, Qwen2-VL or Idefics3.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
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


@functools.cache
def _keeps_logits(forward_owner: type) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(forward_owner.forward).parameters
    except (TypeError, ValueError):
        return False


def loss_inputs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`model_inputs` for a forward that only needs the answer loss: the output layer runs on
    the positions the loss reads, not on every image and instruction token. `model` is the
    unwrapped module (not its DDP wrapper): its forward's signature decides.

    Why: the logits of a prompt position are computed, soft-maxed, and back-propagated as zeros.
    On the tiny model that is 6-10 % of a training step; with a real vocabulary (Qwen2-VL:
    151,936 tokens) the output layer is the largest matmul of the step. The kept positions are
    one contiguous range shared by the batch (transformers' `logits_to_keep`, for the families
    whose forward takes it), from the position before the first answer token of any row to the
    last, and the labels are cut to the same range, so every kept logit has the target it had.
    The gradients are the same bits (the dropped rows contributed exact zeros; only a trained
    output layer's own gradient, a sum over the rows, could round differently); the loss's value
    can differ in its last bit, its sum running over fewer ignored terms.
    """
    inputs = model_inputs(batch)
    labels = inputs.get("labels")
    if labels is None or labels.ndim != 2 or not _keeps_logits(type(model)):
        return inputs
    answered = (labels[:, 1:] != -100).any(0).nonzero().flatten()
    if answered.numel() == 0:
        return inputs
    start, end = int(answered[0]), int(answered[-1]) + 2  # position p predicts labels[p + 1]
    if end - start >= labels.shape[1]:
        return inputs
    inputs["labels"] = labels[:, start:end]
    inputs["logits_to_keep"] = torch.arange(start, end, device=labels.device)
    return inputs
