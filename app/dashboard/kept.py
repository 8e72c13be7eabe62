"""A pipeline's kept commits on the dashboard: the list, and a set's bundle to download.

Runners write them (`runner.keptstore`); the dashboard only reads. A bundle is sent
as it is stored, chunk by chunk, so a large one never sits in the App's memory.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from app.redisio import hgetall, settle
from runner import contract
from runner.kept import KeptRecord

log = logging.getLogger("trimo.dashboard")


async def kept_of(redis: aioredis.Redis, pipeline_id: str, clone_url: str) -> list[KeptRecord]:
    """The pipeline's kept sets (of its own repository), pending first, then by number."""
    raw = await hgetall(redis, contract.kept_work(pipeline_id))
    found = []
    for value in raw.values():
        try:
            record = KeptRecord.model_validate_json(value)
        except ValueError:
            log.warning("a kept record of %s is unreadable", pipeline_id)
            continue
        if record.clone_url == clone_url:
            found.append(record)
    return sorted(found, key=lambda r: (not r.pending, len(r.id), r.id))


async def bundle_chunks(redis: aioredis.Redis, record: KeptRecord) -> AsyncIterator[bytes]:
    """The bytes of `record`'s bundle, as stored; it stops short if the store lost some."""
    assert record.bundle is not None
    for index in range(record.bundle.chunks):
        chunk = await settle(redis.lindex(record.bundle.key, index))
        if not isinstance(chunk, bytes):
            log.warning("the kept bundle %s of %s is incomplete", record.id, record.pipeline)
            return
        yield chunk
