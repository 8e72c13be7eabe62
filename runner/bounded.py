"""Host children that work on what an agent made, within CPU time, memory and wall time.

A few kilobytes of objects can describe millions of files, and a small bundle can
inflate to gigabytes, so the runner never lets such a child take what it likes: it runs
under `prlimit` (CPU seconds and address space, inherited by everything it starts), at
low priority, in a process group of its own that is killed whole at its deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MB = 1024 * 1024


@dataclass(frozen=True)
class Bounds:
    """What one child may cost the host."""

    cpu_seconds: int = 120
    memory_bytes: int = 1024 * MB
    """Address space (RLIMIT_AS): an allocation past it fails, the child ends."""
    wall_seconds: float = 300.0

    def prefix(self) -> tuple[str, ...]:
        return (
            "prlimit", f"--cpu={self.cpu_seconds}", f"--as={self.memory_bytes}", "--",
            "nice", "-n", "10",
        )  # fmt: skip

    def describe(self) -> str:
        """The limits in words, for a person reading why a step stopped."""
        return (
            f"{self.cpu_seconds} s of CPU, {self.memory_bytes // MB:,} MB of memory, "
            f"{self.wall_seconds:g} s"
        )


ENV: Mapping[str, str] = {"MALLOC_ARENA_MAX": "2"}
"""glibc reserves address space per thread arena; a threaded child stays within its cap."""


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    """Kill the child and everything it started, if it has not been reaped (its group id
    cannot have been reused then)."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def run(
    argv: Sequence[str],
    bounds: Bounds,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` within `bounds`, capturing its text. At the deadline the whole group is
    killed and the result has return code -9 and a line saying so on stderr."""
    proc = subprocess.Popen(
        [*bounds.prefix(), *argv],
        cwd=cwd,
        env={**(env or os.environ), **ENV},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        encoding="utf-8",
        errors="replace",
        start_new_session=True,
    )
    with proc:
        try:
            out, err = proc.communicate(timeout=bounds.wall_seconds)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            err += f"\n(stopped after {bounds.wall_seconds:g} s)"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@contextmanager
def popen(
    argv: Sequence[str],
    bounds: Bounds,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> Iterator[subprocess.Popen[bytes]]:
    """`argv` started within `bounds`, for reading as a stream. Its group is killed at the
    deadline, and when the block ends if it is still going."""
    proc: subprocess.Popen[bytes] = subprocess.Popen(
        [*bounds.prefix(), *argv],
        cwd=cwd,
        env={**(env or os.environ), **ENV},
        start_new_session=True,
        **kwargs,
    )
    timer = threading.Timer(bounds.wall_seconds, _kill_group, (proc,))
    timer.daemon = True
    timer.start()
    try:
        with proc:
            try:
                yield proc
            finally:
                _kill_group(proc)
    finally:
        timer.cancel()
