"""`app.redisio.held`: one holder at a time, and no dead holder keeps the lock for long.

The run report lock used to be taken for 300 s and given back only by its holder: an App
process killed mid-report, or one that lost Redis as it gave the lock back (the key kept in
the append-only file), held the run's check run back for up to five minutes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from app.redisio import held
from tests.redis_servers import RedisProcess

pytestmark = pytest.mark.redis

HOLDER = """
import asyncio, sys
import redis.asyncio as aioredis
from app.redisio import held

async def main() -> None:
    client = aioredis.Redis.from_url(sys.argv[1])
    async with held(client, sys.argv[2], float(sys.argv[3])) as mine:
        print("held" if mine else "busy", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(
        tmp_path / "redis", ["--appendonly", "yes", "--appendfsync", "always"]
    ).start()
    try:
        yield server
    finally:
        server.stop()


async def taken_within(client: aioredis.Redis, key: str, timeout: float) -> float:
    """Seconds until this process gets `key`; fails after `timeout`."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        async with held(client, key, 5.0) as mine:
            if mine:
                return time.monotonic() - began
        await asyncio.sleep(0.05)
    raise AssertionError(f"{key} still held after {timeout}s")


async def test_one_holder_at_a_time_and_free_once_given_back(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    key = f"test:lock:{uuid.uuid4()}"
    async with held(client, key, 5.0) as first, held(client, key, 5.0) as second:
        assert (first, second) == (True, False)
    assert await taken_within(client, key, 1.0) < 1.0
    await client.aclose()


async def test_a_holder_working_past_the_locks_seconds_keeps_it(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    key = f"test:lock:{uuid.uuid4()}"
    seconds = 0.4
    async with held(client, key, seconds) as mine:
        assert mine
        until = time.monotonic() + 5 * seconds  # renewed all along, never lapses
        while time.monotonic() < until:
            async with held(client, key, seconds) as theirs:
                assert not theirs
            await asyncio.sleep(0.05)
    assert await taken_within(client, key, 1.0) < 1.0
    await client.aclose()


async def test_a_holder_killed_9_frees_the_lock_within_its_seconds(redis_url: str) -> None:
    key = f"test:lock:{uuid.uuid4()}"
    seconds = 2.0
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, redis_url, key, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
    finally:
        holder.kill()
        holder.wait(10)
    client = aioredis.Redis.from_url(redis_url)
    assert await client.exists(key), "the killed holder left its lock behind"
    assert await taken_within(client, key, seconds + 3.0) <= seconds + 1.0
    await client.aclose()


async def test_a_holder_cut_off_by_a_redis_crash_frees_it_within_its_seconds(
    aof_redis: RedisProcess,
) -> None:
    client = aioredis.Redis.from_url(aof_redis.url, socket_timeout=2, socket_connect_timeout=2)
    key = f"test:lock:{uuid.uuid4()}"
    seconds = 2.0
    async with held(client, key, seconds) as mine:
        assert mine
        aof_redis.kill9()  # giving the lock back fails; leaving the block must not
    aof_redis.start()
    assert await client.exists(key), "the append-only file kept the lock"
    assert await taken_within(client, key, seconds + 3.0) <= seconds + 1.0
    await client.aclose()
