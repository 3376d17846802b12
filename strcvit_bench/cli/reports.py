"""Commands that compare runs: the demo (build, train every method, rank) and the leaderboard."""

from __future__ import annotations

from pathlib import Path

import typer

from strcvit_bench.cli.common import app, handles_errors, progress_bar, say
from strcvit_bench.demo import MATCHED, demo_methods
from strcvit_bench.env import quiet_transformers
from strcvit_bench.io import check_output_dir


@app.command("demo")
@handles_errors
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Where the demo writes stream and runs."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Seeds per method (0, 1, ...)."),
    methods: str = typer.Option(",".join(demo_methods()), "--methods",
                                help=f"Comma-separated methods to run ({MATCHED}: LoRA at StrLoRA's size)."),
    leaderboard: Path = typer.Option(None, "--leaderboard", help="Leaderboard directory (default OUT/leaderboard)."),
    reference: str = typer.Option("lora", "--reference", help="Method every other is compared with, paired."),
    eval_limit: int = typer.Option(None, "--eval-limit", min=1, help="Score at most N test rows per task."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild the demo stream even if present."),
    jobs: int = typer.Option(None, "--jobs", "-j", min=1, help="Runs at once, each in one thread (default: one "
                             "per CPU core). The runs are the same bits whatever it is, on any core count."),
    num_chunks: int = typer.Option(None, "--num-chunks", min=1, help="Smaller demo: fewer chunks."),
    chunk_size: int = typer.Option(None, "--chunk-size", min=1, help="Smaller demo: smaller chunks."),
    pretrain_samples: int = typer.Option(None, "--pretrain-samples", min=0,
                                         help="Smaller demo: a shorter pre-training of the tiny base."),
    shipped_base: bool = typer.Option(True, "--shipped-base/--no-shipped-base",
                                      help="Start from the tiny base the package ships (--no-shipped-base: "
                                      "pre-train it here, a few minutes, and cache it)."),
) -> None:
    """The main job on the embedded default: build the demo stream, train every method, write the leaderboard."""
    import time

    from strcvit_bench import demo
    from strcvit_bench.reports import leaderboard as lb

    started = time.perf_counter()
    quiet_transformers()
    stream_dir = demo.build_demo_stream(out, num_chunks, chunk_size, rebuild, progress_bar)
    say(f"demo stream: {stream_dir}")
    base = {"pretrain_samples": pretrain_samples, "shipped_base": shipped_base}
    work = demo.jobs_for([m.strip() for m in methods.split(",") if m.strip()], stream_dir, base)
    target = leaderboard or out / "leaderboard"
    run_dirs = list(demo.run_jobs(work, seeds, stream_dir, out, eval_limit, base, say, progress_bar,
                                  workers=jobs, history=[target, demo.COMMITTED]))
    command = "strcvit demo" + (f" --seeds {seeds}" if seeds != 1 else "") + (
        f" --leaderboard {leaderboard}" if leaderboard else "")
    lb.update(run_dirs, target, command, reference)
    typer.echo((target / "leaderboard.md").read_text())
    say(f"demo finished in {(time.perf_counter() - started) / 60:.1f} min")
    typer.echo(f"leaderboard: {(target / 'index.html').resolve()}")  # unwrapped: a path to copy


@app.command("demo-base")
@handles_errors
def demo_base_cmd(
    write: bool = typer.Option(False, "--write", help="Ship the base pre-trained here in place of the shipped one."),
) -> None:
    """Pre-train the demo's tiny base here (about 5 minutes on 2 cores) and compare it with the one the
    package ships, tensor by tensor; exit code 1 if they differ."""
    from strcvit_bench import demo

    quiet_transformers()
    report = demo.demo_base(write, progress_bar)
    typer.echo(f"pre-trained here: final caption loss {report['final_loss']:.16g}")
    if not report["present"]:
        typer.echo(f"the package ships no base for the demo's model, recipe and vocabulary ({report['shipped']})")
    elif report["equal"]:
        typer.echo(f"equal, bit for bit, to the shipped base {report['shipped']}")
    else:
        typer.echo(f"differs from the shipped base {report['shipped']}: largest |difference| "
                   f"{report['max_abs_diff']:.3g} (another CPU class or library version rounds otherwise; the "
                   f"committed leaderboard's runs start from the shipped one)")
    if report.get("written"):
        typer.echo(f"shipped: {report['shipped']}")
    elif not report.get("equal"):
        raise typer.Exit(1)


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
