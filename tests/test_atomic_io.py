"""Writes that survive kills and races: stale leftovers cleaned by owner pid, the loser of two
concurrent writers told so, pool workers that exit with a killed build."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from strcvit_bench.errors import StrcvitError
from strcvit_bench.io import atomic_directory, check_output_dir


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_next_write_removes_a_killed_writers_partial_but_not_a_live_one(tmp_path):
    dead, live = _dead_pid(), os.getpid()
    stale = tmp_path / f".s.partial-{dead}.abc123"
    running = tmp_path / f".s.partial-{live}.def456"
    other = tmp_path / f".t.partial-{dead}.abc123"  # another target's leftovers are not ours to judge
    for d in (stale, running, other):
        d.mkdir()
    with atomic_directory(tmp_path / "s") as tmp:
        (tmp / "x").write_text("new")
    assert not stale.exists() and running.exists() and other.exists()
    assert (tmp_path / "s/x").read_text() == "new"


def test_a_writer_killed_mid_swap_gets_its_previous_output_back(tmp_path):
    """Killed between moving the old output aside and renaming the new one in: the old copy
    is the user's data and is put back, not deleted."""
    old = tmp_path / f".s.old-{_dead_pid()}"
    old.mkdir()
    (old / "keep").write_text("previous stream")
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "s"):
        raise RuntimeError("fails before finishing")
    assert (tmp_path / "s/keep").read_text() == "previous stream"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_the_second_of_two_concurrent_writers_is_told_and_changes_nothing(tmp_path):
    target = tmp_path / "s"
    lost = pytest.raises(StrcvitError, match="written by another process while this one worked")
    with lost, atomic_directory(target) as tmp:
        (tmp / "mine").write_text("loser")
        target.mkdir()  # the other writer finishes first
        (target / "theirs").write_text("winner")
    assert [p.name for p in target.iterdir()] == ["theirs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_pool_workers_exit_when_the_build_is_killed(tmp_path):
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(Path(__file__).parents[1])!r})
from concurrent.futures import ProcessPoolExecutor
from strcvit_bench.streams.builder import exit_with_parent
pool = ProcessPoolExecutor(2, initializer=exit_with_parent, initargs=(os.getpid(),))
list(pool.map(abs, range(8)))  # both workers started
print(" ".join(str(p) for p in pool._processes), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    workers = [int(p) for p in proc.stdout.split()]
    assert proc.returncode == -9 and len(workers) == 2, proc.stderr

    def running(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            return False
        return state not in ("Z", "X")

    deadline = time.monotonic() + 20
    while any(running(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(running(p) for p in workers)


def test_output_dir_checks(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(StrcvitError, match="is a file, not a directory"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(StrcvitError, match="nothing can be created under it"):
        check_output_dir(tmp_path / "f" / "a" / "b")
    with pytest.raises(StrcvitError, match="too long"):
        check_output_dir(tmp_path / ("n" * 240))
    assert check_output_dir(tmp_path / "new" / "dir") == tmp_path / "new" / "dir"
