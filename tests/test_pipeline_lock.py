"""A pipeline's lock is renewed while held, and a change saved after the lock was lost (its
holder starved past the lock's term, another process took it) never overwrites the newer one."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from app.redisio import LockLost
from app.runs import pipelines as pipelines_module
from app.runs.pipelines import PIPELINE_PREFIX, Pipeline, Pipelines
from tests.dashboard_helpers import make_pipeline, make_run

RUN = "o.r.1-a"


class Starved(Pipelines):
    """A process whose lock expires while it reads the pipeline, and whose pipeline another
    process changes meanwhile."""

    other: Pipelines

    async def get(self, pipeline_id: str) -> Pipeline | None:
        pipeline = await super().get(pipeline_id)
        await self.redis.delete(f"{PIPELINE_PREFIX}{pipeline_id}:lock")
        await self.other.mark_running(RUN, runner="other-runner")
        return pipeline


async def test_a_change_saved_after_its_lock_was_lost_overwrites_nothing(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        other = Pipelines(client)  # type: ignore[arg-type]
        await other.add_run(make_pipeline("o/r", 1, "One"), make_run(RUN))
        starved = Starved(client)  # type: ignore[arg-type]
        starved.other = other

        with pytest.raises(LockLost):
            await starved.attach(RUN, check_run_id=7)

        pipeline = await other.get("o.r.1")
        assert pipeline is not None
        run = pipeline.find(RUN)
        assert run is not None
        assert (run.status, run.runner) == ("running", "other-runner")
        assert run.check_run_id is None
        # Its delivery tried again, the change lands on the newer pipeline.
        await other.attach(RUN, check_run_id=7)
        again = await other.get("o.r.1")
        assert again is not None
        found = again.find(RUN)
        assert found is not None
        assert (found.status, found.check_run_id) == ("running", 7)
    finally:
        await client.aclose()


async def test_a_change_that_outlasts_the_lock_term_keeps_its_lock(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipelines_module, "LOCK_SECONDS", 0.4)
    client = aioredis.Redis.from_url(redis_url)
    try:
        store = Pipelines(client)  # type: ignore[arg-type]
        await store.add_run(make_pipeline("o/r", 2, "Two"), make_run("o.r.2-a"))

        class Slow(Pipelines):
            async def get(self, pipeline_id: str) -> Pipeline | None:
                pipeline = await super().get(pipeline_id)
                await asyncio.sleep(1.2)  # three lock terms, as a starved process would
                return pipeline

        await Slow(client).mark_running("o.r.2-a", runner="box")  # type: ignore[arg-type]
        saved = await store.get("o.r.2")
        assert saved is not None
        run = saved.find("o.r.2-a")
        assert run is not None
        assert (run.status, run.runner) == ("running", "box")
    finally:
        await client.aclose()
