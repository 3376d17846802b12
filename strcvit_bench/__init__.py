"""strcvit-bench: streaming continual visual instruction tuning for multimodal LLMs."""

__version__ = "0.1.0"
