"""The App takes a run's job back from its queue only while no runner has it (real Redis).

A runner's hold on a job it took lasts a minute at a time (runner.registry.HOLD_SECONDS):
while it has lapsed (Redis away, or back from a file without it), the job is in its queue
with no hold. A run a runner took is still started then, never taken back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from arq import create_pool
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix

from app.runs.dispatch import Dispatch
from runner import contract
from runner.redisurl import redis_settings
from tests.dashboard_helpers import make_run

pytestmark = pytest.mark.redis


@pytest_asyncio.fixture
async def pool(redis_url: str) -> AsyncIterator[ArqRedis]:
    arq = await create_pool(redis_settings(redis_url))
    yield arq
    await arq.aclose()


async def queued(pool: ArqRedis, run_id: str) -> None:
    job = await pool.enqueue_job(
        contract.RUN_FUNCTION, {}, _job_id=run_id, _queue_name=contract.run_queue("default")
    )
    assert job is not None


async def no_token(installation_id: int, repo: str) -> str:
    raise AssertionError("take_back mints no token")


async def test_a_queued_run_no_runner_took_is_taken_back(pool: ArqRedis) -> None:
    run = make_run("takeback-1")
    await queued(pool, run.run_id)
    assert await Dispatch(pool, no_token).take_back(run) == "taken_back"
    assert await pool.zscore(contract.run_queue("default"), run.run_id) is None


async def test_a_run_a_runner_took_is_started_even_while_its_hold_lapsed(pool: ArqRedis) -> None:
    run = make_run("takeback-2")
    await queued(pool, run.run_id)
    await pool.set(contract.run_taken(run.run_id), "runner-1")
    assert not await pool.exists(in_progress_key_prefix + run.run_id)
    assert await Dispatch(pool, no_token).take_back(run) == "started"
    assert await pool.zscore(contract.run_queue("default"), run.run_id) is not None


async def test_a_run_being_taken_at_this_moment_is_started(pool: ArqRedis) -> None:
    run = make_run("takeback-3")
    await queued(pool, run.run_id)
    await pool.psetex(in_progress_key_prefix + run.run_id, 60_000, b"1")
    assert await Dispatch(pool, no_token).take_back(run) == "started"
