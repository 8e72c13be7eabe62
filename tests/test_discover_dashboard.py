"""The dashboard shows discovery runs and their plans like any other run, escaped."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from arq.connections import ArqRedis

from app.runs.pipelines import Pipelines
from runner.job import Outcome, RunFinished
from tests.dashboard_helpers import (
    dashboard_settings,
    make_pipeline,
    make_run,
    seed_sync,
    signed_in,
)
from tests.webhook_helpers import RunningApp, running_app

PLAN = '## Plan\n1. <script>alert("x")</script> fix the form'


@pytest.fixture
def dash(redis_url: str) -> Iterator[RunningApp]:
    with running_app(dashboard_settings(redis_url)) as running:
        yield running


async def discovered(redis_url: str, run_id: str) -> None:
    client = ArqRedis.from_url(redis_url)
    try:
        await Pipelines(client).finish(
            RunFinished(run_id=run_id, outcome=Outcome.SUCCESS, plan=PLAN)
        )
    finally:
        await client.aclose()


def test_a_discovery_run_shows_its_plan_escaped(dash: RunningApp, redis_url: str) -> None:
    pipeline = make_pipeline("o/r", 5, "Slow login")
    run = make_run("o.r.5-d", prompt="Slow login").model_copy(update={"mode": "discover"})
    seed_sync(redis_url, pipeline, run, "running")
    asyncio.run(discovered(redis_url, run.run_id))
    client, _ = signed_in(dash.base_url, dash.settings, "alice", {"o/r": "write"})
    with client:
        page = client.get("/runs/o.r.5-d")
        assert page.status_code == 200
        assert "Discovery run" in page.text and 'id="plan"' in page.text
        assert "fix the form" in page.text and '<script>alert("x")' not in page.text
        timeline = client.get("/pipelines/o.r.5")
        assert "· discovery" in timeline.text and "fix the form" in timeline.text
