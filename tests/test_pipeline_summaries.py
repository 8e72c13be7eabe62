"""The store keeps a summary and an activity index beside each pipeline, and says it changed."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from app.runs.pipelines import CHANGES, PIPELINE_IDS, PIPELINE_PREFIX, SUMMARY_PREFIX, Pipelines
from tests.dashboard_helpers import make_pipeline, make_run


async def test_every_save_updates_summary_index_and_channel(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    await pubsub.subscribe(CHANGES)
    store = Pipelines(client)  # type: ignore[arg-type]
    try:
        await store.add_run(make_pipeline("o/r", 1, "One"), make_run("o.r.1-a"))
        await asyncio.sleep(0.01)
        await store.add_run(make_pipeline("o/r", 2, "Two"), make_run("o.r.2-a"))
        await store.mark_running("o.r.1-a", runner="box")
        recent = await store.recent()
        assert [pid for pid, _ in recent] == ["o.r.1", "o.r.2"]  # the latest change first
        summaries = await store.summaries(["o.r.2", "missing", "o.r.1"])
        assert [(s.id, s.activity, s.title) for s in summaries] == [
            ("o.r.2", "queued", "Two"), ("o.r.1", "running", "One"),
        ]  # fmt: skip
        said: list[str] = []
        for _ in range(10):  # the subscription's own confirmation reads as None
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message is not None:
                said.append(message["data"].decode())
        assert said == ["o.r.1", "o.r.2", "o.r.1"]
    finally:
        await pubsub.aclose()
        await client.aclose()


async def test_pipelines_saved_before_the_index_are_indexed_when_read(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        old = make_pipeline("o/r", 3, "Old")
        old.runs.append(make_run("o.r.3-a"))
        await client.set(PIPELINE_PREFIX + old.id, old.model_dump_json())
        await client.sadd(PIPELINE_IDS, old.id)
        store = Pipelines(client)  # type: ignore[arg-type]
        assert [pid for pid, _ in await store.recent()] == ["o.r.3"]
        assert [s.title for s in await store.summaries(["o.r.3"])] == ["Old"]
    finally:
        await client.aclose()


async def test_an_unreadable_summary_hides_no_other(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        store = Pipelines(client)  # type: ignore[arg-type]
        await store.add_run(make_pipeline("o/r", 4, "Fine"), make_run("o.r.4-a"))
        await client.set(SUMMARY_PREFIX + "o.r.5", '{"id": "o.r.5", "broken": ')
        assert [s.id for s in await store.summaries(["o.r.5", "o.r.4"])] == ["o.r.4"]
    finally:
        await client.aclose()
