"""`app.ops.server.supervise`: a failing part restarts with backoff; only fatal errors end it."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from app.ops.server import supervise
from app.settings import SettingsError


async def test_a_failing_part_restarts_with_growing_backoff() -> None:
    stop = asyncio.Event()
    starts: list[float] = []
    loop = asyncio.get_running_loop()

    async def part() -> None:
        starts.append(loop.time())
        if len(starts) < 4:
            raise RuntimeError("boom")
        await stop.wait()

    task = asyncio.create_task(supervise("part", part, stop, first_backoff=0.05))
    while len(starts) < 4:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 1)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2


async def test_a_part_that_ends_by_itself_is_restarted() -> None:
    stop = asyncio.Event()
    runs = 0

    async def part() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            stop.set()

    await asyncio.wait_for(supervise("part", part, stop, first_backoff=0.01), 1)
    assert runs == 3


async def test_a_fatal_configuration_error_ends_supervision() -> None:
    stop = asyncio.Event()
    runs = 0

    async def part() -> None:
        nonlocal runs
        runs += 1
        raise SettingsError("TRIMO_GITHUB_APP_ID is not set")

    with pytest.raises(SettingsError):
        await asyncio.wait_for(supervise("part", part, stop, first_backoff=0.01), 1)
    assert runs == 1


async def test_stop_interrupts_the_backoff() -> None:
    stop = asyncio.Event()

    async def part() -> None:
        stop.set()
        raise RuntimeError("boom")

    await asyncio.wait_for(supervise("part", part, stop, first_backoff=30), 1)


async def test_a_part_that_meets_a_task_cancelled_under_it_is_restarted() -> None:
    """arq's `Worker.close()` raises the CancelledError of the job it cancelled: when Redis
    died mid-job, that ended the event worker's supervision and with it `trimo serve`."""
    stop = asyncio.Event()
    runs = 0

    async def part() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            job = asyncio.create_task(asyncio.sleep(60))
            job.cancel()
            await job  # what Worker.close() does with a job it cancelled
        stop.set()

    await asyncio.wait_for(supervise("part", part, stop, first_backoff=0.01), 5)
    assert runs == 2


async def test_cancelling_the_supervision_itself_still_ends_it() -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(supervise("part", stop.wait, stop))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
