"""Where a run's time goes before its agent starts: each step's seconds, logged once.

    phases = Phases()
    ... bring the mirror up to date ...
    phases.mark("mirror")
    ...
    log.info("run %s: agent started after %s", run_id, phases)   # 0.412 s (mirror 0.021, ...)

`bench/runner_latency.py --log` reads these lines back to show, beside the time to agent,
which steps grow when runs start together. Until `over()` (or for START_SECONDS at most), a
run counts as `starting()`: what the runner makes ahead for the next runs waits for it.
"""

from __future__ import annotations

import re
import threading
import time
import weakref

LINE = re.compile(r"agent started after (?P<total>[0-9.]+) s \((?P<steps>[^)]*)\)")
"""The log line's figures, as `steps_of` reads them."""
START_SECONDS = 10.0
"""A run still starting after this long (a slow setup, a stuck step) no longer counts."""

_lock = threading.Lock()
_open: weakref.WeakSet[Phases] = weakref.WeakSet()


def starting() -> int:
    """How many runs of this process are on their way to their agent."""
    now = time.monotonic()
    with _lock:
        return sum(now - phases.began < START_SECONDS for phases in _open)


class Phases:
    """The seconds each named step took, from when this was made."""

    def __init__(self) -> None:
        self.began = self._last = time.monotonic()
        self.steps: dict[str, float] = {}
        with _lock:
            _open.add(self)

    def over(self) -> None:
        """The run's agent started, or it never will."""
        with _lock:
            _open.discard(self)

    def mark(self, step: str) -> None:
        """`step` ended now: it took the time since the last mark (added to, when again)."""
        now = time.monotonic()
        self.steps[step] = self.steps.get(step, 0.0) + now - self._last
        self._last = now

    def __str__(self) -> str:
        steps = ", ".join(f"{name} {seconds:.3f}" for name, seconds in self.steps.items())
        return f"{self._last - self.began:.3f} s ({steps})"


def steps_of(message: str) -> dict[str, float] | None:
    """The total (as `total`) and each step's seconds in a log line `Phases` made; None
    when `message` is not one."""
    found = LINE.search(message)
    if found is None:
        return None
    steps = {"total": float(found["total"])}
    for part in filter(None, found["steps"].split(", ")):
        name, _, seconds = part.rpartition(" ")
        steps[name] = float(seconds)
    return steps
