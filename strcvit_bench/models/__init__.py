"""Vision-language models: the embedded tiny default and any Hugging Face image-text-to-text model."""

from strcvit_bench.models.base import ModelBundle
from strcvit_bench.models.registry import load_model

__all__ = ["ModelBundle", "load_model"]
