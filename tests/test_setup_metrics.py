"""The setup cache's hit rate, evictions and size reach the App's /metrics from Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from runner import figures
from tests import webhook_helpers
from tests.metrics_helpers import scrape
from tests.webhook_helpers import RunningApp

pytestmark = pytest.mark.redis
webhook_app = webhook_helpers.webhook_app


@pytest.fixture
async def pool(redis_url: str) -> AsyncIterator[ArqRedis]:
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    yield pool
    await pool.aclose()


async def test_setup_cache_lookups_evictions_and_size_are_on_metrics(
    pool: ArqRedis, webhook_app: RunningApp
) -> None:
    await figures.observe_setup(pool, "box-1", hits=3, misses=1, evicted=0, size=5000)
    await figures.observe_setup(pool, "box-1", hits=1, misses=1, evicted=2, size=4000)
    await figures.observe_run(pool, "box-2", outcome="success", duration=1.0, time_to_agent=0.5)

    got = scrape(webhook_app.client)

    lookups = "trimo_runner_setup_cache_lookups_total"
    assert got.value(lookups, runner="box-1", result="hit") == 4
    assert got.value(lookups, runner="box-1", result="miss") == 2
    assert got.value("trimo_runner_setup_cache_evictions_total", runner="box-1") == 2
    assert got.value("trimo_runner_setup_cache_bytes", runner="box-1") == 4000
    assert not got.has(lookups, runner="box-2")  # it has not reported its cache yet
