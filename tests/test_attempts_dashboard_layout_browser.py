"""Attempts on the pipeline page in headless Chromium over seeded Redis: the table ranks
itself live when the last attempt ends, hostile last words and agent names stay text,
a phone's 390 px never scrolls sideways (light and dark), and axe-core finds nothing
critical on the page, nor serious in the attempts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from app.runs.pipelines import Pipelines
from runner.events import Usage
from runner.job import CommitInfo, Outcome, RunFinished
from tests.dashboard_helpers import make_pipeline
from tests.test_attempts_dashboard import seed_attempts
from tests.test_dashboard_live_browser import browser_as, dash_app
from tests.webhook_helpers import RunningApp

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ATTACK = "<img src=x onerror=\"document.title='pwned'\"> **bold** " + "w" * 400
AGENT = "<img src=x onerror=\"document.title='pwned'\">" + "a" * 200


@pytest.fixture
def dash(redis_url: str) -> Iterator[RunningApp]:
    yield from dash_app(redis_url)


def finish(redis_url: str, run_id: str) -> None:
    async def go() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            done = RunFinished(
                run_id=run_id, outcome=Outcome.SUCCESS, head_sha="f" * 40,
                commits=[CommitInfo(sha="f" * 40, subject="Late")],
                usage=Usage(input_tokens=5, output_tokens=5, cost_usd=0.25),
                last_word="late but done", at=datetime.now(UTC) + timedelta(seconds=30),
            )  # fmt: skip
            store = Pipelines(client)  # type: ignore[arg-type]
            await store.mark_running(run_id, runner="runner-1", started_at=datetime.now(UTC))
            await store.finish(done)
        finally:
            await client.aclose()

    asyncio.run(go())


def test_the_table_ranks_itself_when_the_last_attempt_ends(
    dash: RunningApp, redis_url: str, request: pytest.FixtureRequest
) -> None:
    pipeline = make_pipeline("o/r", 40, "Answer")
    asyncio.run(seed_attempts(redis_url, pipeline, ["script", AGENT], [ATTACK], ended=1))
    window = browser_as(dash, request.node.name)
    try:
        window.get("/pipelines/o.r.40")
        window.element(".attempts")
        assert [r.get_attribute("data-place") for r in window.find("tr.attempt")] == ["0", "0"]
        assert window.find("#pick-1") and not window.find("#pick-2")
        finish(redis_url, "o.r.40-s.2")
        window.element('tr.attempt[data-place="2"]', timeout=30)  # no reload
        window.element("#pick-2")
        assert "late but done" in window.text(".attempts-table")
        assert "$0.75" in window.text(".attempts-total")
        window.wait(lambda: len(window.find(".attempt-column")) == 2, 20, "the diffs")
        assert "onerror" in window.text(".attempts-table")  # shown as text…
        assert window.driver.title != "pwned"  # …never run
        assert window.violations() == []
        assert window.violations(("critical", "serious"), within=".attempts") == []
    finally:
        window.quit()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_attempts_fit_a_phone(
    dash: RunningApp, redis_url: str, request: pytest.FixtureRequest, scheme: str
) -> None:
    pipeline = make_pipeline("o/r", 41, "Answer " * 20)
    asyncio.run(seed_attempts(redis_url, pipeline, ["script", AGENT, "x" * 300],
                              [ATTACK, "y" * 1000, "short"]))  # fmt: skip
    window = browser_as(dash, request.node.name, width=390)
    try:
        window.driver.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
        )
        window.get("/pipelines/o.r.41")
        window.wait(lambda: len(window.find(".attempt-column")) == 3, 20, "the diffs")
        sideways = window.driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert sideways <= 0, f"the page scrolls sideways by {sideways}px"
        boxes = [column.rect for column in window.find(".attempt-column")]
        assert boxes[0]["x"] == boxes[1]["x"] == boxes[2]["x"]  # stacked
        assert window.violations() == []
        assert window.violations(("critical", "serious"), within=".attempts") == []
        window.driver.execute_script("document.querySelector('.attempts').scrollIntoView()")
        window.shot(f"{scheme}-attempts")
    finally:
        window.quit()
