"""What a deployed model sees of a sample, for methods that need a task identity in a stream.

Task-incremental methods key their routers or experts by task (BranchLoRA's task keys, CRAM's
centroids). A stream hides task labels, so those methods derive identity from two views every
vision-language model computes anyway:

- text: the instruction's all-MiniLM-L6-v2 sentence embedding (the frozen encoder SMoLoRA
  routes on; CRAM's release uses CLIP's text tower the same way), or the mean of the LLM's
  own input-embedding rows over the instruction's tokens (StrLoRA's representation);
- image: the mean of the frozen vision tower's features as they enter the projector.

Both views must stay put while the model trains: keys and centroids computed in chunk 1 are
compared with samples in chunk 20. The projector is trained, so its output (the decoder's
image embeddings) drifts from chunk to chunk; its input does not (the vision tower is frozen,
and CRAM's authors route on a separate frozen CLIP tower for the same reason). The image view
is read by a forward pre-hook on the projector, inside the model's own forward and before the
first adapted layer runs, so routing can use it at no extra compute. For a pass over many
rows (a chunk's clustering) `SampleViews.rows` stops each forward right after that hook.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from strcvit_bench.adapters.routing import masked_mean
from strcvit_bench.errors import StrcvitError
from strcvit_bench.models.base import ModelBundle, Rows, model_inputs
from strcvit_bench.models.families import projector_module_name


class _Captured(Exception):
    """Raised by the hook to end a forward whose only purpose was to read the image features."""


def image_token_id(model: torch.nn.Module) -> int | None:
    cfg = model.config
    for key in ("image_token_id", "image_token_index"):
        value = getattr(cfg, key, None)
        if isinstance(value, int):
            return value
    return None


def text_view(bundle: ModelBundle, batch: dict[str, torch.Tensor], masked: bool = True) -> torch.Tensor:
    """(B, d) float32: mean of the LLM's input-embedding rows over the instruction's tokens
    (StrLoRA's instruction representation). `masked=False` averages the padding rows too, as
    the StrLoRA authors' training code does."""
    emb = bundle.input_embeddings()
    with torch.no_grad():
        vectors = emb(batch["instruction_ids"]).float()
        return masked_mean(vectors, batch["instruction_mask"]) if masked else vectors.mean(1)


def pool_vision_features(features: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, d) per-sample mean of the projector's input, whatever the family's layout:
    (images × crops, patches, d) for Llava and Idefics3, or all patches flattened (patches, d)
    with `image_grid_thw` giving each image's share, for Qwen2-VL."""
    B = batch["input_ids"].shape[0]
    x = features.detach().float()
    if x.dim() == 3 and x.shape[0] % B == 0:
        return x.reshape(B, -1, x.shape[-1]).mean(1)
    if x.dim() == 2 and "image_grid_thw" in batch:
        counts = batch["image_grid_thw"].prod(-1).tolist()
        if len(counts) == B and sum(counts) == x.shape[0]:
            return torch.stack([part.mean(0) for part in x.split(counts)])
    raise StrcvitError(f"cannot split vision features of shape {tuple(x.shape)} into {B} samples "
                       f"(one image per sample is expected)")


class ImageTap:
    """Hands `listener` the (B, d) image view of each batch before the language model runs.

    Decoding steps do not run the vision path, so whatever the method decided on the prompt
    stays in force for the generated tokens.
    """

    def __init__(self, bundle: ModelBundle, listener: Callable[[torch.Tensor], None]):
        family = bundle.family_info()
        name = projector_module_name(bundle.model, family)
        if name is None:
            raise StrcvitError(f"no vision projector (a module named like {family.projector_module()!r}, the "
                               f"{family.name} family's) in this model; this method reads image features at the "
                               f"projector's input (models/families.py)")
        self.listener = listener
        self.batch: dict[str, torch.Tensor] | None = None
        self.stop_after = False
        self._handle = bundle.model.get_submodule(name).register_forward_pre_hook(self._hook, with_kwargs=True)

    def set_batch(self, batch: dict[str, torch.Tensor]) -> None:
        """Arm the tap for the next forward of this batch (it fires once, then disarms)."""
        self.batch = batch

    def _hook(self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        features = args[0] if args else next(iter(kwargs.values()), None)
        batch, self.batch = self.batch, None
        if features is None or batch is None:
            return
        self.listener(pool_vision_features(features, batch))
        if self.stop_after:
            raise _Captured

    def remove(self) -> None:
        self._handle.remove()


class SampleViews:
    """The text view (by the chosen encoder) and the image view of samples, for one model."""

    def __init__(self, bundle: ModelBundle, text_encoder: str = "minilm"):
        self.bundle = bundle
        self.text_encoder = text_encoder
        if text_encoder == "minilm":
            from strcvit_bench.models.sentence import minilm

            self._minilm = minilm()

    def text(self, batch: dict[str, torch.Tensor], rows: Rows) -> torch.Tensor:
        if self.text_encoder == "minilm":
            return self._minilm.encode([r["instruction"] for r in rows]).to(batch["input_ids"].device)
        return text_view(self.bundle, batch)

    @torch.no_grad()
    def rows(self, rows: Rows, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """Text and image views (N, d) of many rows; runs only the embeddings, vision tower and projector."""
        bundle = self.bundle
        captured: list[torch.Tensor] = []
        tap = ImageTap(bundle, captured.append)
        tap.stop_after = True
        model = bundle.model
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        texts = []
        try:
            for i in range(0, len(rows), batch_size):
                part = rows[i: i + batch_size]
                batch = {k: v.to(device) for k, v in bundle.encoder.prompt_batch(part).items()}
                texts.append(self.text(batch, part).float().cpu())
                tap.set_batch(batch)
                with contextlib.suppress(_Captured):
                    model(**model_inputs(batch))
        finally:
            tap.remove()
            model.train(was_training)
        if not texts:
            return torch.zeros(0, 1), torch.zeros(0, 1)
        return torch.cat(texts), torch.cat(captured).cpu()

