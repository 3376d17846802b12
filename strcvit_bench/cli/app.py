"""The `strcvit` command line.

Commands are thin: they parse options, call the library and print. User mistakes arrive as
`StrcvitError` and leave as a one-paragraph message with exit code 2, never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from strcvit_bench.demo import DEMO_METHODS, MATCHED
from strcvit_bench.errors import StrcvitError
from strcvit_bench.io import check_output_dir

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


def _quiet_transformers() -> None:
    """Our progress bars replace transformers' per-file ones."""
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


@app.command("build-stream")
@handles_errors
def build_stream_cmd(
    spec: Path = typer.Argument(None, help="Stream spec YAML (see stream_specs/)."),
    out: Path = typer.Option(None, "--out", "-o", help="Output directory (default: streams/<name>)."),
    seed: int = typer.Option(None, help="Override the spec's seed."),
    num_chunks: int = typer.Option(None, "--num-chunks", min=1, help="Override the number of chunks."),
    chunk_size: int = typer.Option(None, "--chunk-size", min=1, help="Override the chunk size."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output directory."),
    strict: bool = typer.Option(False, "--strict", help="Fail on a corrupt image instead of skipping it."),
    workers: int = typer.Option(None, "--workers", min=0, help="Processes drawing builtin rows "
                                "(default: CPU count; the output does not depend on it)."),
    from_hub: str = typer.Option(None, "--from-hub", help="Read a published stream (OWNER/NAME or a local "
                                                          "clone) instead of building one; verifies it."),
    revision: str = typer.Option(None, "--revision", help="With --from-hub: the Hub revision."),
) -> None:
    """Build a stream directory (Hub-loadable parquet + manifest) from a YAML spec, or fetch a published one."""
    from strcvit_bench.streams.builder import build_stream
    from strcvit_bench.streams.spec import load_spec

    if (spec is None) == (from_hub is None):
        raise StrcvitError("give a spec file or --from-hub OWNER/NAME (one of the two)")
    if from_hub is not None:
        from strcvit_bench.share.publish import fetch

        given = (("--seed", seed), ("--num-chunks", num_chunks), ("--chunk-size", chunk_size),
                 ("--strict", strict or None), ("--workers", workers))
        ignored = [flag for flag, value in given if value is not None]
        if ignored:
            raise StrcvitError(f"--from-hub reads a published stream as it is; {', '.join(ignored)} would be "
                               f"ignored: build from its spec instead to change it")

        target = check_output_dir(out or Path("streams") / from_hub.rstrip("/").split("/")[-1])
        stream = fetch(from_hub, target, revision=revision, overwrite=overwrite)
        say(f"fetched {stream.name} into {target}: fingerprint verified against the files")
        console.print(f"fingerprint {stream.fingerprint}")
        return

    parsed = load_spec(spec, seed=seed, num_chunks=num_chunks, chunk_size=chunk_size)
    out = check_output_dir(out or Path("streams") / parsed.name)
    with progress_bar(f"building {parsed.name}") as update:
        manifest = build_stream(parsed, out, base_dir=spec.resolve().parent, overwrite=overwrite,
                                strict=strict, progress=update, workers=workers)
    rows = manifest["num_chunks"] * manifest["chunk_size"]
    say(f"built [bold]{manifest['name']}[/] in {out}: {manifest['num_chunks']} chunks, "
        f"{rows} train rows, {len(manifest['tasks'])} tasks, {manifest['_build_seconds']:.1f}s")
    if manifest["dropped"]:
        say(f"dropped rows: {manifest['dropped']}")
    console.print(f"fingerprint {manifest['fingerprint']}")


@app.command("publish")
@handles_errors
def publish_cmd(
    stream_dir: Path = typer.Argument(..., help="A built stream directory."),
    repo: str = typer.Option(..., "--repo", help="Hub dataset repo, OWNER/NAME."),
    private: bool = typer.Option(False, "--private"),
    revision: str = typer.Option(None, "--revision", help="Branch to upload to."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only write the folder that would be uploaded."),
    folder: Path = typer.Option(None, "--folder", help="Where to assemble the upload (default STREAM_DIR.publish)."),
) -> None:
    """Publish a stream to the Hugging Face Hub (fingerprint and licences checked, card completed)."""
    from strcvit_bench.share.publish import check_repo_id, folder_listing, prepare, publish

    check_repo_id(repo)
    stream_dir = stream_dir.resolve()  # `publish .` names the current directory
    target = check_output_dir(folder or stream_dir.with_name(stream_dir.name + ".publish"), "--folder")
    if dry_run:
        prepare(stream_dir, target)
        table = Table(title=f"would upload to {repo} (dataset{', private' if private else ''})")
        table.add_column("file")
        table.add_column("bytes", justify="right")
        files = folder_listing(target)
        for name, size in files:
            table.add_row(name, f"{size:,}")
        table.add_row("total", f"{sum(s for _, s in files):,}")
        console.print(table)
        typer.echo(f"folder: {target}")
        return
    info = publish(stream_dir, repo, folder=target, private=private, revision=revision)
    say(f"published {stream_dir} to https://huggingface.co/datasets/{repo} ({getattr(info, 'oid', '')})")


@app.command("export-lm-eval")
@handles_errors
def export_lm_eval_cmd(
    stream_dir: Path = typer.Argument(..., help="A built stream directory."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the task YAMLs (lm_eval --include_path)."),
    per_chunk: bool = typer.Option(False, "--per-chunk", help="Also one task per chunk's training rows."),
) -> None:
    """Write lm-eval tasks (one per test set, tag = stream name) scored by our metric functions."""
    from strcvit_bench.share.lmeval import export_tasks

    names = export_tasks(stream_dir, check_output_dir(out), per_chunk=per_chunk)
    say(f"{len(names)} tasks in {out}: {', '.join(names)}")
    typer.echo(f"python -m strcvit_bench.share.lmeval_cli --model strcvit --model_args run=RUNDIR,chunk=K "
               f"--include_path {out} --tasks {open_stream_name(stream_dir)}")


def open_stream_name(stream_dir: Path) -> str:
    from strcvit_bench.streams.stream import open_stream

    return open_stream(stream_dir).name


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
        console.print("every file and manifest field verified against the seal, row ids against the fingerprint"
                      if stream.sealed else "row ids verified against the fingerprint (built before content "
                      "seals: rebuild the stream to have every byte verified)")
    target = plot or stream.path / "composition.png"
    plot_composition(names, stream.composition(), target, title=f"{stream.name}: chunk composition")
    say(f"composition plot: {target}")


@app.command("demo")
@handles_errors
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Where the demo writes stream and runs."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Seeds per method (0, 1, ...)."),
    methods: str = typer.Option(",".join(DEMO_METHODS), "--methods",
                                help=f"Comma-separated methods to run ({MATCHED}: LoRA at StrLoRA's size)."),
    leaderboard: Path = typer.Option(None, "--leaderboard", help="Leaderboard directory (default OUT/leaderboard)."),
    reference: str = typer.Option("lora", "--reference", help="Method every other is compared with, paired."),
    eval_limit: int = typer.Option(None, "--eval-limit", min=1, help="Score at most N test rows per task."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild the demo stream even if present."),
    num_chunks: int = typer.Option(None, "--num-chunks", min=1, help="Smaller demo: fewer chunks."),
    chunk_size: int = typer.Option(None, "--chunk-size", min=1, help="Smaller demo: smaller chunks."),
    pretrain_samples: int = typer.Option(None, "--pretrain-samples", min=0,
                                         help="Smaller demo: a shorter pre-training of the tiny base."),
) -> None:
    """The main job on the embedded default: build the demo stream, train every method, write the leaderboard."""
    import time

    from strcvit_bench import demo
    from strcvit_bench.reports import leaderboard as lb

    started = time.perf_counter()
    _quiet_transformers()
    stream_dir = demo.build_demo_stream(out, num_chunks, chunk_size, rebuild, progress_bar)
    say(f"demo stream: {stream_dir}")
    jobs = demo.jobs_for([m.strip() for m in methods.split(",") if m.strip()], stream_dir, pretrain_samples)
    run_dirs = list(demo.run_jobs(jobs, seeds, stream_dir, out, eval_limit, pretrain_samples, say, progress_bar))
    target = leaderboard or out / "leaderboard"
    command = "strcvit demo" + (f" --seeds {seeds}" if seeds != 1 else "") + (
        f" --leaderboard {leaderboard}" if leaderboard else "")
    lb.update(run_dirs, target, command, reference)
    typer.echo((target / "leaderboard.md").read_text())
    say(f"demo finished in {(time.perf_counter() - started) / 60:.1f} min")
    typer.echo(f"leaderboard: {(target / 'index.html').resolve()}")  # unwrapped: a path to copy


@app.command("leaderboard")
@handles_errors
def leaderboard_cmd(
    run_dirs: list[Path] = typer.Argument(None, help="Run directories to add (none: just regenerate)."),
    out: Path = typer.Option(Path("leaderboard"), "--out", "-o", help="Leaderboard directory."),
    reference: str = typer.Option("lora", "--reference", help="Method every other is compared with, paired."),
) -> None:
    """Add runs to a leaderboard and write leaderboard.md/.csv, plots and a static index.html."""
    from strcvit_bench.reports import leaderboard as lb

    check_output_dir(out)
    command = "strcvit leaderboard " + " ".join(str(p) for p in run_dirs or []) + f" --out {out}"
    summary = lb.update(list(run_dirs or []), out, command, reference)
    typer.echo((out / "leaderboard.md").read_text())
    say(f"{summary['runs']} runs in {summary['groups']} groups; page: {(out / 'index.html').resolve()}")


@app.command("methods")
@handles_errors
def methods_cmd() -> None:
    """List the continual-learning methods with their options."""
    from strcvit_bench.methods.registry import methods

    for name, cls in methods().items():
        console.print(f"[bold]{name}[/] — {cls.description}")
        for field, info in cls.Options.model_fields.items():
            default = info.default if info.default is not None else "auto"
            desc = f"  {info.description}" if info.description else ""
            console.print(f"    --opt {field}={default}{desc}", highlight=False)


@app.command("run")
@handles_errors
def run_cmd(
    stream: Path = typer.Option(..., "--stream", "-s", help="A built stream directory."),
    method: str = typer.Option("lora", "--method", "-m", help="Method name (`strcvit methods` lists them)."),
    model: str = typer.Option("tiny", "--model", help="`tiny` (embedded default) or a HF model path / Hub id."),
    out: Path = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<stream>-<method>-s<seed>)."),
    seed: int = typer.Option(0, "--seed"),
    epochs_per_chunk: int = typer.Option(1, "--epochs-per-chunk", min=1),
    lr: float = typer.Option(None, "--lr", help="First-chunk learning rate (default 3e-3 tiny, 1e-4 HF)."),
    lr_later: float = typer.Option(None, "--lr-later",
                                   help="Later chunks' constant learning rate (default lr/4 tiny, lr/5 HF)."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Training batch (default 8 tiny, 16 HF)."),
    eval_batch_size: int = typer.Option(64, "--eval-batch-size", min=1),
    eval_limit: int = typer.Option(None, "--eval-limit", min=1, help="Score at most N test rows per task."),
    max_chunks: int = typer.Option(None, "--max-chunks", min=1, help="Stop after N chunks (resumable)."),
    opt: list[str] = typer.Option([], "--opt", "-O", help="Method option key=value (repeatable)."),
    target_modules: str = typer.Option(None, "--target-modules", help="Regex of linear layers to adapt."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | bf16 (autocast, training and generation)"),
    grad_accum: int = typer.Option(1, "--grad-accum", min=1, help="Micro-batches per optimiser step."),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing",
                                                help="Recompute activations in the backward pass."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the model's forward."),
    num_processes: int = typer.Option(1, "--num-processes", min=1,
                                      help="Data-parallel processes: re-launches itself with `accelerate launch`."),
    pretrain_samples: int = typer.Option(None, "--pretrain-samples", min=0,
                                         help="Tiny model: captions seen when pre-training the base."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last finished chunk."),
    no_task_select: bool = typer.Option(False, "--no-task-select", help="StrLoRA ablation: no stage-1 selection."),
    no_token_weights: bool = typer.Option(False, "--no-token-weights", help="StrLoRA ablation: no token weighting."),
    no_stability: bool = typer.Option(False, "--no-stability", help="StrLoRA ablation: no routing-stability KL."),
) -> None:
    """Train a model on a stream chunk by chunk with a method; score every task after every chunk."""
    from strcvit_bench.methods.registry import get_method, parse_options
    from strcvit_bench.parallel import launched_world_size
    from strcvit_bench.training.config import RunConfig
    from strcvit_bench.training.runner import run


    ablations = [f"{k}=false" for k, on in (("task_select", no_task_select), ("token_weights", no_token_weights),
                                             ("stability", no_stability)) if on]
    if ablations and method != "strlora":
        raise StrcvitError("--no-task-select/--no-token-weights/--no-stability are StrLoRA ablations; "
                           f"method {method!r} has no such stages")
    options = parse_options(get_method(method), [*opt, *ablations])
    _quiet_transformers()
    values: dict[str, Any] = {
        "stream": str(stream), "method": method, "method_options": options.model_dump(exclude_unset=True),
        "model": model, "seed": seed, "epochs_per_chunk": epochs_per_chunk, "batch_size": batch_size,
        "eval_batch_size": eval_batch_size, "eval_limit": eval_limit, "max_chunks": max_chunks, "device": device,
        "precision": precision, "grad_accum": grad_accum, "gradient_checkpointing": gradient_checkpointing,
        "compile": compile_model,
        "pretrain_samples": pretrain_samples,
        "out": str(out or Path("runs") / f"{stream.name}-{method}-s{seed}"),
    }
    if lr is not None:
        values["lr"] = lr
    if lr_later is not None:
        values["lr_later"] = lr_later
    if target_modules is not None:
        values["target_modules"] = target_modules
    try:
        config = RunConfig.model_validate(values)
    except ValidationError as exc:
        raise StrcvitError("; ".join(f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}"
                                     for e in exc.errors())) from None
    check_output_dir(config.out)
    if num_processes > 1 and launched_world_size() == 1:
        from strcvit_bench.training.launch import relaunch

        say(f"{method} on {stream.name}: {num_processes} processes (accelerate launch)")
        code = relaunch(config, resume, num_processes)
        if code:
            raise typer.Exit(code)
        results = json.loads((Path(config.out) / "results.json").read_text())
    elif launched_world_size() > 1 and os.environ.get("RANK", "0") != "0":
        run(config, resume=resume)  # the other ranks train and score their shares silently
        return
    else:
        with progress_bar(f"{method} on {stream.name}") as update:
            results = run(config, resume=resume, progress=update)
    _print_matrix(results)
    say(f"results: {Path(config.out) / 'results.json'}")


@app.command("inspect-run")
@handles_errors
def inspect_run_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory (strcvit run --out)."),
    chunk: int = typer.Option(None, "--chunk", help="Routing after this chunk (default: the last)."),
    plot: Path = typer.Option(None, "--plot", help="Where to write the routing PNG (default RUN_DIR/routing.png)."),
) -> None:
    """Show a run's accuracy matrix and, for expert methods, expert activation by task (PNG)."""

    from strcvit_bench.reports.leaderboard import read_results, validate_results
    from strcvit_bench.reports.routing import last_point, plot_routing

    results = read_results(run_dir)
    validate_results(results, run_dir)
    _print_matrix(results)
    routing_path = run_dir / "routing.json"
    if not routing_path.is_file():
        say(f"{results['method']} has no expert routing to show")
        return
    try:
        routing = json.loads(routing_path.read_text())
        routing["points"].items()
    except (ValueError, KeyError, TypeError, AttributeError):
        raise StrcvitError(f"{routing_path} is not a strcvit routing.json (truncated or foreign)") from None
    point = last_point(routing) if chunk is None else f"chunk_{chunk:03d}"
    if point not in routing["points"]:
        raise StrcvitError(f"no routing recorded for {point}; recorded: {', '.join(routing['points'])}")
    table = Table(title=f"expert activation by task ({point})")
    table.add_column("task")
    per_task = routing["points"][point]
    experts = len(next(iter(per_task.values()))["mean_weight"])
    for e in range(experts):
        table.add_column(f"e{e}", justify="right")
    for task, v in per_task.items():
        table.add_row(task, *[f"{x:.2f}" for x in v["mean_weight"]])
        if "selection_frequency" in v:
            table.add_row(f"  {task} (selected)", *[f"{x:.2f}" for x in v["selection_frequency"]])
    console.print(table)
    target = plot or run_dir / "routing.png"
    plot_routing(routing, target, point, title=f"{results['method']} on {results['stream']['name']}: "
                                               f"expert activation by task ({point})")
    say(f"routing plot: {target}")


def _print_matrix(results: dict[str, Any]) -> None:
    names = [t["name"] for t in results["tasks"]]
    table = Table(title=f"{results['method']} on {results['stream']['name']} (seed {results['seed']}): "
                        f"accuracy after each chunk")
    table.add_column("after", justify="right")
    for n in names:
        table.add_column(n, justify="right")
    table.add_row("base", *[f"{v:.1f}" for v in results["base_scores"]])
    for t, row in enumerate(results["accuracy_matrix"]):
        table.add_row(str(t), *["·" if v is None else f"{v:.1f}" for v in row])
    console.print(table)
    m = results["metrics"]
    if m:
        console.print("  ".join(f"{k} {v:.2f}" for k, v in m.items() if v is not None), highlight=False)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
