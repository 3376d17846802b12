"""The process and its environment: what a result file records about where it was produced
(versions, hardware, commit), and the settings every process that trains or loads a model shares."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Iterator
from pathlib import Path

_PACKAGES = ("strcvit-bench", "torch", "transformers", "peft", "datasets", "pyarrow", "pillow", "accelerate")


def library_versions(packages: tuple[str, ...] = _PACKAGES) -> dict[str, str]:
    out: dict[str, str] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def cpu_model() -> str:
    """The CPU's marketing name where the OS says it (Linux, macOS), else platform's guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip() or platform.processor()
    except (OSError, subprocess.SubprocessError):
        return platform.processor() or platform.machine()


def hardware() -> dict[str, object]:
    """Where a result was made. The CPU model and the vector instruction set torch dispatches to
    are in because float results depend on them: MKL and torch's kernels pick their code path
    (AVX2, AVX-512, ...) by CPU, and the paths round differently, so a run is the same bits only
    on the same class of CPU (with the same versions and thread count)."""
    info: dict[str, object] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        if torch.cuda.is_available():
            info["cuda_device"] = torch.cuda.get_device_name(0)
            info["cuda_device_count"] = torch.cuda.device_count()
    except ImportError:
        pass
    return info


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """The commit of the checkout the code runs from (None outside git); '+dirty' if modified."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory for the next tensor instead of giving it back.

    Why: by default glibc maps every block above a threshold (128 KiB, raised as blocks are freed,
    at most 32 MiB) fresh from the kernel, and trims the heap's free top. A training step or a
    generation batch frees and re-allocates the same activation-sized tensors every time, so
    each one can be page-faulted in anew. Training settles (its sizes repeat, and glibc's
    threshold adapts to them); generation does not: a quarter of a million minor faults per
    evaluation of the tiny model, 8-19 % of its time (benchmarks/RESULTS.md). Keeping the memory costs no
    peak (the same tensors are live at the peak either way) and changes no result: tensors are
    64-byte aligned wherever they come from. A no-op (False) off glibc (macOS, musl, Windows).
    Process-wide, so it is called by the commands and the demo's workers, not on import.
    """
    import ctypes
    import ctypes.util

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    trimmed = libc.mallopt(m_trim_threshold, 1 << 30)  # keep up to 1 GiB of free heap top
    mapped = libc.mallopt(m_mmap_threshold, 32 << 20)  # glibc's maximum: larger blocks are still mapped
    return bool(trimmed and mapped)


def quiet_transformers() -> None:
    """Our progress bars replace transformers' per-file ones (in every process that loads a model)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to `n` for the block, then as they were: a CPU matmul's
    rounding depends on how many threads split it, so what must be the same bits everywhere
    (the tiny base, a demo run) runs at a fixed count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
