"""The `strcvit` command line."""

from strcvit_bench.cli.app import app, main

__all__ = ["app", "main"]
