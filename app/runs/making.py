"""A new run's check run and progress comment, being made while its runner starts it.

A delivery queues a run that is next in line at once, beside making its report objects,
so the runner's start-up overlaps GitHub's round trips. Until both objects are recorded
on the run (or given up), the run is marked here, and the reporter holds its events: a
`started` reported before its check run was recorded would never show it in progress.
The mark expires, so a delivery that died half-way holds nobody for long.
"""

from __future__ import annotations

from typing import Final

import redis.asyncio as aioredis

PREFIX: Final = "trimo:run:making:"
MAKING_SECONDS: Final = 30
"""The longest a run's events wait for its report objects (each write is timed at 10 s)."""


async def begin(redis: aioredis.Redis, run_id: str) -> None:
    await redis.set(PREFIX + run_id, "1", ex=MAKING_SECONDS)


async def done(redis: aioredis.Redis, run_id: str) -> None:
    await redis.delete(PREFIX + run_id)


async def pending(redis: aioredis.Redis, run_id: str) -> bool:
    """Whether `run_id`'s report objects are still being made."""
    return bool(await redis.exists(PREFIX + run_id))
