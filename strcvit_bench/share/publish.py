"""Publish a built stream as a Hugging Face dataset repo, and read one back.

The stream directory already is the repo layout (docs/streams.md). Publishing re-checks the
fingerprint against the files, refuses sources whose licence does not allow redistribution,
completes the dataset card (licences, composition table and plot, the spec, the fingerprint,
how to load) and uploads with `HfApi.create_repo` + `upload_folder`. `--dry-run` writes the
exact folder that would be uploaded instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from strcvit_bench.errors import StrcvitError, StreamError
from strcvit_bench.io import atomic_directory, atomic_write_text
from strcvit_bench.streams.card import render_card
from strcvit_bench.streams.stream import Stream, verify_stream

# Licences (Hub identifiers) that allow redistributing the data in a derived dataset.
REDISTRIBUTABLE = {
    "cc0-1.0", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0",
    "mit", "apache-2.0", "bsd-3-clause", "gpl-3.0", "odc-by", "odbl", "cdla-permissive-2.0", "cdla-sharing-1.0",
}
UPLOAD_PATTERNS = ["README.md", "manifest.json", "composition.png", "data/**/*.parquet"]


def check_licenses(stream: Stream) -> None:
    blocked = [(t["name"], t.get("source"), t.get("license")) for t in stream.manifest["tasks"]
               if (t.get("license") or "").lower() not in REDISTRIBUTABLE]
    if blocked:
        listed = "; ".join(f"task {n!r} (source {s}, license {lic or 'unknown'})" for n, s, lic in blocked)
        raise StrcvitError(
            f"refusing to publish {stream.path}: {listed} — these licences do not allow redistribution (or are "
            f"unknown). Drop those tasks, or, if you hold the rights, set the source's `license:` in the spec "
            f"to its Hub licence id and rebuild. Redistributable: {', '.join(sorted(REDISTRIBUTABLE))}")


def full_card(stream: Stream) -> str:
    m = stream.manifest
    card = render_card(m)
    spec_yaml = yaml.safe_dump(m["spec"], sort_keys=False, allow_unicode=True)
    sources = sorted({(t.get("source"), t.get("license") or "unknown") for t in m["tasks"]})
    extra = ["", "![chunk composition](composition.png)", "", "## Sources and licences", ""]
    extra += [f"- `{s}` — {lic}; cite the original dataset when you use its rows" for s, lic in sources]
    extra += ["", "## Load the whole stream", "", "```python",
              "from datasets import get_dataset_config_names, load_dataset",
              'repo = "<owner>/<name>"',
              'chunks = [c for c in get_dataset_config_names(repo) if c.startswith("chunk_")]',
              'stream = [load_dataset(repo, c, split="train") for c in chunks]   # in order',
              "```", "", "Or train on it directly: `strcvit build-stream --from-hub <owner>/<name> --out DIR`, "
              "then `strcvit run --stream DIR`.", "",
              "## Spec", "", "```yaml", spec_yaml.rstrip(), "```", "",
              f"Fingerprint (sha256 over the spec and every row id in order): `{m['fingerprint']}`.",
              f"Content seal (sha256 over every file's sha256 and the result-deciding manifest fields): "
              f"`{(m.get('content') or {}).get('seal', 'none: built before content seals')}`.", "",
              "## Citation", "", "Built with strcvit-bench for streaming continual visual instruction tuning "
              "(StrLoRA, arXiv 2605.16353). Cite the source datasets listed above.", ""]
    return card + "\n".join(extra)


MARKER = ".strcvit-publish.json"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def check_repo_id(repo_id: str) -> str:
    if not REPO_ID.match(repo_id) or len(repo_id) > 96 or ".." in repo_id:
        raise StrcvitError(f"--repo {repo_id!r} is not a Hub repository id; expected OWNER/NAME "
                           f"(letters, digits, '-', '_', '.')")
    return repo_id


def _check_folder(folder: Path, stream: Stream) -> None:
    """Never delete what we did not create: the folder may only be new, empty, or an earlier
    upload folder of this same stream (it carries our marker)."""
    here, src = folder.resolve(), stream.path.resolve()
    if here == src or here in src.parents or src in here.parents:
        raise StrcvitError(f"--folder {folder} is the stream itself, inside it, or above it; choose a folder "
                           f"apart from {stream.path}")
    if not here.exists():
        return
    if not here.is_dir():
        raise StrcvitError(f"--folder {folder} exists and is not a directory")
    if not any(here.iterdir()):
        return
    try:
        marker = json.loads((here / MARKER).read_text())
    except (OSError, ValueError):
        marker = None
    if not marker or marker.get("stream") != stream.name:
        raise StrcvitError(f"--folder {folder} is not empty and is not an upload folder of stream {stream.name!r}; "
                           f"it is left as it is: choose an empty or new folder")


def prepare(stream_dir: str | Path, folder: str | Path) -> Path:
    """Write the exact folder that would be uploaded (verified, licences checked, card completed)."""
    from strcvit_bench.reports.composition import plot_composition

    stream = verify_stream(stream_dir)
    check_licenses(stream)
    folder = Path(folder)
    _check_folder(folder, stream)
    with atomic_directory(folder, overwrite=True) as tmp:
        atomic_write_text(tmp / MARKER, json.dumps({"stream": stream.name, "fingerprint": stream.fingerprint}))
        for rel in ["manifest.json", *[str(p.relative_to(stream.path)) for p in stream.path.glob("data/**/*.parquet")]]:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(stream.path / rel, tmp / rel)
        plot_composition(stream.task_names, stream.composition(), tmp / "composition.png",
                         title=f"{stream.name}: chunk composition")
        atomic_write_text(tmp / "README.md", full_card(stream))
    return folder


def folder_listing(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


def publish(stream_dir: str | Path, repo_id: str, *, folder: str | Path, private: bool = False,
            revision: str | None = None, api: Any = None) -> Any:
    from huggingface_hub import HfApi, get_token

    check_repo_id(repo_id)
    prepared = prepare(stream_dir, folder)
    if api is None:
        if not (os.environ.get("HF_TOKEN") or get_token()):
            raise StrcvitError("no Hugging Face token: run `hf auth login` or set HF_TOKEN (a write token), "
                               "or use --dry-run to only write the folder")
        api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    return api.upload_folder(repo_id=repo_id, folder_path=str(prepared), repo_type="dataset", revision=revision,
                             allow_patterns=UPLOAD_PATTERNS,
                             commit_message=f"strcvit-bench stream {Path(stream_dir).name}")


def fetch(source: str, out: str | Path, *, revision: str | None = None, overwrite: bool = False) -> Stream:
    """A published stream (Hub id or local clone) copied to `out` and fingerprint-verified."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise StrcvitError(f"{out} already exists; pass --overwrite to replace it")
    local = Path(source)
    if not local.is_dir():
        from huggingface_hub import snapshot_download

        try:
            local = Path(snapshot_download(source, repo_type="dataset", revision=revision))
        except Exception as exc:
            raise StrcvitError(f"could not download the dataset repo {source!r}: {type(exc).__name__}: {exc}") from None
    with atomic_directory(out, overwrite=overwrite) as tmp:
        for p in local.rglob("*"):
            if p.is_file() and ".git" not in p.parts and ".cache" not in p.parts:
                (tmp / p.relative_to(local)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, tmp / p.relative_to(local))
        try:
            verify_stream(tmp)
        except StreamError as exc:
            raise StrcvitError(f"{source} is not an intact strcvit stream: {exc}") from None
    return verify_stream(out)
