"""Training: the per-chunk trainer, the stream runner and its checkpoints."""
