"""Commands on streams: build (or fetch), publish, export to lm-eval, inspect."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from strcvit_bench.cli.common import app, console, handles_errors, progress_bar, say
from strcvit_bench.errors import StrcvitError
from strcvit_bench.io import check_output_dir


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
    report_stream(manifest, out, "built", f", {manifest['_build_seconds']:.1f}s")


def report_stream(manifest: dict, out: Path, verb: str, extra: str = "") -> None:
    """What a new stream directory holds, what was dropped on the way, and its fingerprint."""
    rows = sum(c["size"] for c in manifest["chunks"])
    say(f"{verb} [bold]{manifest['name']}[/] in {out}: {manifest['num_chunks']} chunks, {rows} train rows, "
        f"{len(manifest['tasks'])} tasks{extra}")
    if manifest["dropped"]:
        say(f"dropped rows, by task and reason: {manifest['dropped']}")
    console.print(f"fingerprint {manifest['fingerprint']}")


@app.command("import-release")
@handles_errors
def import_release_cmd(
    release: Path = typer.Argument(..., help="The downloaded release (chanceche/StrCVIT_dataset): train/, test/."),
    image_root: Path = typer.Option(..., "--image-root", help="What <STRCVIT_IMAGE_ROOT> stands for in its paths."),
    out: Path = typer.Option(None, "--out", "-o", help="Output directory (default: streams/<name>)."),
    tests: str = typer.Option("test", "--tests", help="Which test files: test | test_proxy | val_proxy."),
    task_rules: Path = typer.Option(None, "--task-rules", help="YAML rules image-folder prefix -> task "
                                    "(default: the authors' README table)."),
    strict: bool = typer.Option(False, "--strict",
                                help="Fail on a missing or unreadable image instead of counting it."),
    name: str = typer.Option("strcvit", "--name", help="The stream's name."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output directory."),
) -> None:
    """Import the StrCVIT authors' released stream as it is: chunk i = the records of data_{i+1:03d}.json."""
    from strcvit_bench.streams.release import import_release

    out = check_output_dir(out or Path("streams") / name)
    manifest = import_release(release, image_root, out, tests=tests, rules_path=task_rules, strict=strict,
                              name=name, overwrite=overwrite)
    report_stream(manifest, out, "imported")


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
