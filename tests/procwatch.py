"""The most memory a process's children used: its descendants' resident sizes, sampled.

`getrusage(RUSAGE_CHILDREN)` keeps the largest child of the whole process's life, so a
test or a bench that wants the peak of one stretch of time watches `/proc` instead.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import TracebackType

PROC = Path("/proc")


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """`field` of /proc/<pid>/status (VmRSS, or VmHWM for the peak), in bytes; 0 if gone."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def descendants(root: int) -> list[int]:
    """The processes below `root` (children, their children, ...)."""
    parents: dict[int, int] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: parse after the last ")".
        fields = stat[stat.rfind(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    found: list[int] = []
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        found += children
        frontier += children
    return found


class ChildPeak:
    """While open, samples the resident size of `root`'s descendants; `peak` is the largest
    any one of them reached (by its own VmHWM), `peak_name` its command."""

    def __init__(self, root: int | None = None, interval: float = 0.05) -> None:
        self.root = root or os.getpid()
        self.interval = interval
        self.peak = 0
        self.peak_name = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> ChildPeak:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            for pid in descendants(self.root):
                size = rss_bytes(pid, "VmHWM")
                if size > self.peak:
                    self.peak = size
                    try:
                        self.peak_name = (PROC / str(pid) / "comm").read_text().strip()
                    except OSError:
                        self.peak_name = "?"
