"""What every command shares: the app, the consoles, error handling and progress bars.

Commands are thin: they parse options, call the library and print. User mistakes arrive as
`StrcvitError` and leave as a one-paragraph message with exit code 2, never a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from strcvit_bench.env import keep_freed_memory
from strcvit_bench.errors import StrcvitError

app = typer.Typer(
    name="strcvit",
    help="Streaming continual visual instruction tuning: build streams, train methods, compare them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)
_state = {"quiet": False}

F = TypeVar("F", bound=Callable[..., Any])


def handles_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StrcvitError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:  # the machine's, not the input's: a full disk, a vanished mount
            where = f" ({exc.filename})" if exc.filename else ""
            err_console.print(f"[bold red]error:[/] {escape(str(exc.strerror or exc) + where)}", highlight=False,
                              markup=True, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def say(*objects: Any) -> None:
    if not _state["quiet"]:
        console.print(*objects, soft_wrap=True)


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[str, int, int], None] | None]:
    """A rich progress bar fed by a `(label, done, total)` callback; silent under --quiet."""
    if _state["quiet"]:
        yield None
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[label]}"), TimeElapsedColumn(), console=console,
                  transient=False) as progress:
        task_id = progress.add_task(description, total=None, label="")

        def update(label: str, done: int, total: int) -> None:
            progress.update(task_id, completed=done, total=total, label=label)

        yield update


@app.callback()
def _main(quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only results and errors.")) -> None:
    _state["quiet"] = quiet
    keep_freed_memory()  # every command that trains, scores or builds re-uses its freed tensors' memory
