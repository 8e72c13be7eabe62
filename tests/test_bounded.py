"""Bounded host children: past their memory they fail, at their deadline their whole group
is killed, within their bounds they run as usual."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from runner import bounded

PY = sys.executable
TIGHT = bounded.Bounds(cpu_seconds=5, memory_bytes=256 * bounded.MB, wall_seconds=2)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2] != "Z"


def test_within_bounds_the_child_runs_as_usual() -> None:
    proc = bounded.run(["sh", "-c", "echo out; echo err >&2; exit 3"], TIGHT)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "out\n", "err\n")


def test_memory_past_the_bound_fails_the_child() -> None:
    grab = "x = bytearray(512 * 1024 * 1024); print('held')"
    proc = bounded.run([PY, "-c", grab], TIGHT)
    assert proc.returncode != 0 and "held" not in proc.stdout
    assert "MemoryError" in proc.stderr


def test_cpu_past_the_bound_ends_the_child() -> None:
    proc = bounded.run(
        [PY, "-c", "while True: pass"],
        bounded.Bounds(cpu_seconds=1, memory_bytes=256 * bounded.MB, wall_seconds=60),
    )
    assert proc.returncode < 0  # SIGXCPU, then SIGKILL at the hard limit


def test_the_deadline_kills_the_whole_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"sleep 300 & echo $! > {pids}; sleep 300"
    start = time.monotonic()
    proc = bounded.run(["sh", "-c", script], TIGHT)
    assert time.monotonic() - start < 30
    assert proc.returncode == -9 and "stopped after 2 s" in proc.stderr
    grandchild = int(pids.read_text())
    deadline = time.monotonic() + 10
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild), "a process the child started outlived the deadline"


def test_a_stream_is_killed_at_its_deadline_and_when_left() -> None:
    with bounded.popen(["sh", "-c", "echo one; sleep 300"], TIGHT, stdout=subprocess.PIPE) as p:
        assert p.stdout is not None
        assert p.stdout.readline() == b"one\n"
        start = time.monotonic()
        assert p.stdout.read() == b""  # the deadline closes the stream
        assert time.monotonic() - start < 30
    assert p.returncode == -9
    with bounded.popen(["sleep", "300"], TIGHT) as left:
        pass
    assert left.returncode == -9
