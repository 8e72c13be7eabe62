"""The reporter's channels are independent: one channel's trouble never delays another.

Each test breaks one channel on GitHub's side (the stand-in's faults, for ever) and runs
the reporter's own loop as `trimo serve` does, with its real backoff. The run's check run
must show its end within 10 s of the run's `finished` event; the broken channel ends up
given up or parked where the operator sees it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from app.reporting import reporter as reporter_module
from runner.job import Outcome, Pushed
from tests import test_reporter
from tests.test_reporter import World, finished

fake = test_reporter.fake
world = test_reporter.world

FOREVER = 100_000
DEADLINE_SECONDS = 10.0


@pytest.fixture
async def looping(world: World) -> AsyncIterator[World]:
    """`world` with its reporter running in the background, backoff as in production."""
    world.reporter.backoff = 1.0
    stop = asyncio.Event()
    task = asyncio.create_task(world.reporter.run(stop))
    yield world
    stop.set()
    await asyncio.wait_for(task, 60)


async def ends_within(world: World, run_id: str, seconds: float = DEADLINE_SECONDS) -> float:
    """Emit the run's end; how long its check run took to show it (fails past `seconds`)."""
    await world.emit(run_id, finished(run_id, Outcome.SUCCESS, commits=1))
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        check = world.check_of(run_id)
        if check is not None and check.status == "completed":
            assert check.conclusion == "success"
            return time.monotonic() - began
        await asyncio.sleep(0.05)
    check = world.check_of(run_id)
    raise AssertionError(
        f"check run still {check.status if check else None} {seconds:.0f}s after the run ended"
    )


async def eventually(what: str, holds: object, seconds: float = 60.0) -> None:
    """Wait for `holds()` (sync or async) to be true."""
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        result = holds()  # type: ignore[operator]
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {seconds:.0f}s: {what}")


async def finished_run(world: World, run_id: str) -> bool:
    return (await world.run(run_id)).status == "finished"


async def test_a_comment_that_404s_while_it_exists_never_holds_the_check_run(
    looping: World,
) -> None:
    world = looping
    number, run_id = await world.accept()
    note = (await world.run(run_id)).progress_comment_id
    world.state.fail_next("PATCH", rf"/issues/comments/{note}$", 404, times=FOREVER)

    await world.started(run_id)
    await ends_within(world, run_id)

    await eventually("the pipeline records the end", lambda: finished_run(world, run_id))
    assert len(world.bot_comments(number)) == 1  # it is there: no second note is posted


async def test_a_pull_request_github_refuses_for_ever_never_holds_the_check_run(
    looping: World,
) -> None:
    world = looping
    number, run_id = await world.accept()
    world.branch_from_main(await world.branch(number))
    world.state.fail_next("POST", r"/pulls$", 422, times=FOREVER)

    await world.started(run_id)
    await world.emit(run_id, Pushed(branch="b", sha="a" * 40, commits=1))
    await ends_within(world, run_id)

    await eventually(
        "the last word says why there is no pull request",
        lambda: any("would not open a pull request" in b for b in world.bot_comments(number)),
    )


@pytest.mark.parametrize("limited", [True, False], ids=["rate-limited", "not-accessible"])
async def test_reactions_refused_never_hold_the_check_run_or_the_comment(
    looping: World, limited: bool
) -> None:
    world = looping
    number, run_id = await world.accept()
    headers = {} if limited else {"x-ratelimit-remaining": "4000"}
    body = None if limited else {"message": "Resource not accessible by integration"}
    world.state.fail_next("POST", r"/reactions$", 403, headers=headers, body=body, times=FOREVER)

    await world.started(run_id)
    await ends_within(world, run_id)

    await eventually(
        "the progress comment shows the end",
        lambda: any("finished after" in b for b in world.bot_comments(number)),
    )


async def test_a_500_storm_on_comments_never_holds_the_check_run(looping: World) -> None:
    world = looping
    _number, run_id = await world.accept()
    world.state.fail_next("PATCH", r"/issues/comments/\d+$", 500, times=FOREVER)
    world.state.fail_next("POST", r"/issues/\d+/comments$", 500, times=FOREVER)
    world.state.fail_next("GET", r"/issues/comments/\d+$", 500, times=FOREVER)

    await world.started(run_id)
    await ends_within(world, run_id)
    await eventually("the pipeline records the end", lambda: finished_run(world, run_id))


async def test_a_check_run_failing_for_ever_is_parked_visibly_and_holds_no_other_channel(
    world: World,
) -> None:
    """Only the check run's own trouble delays it: it is tried again, then parked where the
    operator sees it; the comment shows the end meanwhile."""
    number, run_id = await world.accept()
    check = world.check_of(run_id)
    world.state.fail_next("PATCH", rf"/check-runs/{check.id}$", 500, times=FOREVER)

    await world.started(run_id)
    await world.emit(run_id, finished(run_id))
    await world.settle(steps=2 * reporter_module.TRANSIENT_TRIES + 2)

    assert any("finished after" in b for b in world.bot_comments(number))
    assert await world.pending() == 0 and await world.owed() == 0
    parked = await world.reporter.parked()
    assert {p["run_id"] for p in parked} == {run_id}
    assert all("500" in p["error"] for p in parked)
    assert (await world.run(run_id)).status == "finished"  # the pipeline goes on
