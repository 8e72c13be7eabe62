"""Stopping background tasks for sure: a task that swallows its cancellation (a library
that catches it mid-connect, say) is cancelled again until it ends, and one that never
does is named in the log and left behind rather than holding the process."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Collection

log = logging.getLogger("trimo.runner")

AGAIN_SECONDS = 1.0
GIVE_UP_SECONDS = 30.0


async def stop_tasks(
    tasks: Collection[asyncio.Task[object]],
    give_up_seconds: float = GIVE_UP_SECONDS,
) -> list[asyncio.Task[object]]:
    """Cancel `tasks` (again every second) until they end or `give_up_seconds` pass; the
    ones still running then, each logged with where it is."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_seconds
    pending = {task for task in tasks if not task.done()}
    first = True
    while pending and loop.time() < deadline:
        for task in pending:
            if not first:
                log.warning("%s ignored its cancellation; cancelling it again", task.get_name())
            task.cancel()
        first = False
        _, pending = await asyncio.wait(
            pending, timeout=min(AGAIN_SECONDS, max(0.0, deadline - loop.time()))
        )
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.debug("%s ended with %r", task.get_name(), task.exception())
    for task in pending:
        log.error("%s did not stop; leaving it behind:\n%s", task.get_name(), _where(task))
    return sorted(pending, key=lambda task: task.get_name())


def _where(task: asyncio.Task[object]) -> str:
    stack = io.StringIO()
    task.print_stack(file=stack)
    return stack.getvalue()
