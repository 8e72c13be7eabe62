"""Background tasks stop for sure, even those that swallow a cancellation."""

from __future__ import annotations

import asyncio
import logging

import pytest
from arq import create_pool
from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus
from arq.worker import Worker, func

from runner.redisurl import redis_settings
from runner.stopping import close_worker, stop_tasks


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


async def _slow_job(ctx: dict[str, object]) -> str:
    await asyncio.sleep(1.0)
    return "done"


async def worker_in_a_job(pool: ArqRedis, redis_url: str, queue: str) -> tuple[Worker, Job]:
    """A worker that took a slow job, its loop stopped as the runner's duties are."""
    worker = Worker(
        functions=[func(_slow_job, name="slow")],
        queue_name=queue,
        redis_settings=redis_settings(redis_url),
        poll_delay=0.05,
        handle_signals=False,
    )
    job = await pool.enqueue_job("slow", _queue_name=queue)
    assert job is not None
    main = asyncio.create_task(worker.main())
    deadline = asyncio.get_running_loop().time() + 10
    while not worker.tasks:
        assert asyncio.get_running_loop().time() < deadline, "the worker never took the job"
        await asyncio.sleep(0.02)
    await stop_tasks([main])
    return worker, job


@pytest.mark.redis
async def test_closing_a_worker_whose_job_is_wrapping_up_waits_for_it(redis_url: str) -> None:
    """arq's close cancels a job task still going and re-raises that cancellation: a runner
    draining under load, its run ended but the job's bookkeeping not yet written, exited 1."""
    pool = await create_pool(redis_settings(redis_url))
    worker, job = await worker_in_a_job(pool, redis_url, "test:closing")

    await close_worker(worker, grace_seconds=30)

    assert await job.status() is JobStatus.complete
    assert await job.result(timeout=1) == "done"
    await pool.aclose()


@pytest.mark.redis
async def test_a_job_past_the_grace_is_cancelled_and_said_not_raised(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    pool = await create_pool(redis_settings(redis_url))
    worker, _job = await worker_in_a_job(pool, redis_url, "test:closing-late")

    await close_worker(worker, grace_seconds=0.1)

    assert all(task.done() for task in worker.tasks.values())
    assert "did not end within 0.1 s" in caplog.text
    await pool.aclose()
