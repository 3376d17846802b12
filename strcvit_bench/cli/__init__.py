"""The `strcvit` command line: one module per group of commands, all on one typer app."""

from __future__ import annotations

import sys

from strcvit_bench.cli import reports, runs, streams  # noqa: F401 - the modules register their commands
from strcvit_bench.cli.common import app, err_console


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


__all__ = ["app", "main"]
