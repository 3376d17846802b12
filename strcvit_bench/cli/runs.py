"""Commands on runs: train (`run`), list the methods, inspect a run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from strcvit_bench.cli.common import app, console, handles_errors, progress_bar, say
from strcvit_bench.cli.options import model_parameters, with_parameters
from strcvit_bench.env import quiet_transformers
from strcvit_bench.errors import StrcvitError
from strcvit_bench.io import check_output_dir


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


RUN_HELP = {
    "stream": "A built stream directory.",
    "method": "Method name (`strcvit methods` lists them).",
    "model": "`tiny` (embedded default) or a HF model path / Hub id.",
    "out": "Run directory (default: runs/<stream>-<method>-s<seed>).",
    "target_modules": "Regex of the linear layers to adapt.",
    "projector_modules": "Regex of the projector parameters trained with the adapters.",
    "device": "auto | cpu | cuda | cuda:N.",
    "dtype": "Weights' dtype when loading a HF model: auto | float32 | bfloat16 | float16.",
}


def run_cmd(
    opt: list[str] = typer.Option([], "--opt", "-O", help="Method option key=value (repeatable; "
                                  "`strcvit methods` lists them, e.g. StrLoRA's ablations task_select=false)."),
    num_processes: int = typer.Option(1, "--num-processes", min=1,
                                      help="Data-parallel processes: re-launches itself with `accelerate launch`."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last finished chunk."),
    preset: str = typer.Option(None, "--preset", help="Fill unset options with a published protocol: `authors` "
                               "(the StrCVIT release's settings; docs/reproducing.md)."),
    **fields: Any,
) -> None:
    """Train a model on a stream chunk by chunk with a method; score every task after every chunk."""
    from pydantic import ValidationError

    from strcvit_bench.methods.registry import get_method, parse_options
    from strcvit_bench.parallel import launched_world_size
    from strcvit_bench.training.config import RunConfig
    from strcvit_bench.training.presets import apply_preset
    from strcvit_bench.training.runner import run

    values = {k: v for k, v in fields.items() if v is not None}  # what the command line gave
    stream, method = Path(values["stream"]), values.setdefault("method", "lora")
    cls = get_method(method)
    given = parse_options(cls, opt).model_dump(exclude_unset=True)
    values, method_options = apply_preset(preset, values, list(cls.Options.model_fields), given)
    options = parse_options(cls, method_options)
    quiet_transformers()
    values.update(stream=str(stream), method_options=options.model_dump(exclude_unset=True),
                  out=str(values.get("out") or Path("runs") / f"{stream.name}-{method}-s{values.get('seed', 0)}"))
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
    print_matrix(results)
    say(f"results: {Path(config.out) / 'results.json'}")


def _register_run() -> None:
    from strcvit_bench.training.config import RunConfig

    params = model_parameters(RunConfig, skip={"method_options"}, short={"stream": "-s", "method": "-m", "out": "-o"},
                              defaults={"out": None}, helps=RUN_HELP)
    app.command("run")(handles_errors(with_parameters(run_cmd, params)))


_register_run()


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
    print_matrix(results)
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


def print_matrix(results: dict[str, Any]) -> None:
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
