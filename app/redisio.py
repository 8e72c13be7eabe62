"""Typed calls on the Redis client, so no caller needs `# type: ignore`.

redis-py types its hash and set commands as `Awaitable[T] | T` (one signature for the sync
and the async client), which an `await` cannot take under strict mypy. These wrappers await
the async client's answer and return plain `str` values. `held` and `waited` are locks that
outlive no holder: renewed while their holder works, free soon after it dies or loses Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence

import redis.asyncio as aioredis
from redis.asyncio.lock import Lock
from redis.exceptions import LockNotOwnedError, RedisError

from runner.redisio import settle

__all__ = [
    "LockBusy",
    "LockLost",
    "as_text",
    "ensure_group",
    "evaluate",
    "hdel",
    "held",
    "hget",
    "hgetall",
    "hmget",
    "hset",
    "owner_token",
    "sadd",
    "settle",
    "smembers",
    "srem",
    "waited",
]

log = logging.getLogger("trimo.redis")


def as_text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


async def hget(redis: aioredis.Redis, key: str, field: str) -> str | None:
    raw: bytes | str | None = await settle(redis.hget(key, field))
    return as_text(raw)


async def hmget(redis: aioredis.Redis, key: str, *fields: str) -> list[str | None]:
    raw: list[bytes | str | None] = await settle(redis.hmget(key, list(fields)))
    return [as_text(value) for value in raw]


async def hgetall(redis: aioredis.Redis, key: str) -> dict[str, str]:
    raw: Mapping[bytes | str, bytes | str] = await settle(redis.hgetall(key))
    return {as_text(k) or "": as_text(v) or "" for k, v in raw.items()}


async def hset(redis: aioredis.Redis, key: str, mapping: Mapping[str, str | int]) -> int:
    count: int = await settle(redis.hset(key, mapping=dict(mapping)))
    return count


async def hdel(redis: aioredis.Redis, key: str, *fields: str) -> int:
    count: int = await settle(redis.hdel(key, *fields))
    return count


async def smembers(redis: aioredis.Redis, key: str) -> set[str]:
    raw: set[bytes | str] = await settle(redis.smembers(key))
    return {as_text(member) or "" for member in raw}


async def sadd(redis: aioredis.Redis, key: str, *members: str) -> int:
    count: int = await settle(redis.sadd(key, *members))
    return count


async def srem(redis: aioredis.Redis, key: str, *members: str) -> int:
    count: int = await settle(redis.srem(key, *members))
    return count


async def ensure_group(redis: aioredis.Redis, stream: str, group: str) -> None:
    """Consumer group `group` on `stream` (both made if missing; there already is fine)."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except aioredis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


@contextlib.asynccontextmanager
async def held(redis: aioredis.Redis, key: str, seconds: float) -> AsyncIterator[bool]:
    """Whether this process got `key` to itself (across processes), without waiting.

    Taken for `seconds` and renewed every quarter of that while the block runs, so a holder
    that is killed, or that loses Redis (a crash keeps the key in its append-only file),
    holds the others back for at most `seconds`, never for a long fixed term."""
    lock = redis.lock(key, timeout=seconds)
    if not await lock.acquire(blocking=False):
        yield False
        return
    async with _renewed(lock, seconds):
        yield True


class LockBusy(RedisError):
    """A lock stayed another holder's for as long as its caller would wait."""


class LockLost(RedisError):
    """A write under a lock came after the lock had expired (and may be another's now)."""


async def evaluate(
    redis: aioredis.Redis, script: str, keys: Sequence[str], args: Sequence[str]
) -> object:
    """The answer of Lua `script` run on `keys` and `args` (atomic in Redis)."""
    return await settle(redis.eval(script, len(keys), *keys, *args))


@contextlib.asynccontextmanager
async def waited(redis: aioredis.Redis, key: str, seconds: float) -> AsyncIterator[Lock]:
    """`key` to this process (across processes), waiting up to `seconds` for it (`LockBusy`
    when it stays taken), renewed like `held`'s. The lock is yielded: a write that must not land
    once it is lost checks its token (`owner_token`) in the same Redis call."""
    lock = redis.lock(key, timeout=seconds, blocking_timeout=seconds)
    if not await lock.acquire():
        raise LockBusy(f"{key} stayed taken for {seconds:.0f}s")
    async with _renewed(lock, seconds):
        yield lock


@contextlib.asynccontextmanager
async def _renewed(lock: Lock, seconds: float) -> AsyncIterator[None]:
    """Renew the acquired `lock` every quarter of its term while the block runs, then free it."""
    renewal = asyncio.create_task(_renew(lock, seconds / 4))
    try:
        yield
    finally:
        renewal.cancel()
        with contextlib.suppress(RedisError):  # expired, or Redis away: it expires by itself
            await lock.release()


def owner_token(lock: Lock) -> str:
    """The value `lock`'s key holds while this process owns it."""
    token = lock.local.token
    return token.decode() if isinstance(token, bytes) else str(token)


async def _renew(lock: Lock, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await lock.reacquire()
        except LockNotOwnedError:
            log.warning("lock %s expired while held (was Redis away?)", lock.name)
            return
        except RedisError:
            continue  # Redis away: try again; if it stays away, the lock expires
