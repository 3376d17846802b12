"""Model registry: `tiny` (the embedded default) or any Hugging Face model path / Hub id."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from strcvit_bench.models.base import ModelBundle

BUILTIN_MODELS = ("tiny",)


def load_model(name: str, *, stream_texts: Iterable[str] = (), dtype: str = "auto",
               progress: Callable[[str, int, int], None] | None = None, **tiny_options) -> ModelBundle:
    if name == "tiny":
        from strcvit_bench.models.tiny import load_tiny

        return load_tiny(stream_texts, progress=progress, **tiny_options)
    from strcvit_bench.models.hf import load_hf

    return load_hf(name, dtype=dtype)
