"""Atomic file writes.

A run or a build may be killed at any moment; readers must only ever see a complete old
file or a complete new one. Everything is written to a temporary sibling and renamed, which
is atomic on POSIX filesystems.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename durable: the new directory entry survives a power cut, not only a kill."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories; the rename is still atomic
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def dumps_json(obj: Any) -> str:
    """Stable JSON: sorted keys so that identical content gives identical bytes."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, dumps_json(obj))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale(target: Path) -> None:
    """Remove what a killed writer of `target` left behind (its pid is in the name and is dead);
    a stale `.old-` copy is the previous output, put back if nothing replaced it."""
    for leftover in target.parent.glob(f".{glob_escape(target.name)}.*"):
        kind, _, pid = leftover.name[len(target.name) + 2:].partition("-")
        if kind not in ("partial", "old") or not pid.split(".")[0].isdigit():
            continue
        if _alive(int(pid.split(".")[0])):
            continue  # a build running right now
        if kind == "old" and not target.exists():
            with contextlib.suppress(OSError):
                os.replace(leftover, target)
                continue
        shutil.rmtree(leftover, ignore_errors=True)


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces `target` only if the block succeeds.

    On any error the temporary directory is removed and `target` is left untouched, so a
    failed build never leaves a half-written stream behind; one killed outright leaves a
    `.NAME.partial-PID` directory that the next write of `target` removes. Of two concurrent
    writers without `overwrite`, the second to finish gets a clear error and discards its copy.
    """
    from strcvit_bench.errors import StrcvitError

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-{os.getpid()}.", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    lost_race = StrcvitError(f"{target} was written by another process while this one worked; its output is "
                             f"kept and this one's discarded (pass --overwrite to replace it)")
    old = None
    if target.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            raise lost_race
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):  # a concurrent writer may have moved it already
            os.replace(target, old)
    try:
        os.replace(tmp, target)
    except OSError:  # a concurrent writer put its own output in place in between
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)
        raise lost_race from None
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse, before any work, an output directory that could not be written: a file in its
    place or above it, a name the filesystem refuses, or a parent without write permission."""
    from strcvit_bench.errors import StrcvitError

    path = Path(path)
    limit = 255  # NAME_MAX of every common filesystem
    for part in path.parts:
        # the temporary sibling a write goes through adds about 30 bytes to the last name
        if len(os.fsencode(part)) + 32 > limit:
            raise StrcvitError(f"{option} {path}: the name {part[:40]}… is too long for the filesystem "
                               f"({len(os.fsencode(part))} bytes; at most {limit - 32})")
    if path.exists() and not path.is_dir():
        raise StrcvitError(f"{option} {path} is a file, not a directory; choose a directory")
    existing = path.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise StrcvitError(f"{option} {path}: {existing} is a file, so nothing can be created under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StrcvitError(f"{option} {path}: no permission to write in {existing}")
    return path
