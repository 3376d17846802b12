"""Baseline methods, one module each: LoRA (lower bound), replay, EWC."""
