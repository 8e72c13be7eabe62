"""Where a run's time goes before its agent starts: each step's seconds, logged once.

    phases = Phases()
    ... bring the mirror up to date ...
    phases.mark("mirror")
    ...
    log.info("run %s: agent started after %s", run_id, phases)   # 0.412 s (mirror 0.021, ...)

`bench/runner_latency.py --log` reads these lines back to show, beside the time to agent,
which steps grow when runs start together.
"""

from __future__ import annotations

import re
import time

LINE = re.compile(r"agent started after (?P<total>[0-9.]+) s \((?P<steps>[^)]*)\)")
"""The log line's figures, as `steps_of` reads them."""


class Phases:
    """The seconds each named step took, from when this was made."""

    def __init__(self) -> None:
        self._began = self._last = time.monotonic()
        self.steps: dict[str, float] = {}

    def mark(self, step: str) -> None:
        """`step` ended now: it took the time since the last mark (added to, when again)."""
        now = time.monotonic()
        self.steps[step] = self.steps.get(step, 0.0) + now - self._last
        self._last = now

    def __str__(self) -> str:
        steps = ", ".join(f"{name} {seconds:.3f}" for name, seconds in self.steps.items())
        return f"{self._last - self._began:.3f} s ({steps})"


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
