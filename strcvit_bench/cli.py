"""The `strcvit` command line.

Commands are thin: they parse options, call the library and print. User mistakes arrive as
`StrcvitError` and leave as a one-paragraph message with exit code 2, never a traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

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

    return wrapper  # type: ignore[return-value]


def say(*objects: Any) -> None:
    if not _state["quiet"]:
        console.print(*objects)


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


@app.command("build-stream")
@handles_errors
def build_stream_cmd(
    spec: Path = typer.Argument(..., help="Stream spec YAML (see stream_specs/)."),
    out: Path = typer.Option(None, "--out", "-o", help="Output directory (default: streams/<name>)."),
    seed: int = typer.Option(None, help="Override the spec's seed."),
    num_chunks: int = typer.Option(None, "--num-chunks", min=1, help="Override the number of chunks."),
    chunk_size: int = typer.Option(None, "--chunk-size", min=1, help="Override the chunk size."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output directory."),
    strict: bool = typer.Option(False, "--strict", help="Fail on a corrupt image instead of skipping it."),
    workers: int = typer.Option(None, "--workers", min=0, help="Processes drawing builtin rows "
                                "(default: CPU count; the output does not depend on it)."),
) -> None:
    """Build a stream directory (Hub-loadable parquet + manifest) from a YAML spec."""
    from strcvit_bench.streams.builder import build_stream
    from strcvit_bench.streams.spec import load_spec

    parsed = load_spec(spec, seed=seed, num_chunks=num_chunks, chunk_size=chunk_size)
    out = out or Path("streams") / parsed.name
    with progress_bar(f"building {parsed.name}") as update:
        manifest = build_stream(parsed, out, base_dir=spec.resolve().parent, overwrite=overwrite,
                                strict=strict, progress=update, workers=workers)
    rows = manifest["num_chunks"] * manifest["chunk_size"]
    say(f"built [bold]{manifest['name']}[/] in {out}: {manifest['num_chunks']} chunks, "
        f"{rows} train rows, {len(manifest['tasks'])} tasks, {manifest['_build_seconds']:.1f}s")
    if manifest["dropped"]:
        say(f"dropped rows: {manifest['dropped']}")
    console.print(f"fingerprint {manifest['fingerprint']}")


@app.command("inspect")
@handles_errors
def inspect_cmd(
    stream_dir: Path = typer.Argument(..., help="A built stream directory."),
    plot: Path = typer.Option(None, "--plot", help="Where to write the composition PNG "
                                                  "(default: STREAM_DIR/composition.png)."),
    verify: bool = typer.Option(False, "--verify", help="Re-check the fingerprint against the files."),
) -> None:
    """Print a stream's composition (chunks x tasks) and draw it as stacked bars."""
    from strcvit_bench.reports.composition import composition_rows, plot_composition
    from strcvit_bench.streams.stream import open_stream, verify_stream

    stream = verify_stream(stream_dir) if verify else open_stream(stream_dir)
    names = stream.task_names
    table = Table(title=f"{stream.name}  (fingerprint {stream.fingerprint[:12]}…)")
    table.add_column("chunk", justify="right")
    for n in names:
        table.add_column(n, justify="right")
    table.add_column("total", justify="right")
    for i, row in enumerate(composition_rows(names, stream.composition())):
        table.add_row(str(i), *[str(v) if v else "·" for v in row], str(sum(row)))
    console.print(table)
    families = {t["name"]: t["family"] for t in stream.manifest["tasks"]}
    console.print("tasks: " + ", ".join(f"{n} ({families[n]})" for n in names))
    if verify:
        console.print("fingerprint verified against the files")
    target = plot or stream.path / "composition.png"
    plot_composition(names, stream.composition(), target, title=f"{stream.name}: chunk composition")
    say(f"composition plot: {target}")


@app.command("demo")
@handles_errors
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Where the demo writes everything."),
    overwrite: bool = typer.Option(True, "--overwrite/--keep", help="Rebuild the demo stream if present."),
) -> None:
    """The main job on the embedded default: build the demo stream and show its composition."""
    from strcvit_bench.reports.composition import plot_composition
    from strcvit_bench.streams.builder import build_stream
    from strcvit_bench.streams.spec import load_spec

    spec_path = Path(__file__).resolve().parent.parent / "stream_specs" / "demo.yaml"
    if not spec_path.is_file():
        raise StrcvitError(f"the demo spec {spec_path} is missing; run the demo from a checkout of strcvit-bench")
    spec = load_spec(spec_path)
    stream_dir = out / "stream"
    with progress_bar("building the demo stream") as update:
        manifest = build_stream(spec, stream_dir, base_dir=spec_path.parent, overwrite=overwrite, progress=update)
    names = [t["name"] for t in manifest["tasks"]]
    plot = plot_composition(names, [c["counts"] for c in manifest["chunks"]], out / "composition.png",
                            title="demo: chunk composition")
    say(f"demo stream: {stream_dir} (fingerprint {manifest['fingerprint'][:12]}…)")
    say(f"composition plot: {plot}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
