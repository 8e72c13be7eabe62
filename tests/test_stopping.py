"""Background tasks stop for sure, even those that swallow a cancellation."""

from __future__ import annotations

import asyncio
import logging

import pytest

from runner.stopping import stop_tasks


async def _swallowing(times: int, stopped: list[str]) -> None:
    """Ignores its first `times` cancellations, as a library caught mid-call can."""
    ignored = 0
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            ignored += 1
            if ignored > times:
                stopped.append("stopped")
                raise


async def test_a_task_that_swallows_a_cancellation_is_cancelled_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stopped: list[str] = []
    stubborn = asyncio.create_task(_swallowing(2, stopped), name="heartbeat")
    plain = asyncio.create_task(asyncio.sleep(3600), name="sweep")
    await asyncio.sleep(0)
    caplog.set_level(logging.WARNING, "trimo.runner")

    # A single cancel and a gather, as the runner did, never returns.
    stubborn_once = asyncio.create_task(_swallowing(1, []))
    await asyncio.sleep(0)
    stubborn_once.cancel()
    done, _ = await asyncio.wait([stubborn_once], timeout=0.3)
    assert not done

    left = await stop_tasks([stubborn, plain, stubborn_once], give_up_seconds=10)

    assert left == []
    assert stopped == ["stopped"]
    assert stubborn.cancelled() and plain.cancelled() and stubborn_once.cancelled()
    assert "heartbeat ignored its cancellation" in caplog.text


async def test_a_task_that_never_stops_is_named_and_left_behind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stopped: list[str] = []
    never = asyncio.create_task(_swallowing(40, stopped), name="tend_mirrors")
    done_already = asyncio.create_task(asyncio.sleep(0), name="done")
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    started = loop.time()

    left = await stop_tasks([never, done_already], give_up_seconds=1.5)

    assert left == [never]
    assert loop.time() - started < 5
    assert "tend_mirrors did not stop; leaving it behind" in caplog.text
    assert "_swallowing" in caplog.text  # where it was, for whoever reads the log
    while not never.done():  # its last few, so that the test ends cleanly
        never.cancel()
        await asyncio.wait([never], timeout=0.01)
    assert stopped == ["stopped"]
