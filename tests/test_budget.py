"""The write budget: its decisions without Redis, its window on the real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from app.reporting.budget import (
    Limits,
    LiveRun,
    Priority,
    Usage,
    WriteBudget,
    allows,
    due_live,
    live_interval,
)

LIMITS = Limits()


# --- decisions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("priority", "usage", "expected"),
    [
        (Priority.LIVE, Usage(minute=59, hour=10), True),
        (Priority.LIVE, Usage(minute=60, hour=10), False),  # the rest of the minute is kept
        (Priority.FINAL, Usage(minute=60, hour=10), True),
        (Priority.FIRST, Usage(minute=79, hour=10), True),
        (Priority.FINAL, Usage(minute=80, hour=10), False),  # GitHub's own limit
        (Priority.LIVE, Usage(minute=0, hour=380), False),
        (Priority.FINAL, Usage(minute=0, hour=499), True),
        (Priority.FINAL, Usage(minute=0, hour=500), False),
    ],
)
def test_who_may_write(priority: Priority, usage: Usage, expected: bool) -> None:
    assert allows(priority, usage, LIMITS) is expected


def test_one_run_on_a_fresh_budget_is_updated_every_few_seconds() -> None:
    assert LIMITS.base_interval <= live_interval(1, Usage(0, 0), LIMITS) <= 5
    assert live_interval(1, Usage(0, 0), Limits(horizon=60)) == LIMITS.base_interval


def test_live_updates_slow_down_as_runs_and_the_hour_fill_up() -> None:
    fresh = [live_interval(n, Usage(0, 0), LIMITS) for n in (1, 5, 10, 20)]
    assert fresh == sorted(fresh) and fresh[-1] > fresh[0]
    by_hour = [live_interval(4, Usage(0, used), LIMITS) for used in (0, 200, 300, 370)]
    assert by_hour == sorted(by_hour) and by_hour[-1] > 4 * by_hour[0]
    assert live_interval(4, Usage(0, 380), LIMITS) == float("inf")


def test_every_run_refreshed_once_a_minute_while_the_hour_allows() -> None:
    # A fresh hour affords a dozen runs a refresh a minute; more share what there is.
    assert live_interval(12, Usage(0, 0), LIMITS) <= LIMITS.floor_interval
    assert live_interval(20, Usage(0, 0), LIMITS) > LIMITS.floor_interval


def test_due_live_merges_news_and_refreshes_the_quiet() -> None:
    now = 1000.0
    runs = [
        LiveRun("news-recent", changed=True, last_sent=now - 1),  # within the interval
        LiveRun("news-old", changed=True, last_sent=now - 20),
        LiveRun("quiet-recent", changed=False, last_sent=now - 30),  # nothing new, < 1 min
        LiveRun("quiet-old", changed=False, last_sent=now - 61),
    ]
    assert due_live(runs, Usage(0, 0), LIMITS, now) == ["quiet-old", "news-old"]


def test_due_live_never_chooses_more_than_the_budget_holds() -> None:
    now = 1000.0
    runs = [LiveRun(f"r{i}", changed=True, last_sent=now - 600 - i) for i in range(10)]
    chosen = due_live(runs, Usage(minute=57, hour=0), LIMITS, now)
    assert chosen == ["r9", "r8", "r7"]  # three places left; the longest waiting first
    assert due_live(runs, Usage(minute=60, hour=0), LIMITS, now) == []


# --- Redis ---------------------------------------------------------------------------------


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


async def test_the_window_counts_a_minute_and_an_hour(client: aioredis.Redis) -> None:
    clock = [10_000.0]
    budget = WriteBudget(client, Limits(per_minute=3, per_hour=5), clock=lambda: clock[0])
    assert [await budget.take(7, Priority.FINAL) for _ in range(4)] == [True, True, True, False]
    assert await budget.usage(7) == Usage(minute=3, hour=3)
    assert await budget.usage(8) == Usage(minute=0, hour=0)  # per installation
    clock[0] += 61
    assert [await budget.take(7, Priority.FINAL) for _ in range(3)] == [True, True, False]
    assert await budget.usage(7) == Usage(minute=2, hour=5)
    clock[0] += 3600 - 60  # the first three fall out of the hour
    assert await budget.usage(7) == Usage(minute=0, hour=2)
    assert await budget.take(7, Priority.FINAL)


async def test_live_writes_leave_room_for_last_words(client: aioredis.Redis) -> None:
    clock = [20_000.0]
    limits = Limits(per_minute=5, live_per_minute=3)
    budget = WriteBudget(client, limits, clock=lambda: clock[0])
    live = [await budget.take(1, Priority.LIVE) for _ in range(5)]
    assert live == [True, True, True, False, False]
    assert [await budget.take(1, Priority.FINAL) for _ in range(3)] == [True, True, False]


async def test_processes_share_one_budget(redis_url: str) -> None:
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(3)]
    try:
        budgets = [WriteBudget(c, Limits(per_minute=10), clock=lambda: 30_000.0) for c in clients]
        taken = await asyncio.gather(
            *(b.take(3, Priority.FINAL) for b in budgets for _ in range(8))
        )
        assert sum(taken) == 10
    finally:
        for c in clients:
            await c.aclose()
