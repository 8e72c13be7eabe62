"""The dashboard says whether a run's checks passed: on its card and its pipeline's page."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from app.runs.pipelines import Pipelines
from runner.job import CheckResult, CommitInfo, Outcome, RunFinished, VerifyReport
from tests.dashboard_helpers import dashboard_settings, make_pipeline, make_run, signed_in
from tests.webhook_helpers import RunningApp, running_app

SHA = "f" * 40


@pytest.fixture
def dash(redis_url: str) -> Iterator[RunningApp]:
    with running_app(dashboard_settings(redis_url)) as running:
        yield running


async def finished_with(redis_url: str, number: int, report: VerifyReport) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        store = Pipelines(client)  # type: ignore[arg-type]
        run = make_run(f"o.r.{number}-a")
        await store.add_run(make_pipeline("o/r", number, f"Work {number}"), run)
        await store.mark_running(run.run_id, runner="runner-1", started_at=datetime.now(UTC))
        passed = report.passed
        await store.finish(
            RunFinished(
                run_id=run.run_id,
                outcome=Outcome.SUCCESS if passed else Outcome.FAILURE,
                reason="" if passed else "checks failing: tests",
                commits=[CommitInfo(sha=SHA, subject="work")],
                verify=report,
            )
        )
    finally:
        await client.aclose()


def test_cards_and_pipeline_pages_say_verified_or_checks_failing(
    dash: RunningApp, redis_url: str
) -> None:
    good = VerifyReport(sha=SHA, checks=[CheckResult(name="tests", passed=True, exit_code=0)])
    bad = VerifyReport(
        sha=SHA,
        checks=[
            CheckResult(name="tests", passed=False, exit_code=2),
            CheckResult(name="lint", passed=False, timed_out=True, problem="ran too long"),
        ],
    )
    asyncio.run(finished_with(redis_url, 21, good))
    asyncio.run(finished_with(redis_url, 22, bad))
    client, _csrf = signed_in(dash.base_url, dash.settings, "alice", {"o/r": "write"})
    with client:
        board = client.get("/").text
        assert board.count('data-verify="verified"') == 1
        assert board.count('data-verify="checks failing"') == 1
        page = client.get("/pipelines/o.r.22").text
        assert 'data-verify="checks failing"' in page
        assert "✗ tests (exit code 2)" in page and "✗ lint (ran too long)" in page
        assert 'data-verify="verified"' in client.get("/pipelines/o.r.21").text
