"""A lane's release says what became of it: settled, owed anew while it ran (go again),
or taken by another process since (leave it to that one) (real Redis)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from app.reporting import owed

pytestmark = [pytest.mark.redis]


async def test_a_release_tells_settled_owed_anew_and_taken_apart(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        [member] = await owed.owe(client, "run-1", "comment")
        leased = await owed.lease(client, member)
        assert leased is not None
        assert await owed.release(client, member, leased, None) == owed.SETTLED
        assert await owed.due(client) == []

        await owed.owe(client, "run-1", "comment")
        leased = await owed.lease(client, member)
        assert leased is not None
        await owed.owe(client, "run-1", "comment")  # the run's next event, meanwhile
        assert await owed.release(client, member, leased, None) == owed.OWED_ANEW
        assert await owed.due(client) == [member]

        leased = await owed.lease(client, member)
        assert leased is not None
        await client.zadd(owed.OWED, {member: leased + 5000})  # another process's lease
        assert await owed.release(client, member, leased, None) == owed.TAKEN
        assert await owed.due(client) == []
    finally:
        await client.aclose()
