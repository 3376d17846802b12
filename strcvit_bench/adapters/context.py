"""The per-batch contract between a routed method and its layers.

A routed layer needs facts about the batch its input belongs to — which tokens are real, each
sample's instruction representation, the cluster or expert the method chose for it — that the
layer's `forward(x)` cannot receive through the model's own call. The method owns one
`BatchContext`, hands it to every layer it creates, and sets it once per batch in
`before_forward` (or when the image view arrives mid-forward, `update`). A layer reads it and
never the method. What a layer computes for the method's loss (a KL, a penalty) it returns
from `aux_loss()`; what it decided on the prompt and keeps for the decoding steps lives in the
context's cache, so a new batch can never see the last batch's choices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class BatchContext:
    """What the layers of one method read about the current batch."""

    def __init__(self) -> None:
        self.token_mask: torch.Tensor | None = None
        self._values: dict[str, Any] = {}
        self._kept: dict[int, torch.Tensor] = {}
        self._shared: dict[Any, Any] = {}

    def begin(self, token_mask: torch.Tensor | None = None, **values: Any) -> None:
        """A new batch: `token_mask` (B, L) marks its real tokens; `values` are per-sample inputs
        of the layers (e.g. `instruction=(B, d)`). Everything of the previous batch is dropped."""
        self.token_mask = token_mask
        self._values = dict(values)
        self._kept = {}
        self._shared = {}

    def update(self, **values: Any) -> None:
        """Add inputs learned during the forward (e.g. routing decided on the image view)."""
        self._values.update(values)
        self._shared = {}

    def shared(self, key: Any, compute: Callable[[], Any]) -> Any:
        """`compute()` once per batch for all the layers that ask with `key` (the first one asks):
        what every layer needs from the batch's inputs alone, e.g. all routers evaluated together.
        The key must name whatever else the value depends on (training mode, grad mode)."""
        if key not in self._shared:
            self._shared[key] = compute()
        return self._shared[key]

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def __getitem__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise RuntimeError(f"the batch context has no {name!r}: the method's before_forward must set it "
                               f"before the model runs") from None

    def mask_for(self, x: torch.Tensor) -> torch.Tensor | None:
        """The real-token mask while `x` (B, L, d) is the whole sequence (not a decoding step)."""
        m = self.token_mask
        return m if m is not None and m.shape == x.shape[:2] else None

    def on_prompt(self, layer: torch.nn.Module, x: torch.Tensor, decide: Callable[[], torch.Tensor]) -> torch.Tensor:
        """`decide()` on the prompt, and the same decision for the single-token decoding steps that
        follow it (they carry no prompt to decide from)."""
        kept = self._kept.get(id(layer))
        if x.shape[1] == 1 and kept is not None and kept.shape[0] == x.shape[0]:
            return kept
        kept = decide()
        self._kept[id(layer)] = kept
        return kept


class RoutedLayer:
    """Mixin of the routed adapter layers: the shared batch context and an auxiliary loss."""

    context: BatchContext
    _aux: torch.Tensor | None = None

    def bind(self, context: BatchContext | None) -> None:
        self.context = context if context is not None else BatchContext()
        self._aux = None

    def aux_loss(self) -> torch.Tensor | None:
        """The layer's term for the method's loss from its last forward (None: nothing to add)."""
        return self._aux
