"""Vision-language models: the embedded tiny default and any Hugging Face image-text-to-text model.

Names resolve on first use: the family table and the run options must not import torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ModelBundle", "load_model"]


def __getattr__(name: str) -> Any:
    if name == "ModelBundle":
        from strcvit_bench.models.base import ModelBundle

        return ModelBundle
    if name == "load_model":
        from strcvit_bench.models.registry import load_model

        return load_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
