"""Typed calls on the Redis client, so no caller needs `# type: ignore`.

redis-py types its hash and set commands as `Awaitable[T] | T` (one signature for the sync
and the async client), which an `await` cannot take under strict mypy. These wrappers await
the async client's answer and return plain `str` values.
"""

from __future__ import annotations

from collections.abc import Mapping

import redis.asyncio as aioredis

from runner.redisio import settle

__all__ = [
    "as_text",
    "ensure_group",
    "hdel",
    "hget",
    "hgetall",
    "hmget",
    "hset",
    "sadd",
    "settle",
    "smembers",
    "srem",
]


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
