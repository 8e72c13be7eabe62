"""Stopping background tasks for sure: a task that swallows its cancellation (a library
that catches it mid-connect, say) is cancelled again until it ends, and one that never
does is named in the log and left behind rather than holding the process."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Collection

from arq.worker import Worker

log = logging.getLogger("trimo.runner")

AGAIN_SECONDS = 1.0
GIVE_UP_SECONDS = 30.0
WRAP_UP_SECONDS = 30.0
"""How long a job whose run has ended gets for arq's bookkeeping when its worker closes."""


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


async def close_worker(worker: Worker, grace_seconds: float) -> None:
    """Close an arq worker whose runs have ended. Their job tasks get `grace_seconds` to
    finish arq's bookkeeping (the result, the job's lock) before arq cancels them; arq's
    close would then raise that cancellation, which is said here instead."""
    going = [task for task in worker.tasks.values() if not task.done()]
    if going:
        _, late = await asyncio.wait(going, timeout=grace_seconds)
        if late:
            log.warning("%d job(s) of %s did not end within %.1f s; cancelling them",
                        len(late), worker.queue_name, grace_seconds)  # fmt: skip
    try:
        await worker.close()
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    except Exception as exc:  # shutting down: said, never in the way
        log.warning("could not close %s cleanly: %s", worker.queue_name, exc)
