"""Live pages in headless Chromium, over pipelines seeded in a real Redis (no runner): a
pipeline page, a run's sticky header and the fleet page follow changes without a reload,
and the tab's title shows the state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis
from selenium.webdriver.common.by import By

from app.dashboard.auth import SESSION_COOKIE
from app.reporting.reporter import VIEW_PREFIX
from app.reporting.runview import IMPLEMENT_PLAN, RunView
from app.runs.pipelines import CHANGES, Pipelines
from runner import contract
from runner.events import RawLog
from runner.job import Outcome, RunFinished
from runner.registry import RunnerInfo, now
from tests.browser import Browser
from tests.dashboard_helpers import (
    HOSTILE_LINE,
    dashboard_settings,
    make_pipeline,
    make_run,
    seed_sync,
    signed_in,
)
from tests.test_dashboard_plans import seed_discovery
from tests.test_dashboard_site import queued_dashboard_jobs
from tests.webhook_helpers import RunningApp, running_app

pytestmark = [pytest.mark.redis, pytest.mark.slow]
LIVE_SECONDS = 1.0
"""How soon a change must show (issue 22); the waits below are longer so a busy machine
reports a slow page as a slow page, with the figure, not as a hang."""


def dash_app(redis_url: str) -> Iterator[RunningApp]:
    """The App over the test Redis, with sign-in sessions (`browser_as`)."""
    with running_app(dashboard_settings(redis_url)) as running:
        yield running


@pytest.fixture
def dash(redis_url: str) -> Iterator[RunningApp]:
    yield from dash_app(redis_url)


def browser_as(
    dash: RunningApp, name: str, login: str = "alice", role: str = "write", width: int = 1400,
    repos: dict[str, str] | None = None,
) -> Browser:  # fmt: skip
    """A browser signed in as `login` with `role` on o/r (or with `repos`), `width` wide."""
    chosen = {"o/r": role} if repos is None else repos
    client, _ = signed_in(dash.base_url, dash.settings, login, chosen)
    cookie = client.cookies[SESSION_COOKIE]
    client.close()
    window = Browser(dash.base_url, None, name, width=width)
    window.use_session(cookie)
    return window


def finish(redis_url: str, run_id: str, outcome: Outcome, reason: str = "") -> None:
    async def finished() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            done = RunFinished(run_id=run_id, outcome=outcome, reason=reason, at=datetime.now(UTC))
            await Pipelines(client).finish(done)  # type: ignore[arg-type]
        finally:
            await client.aclose()

    asyncio.run(finished())


def mark_page(window: Browser) -> None:
    """Mark the loaded document: a reload would lose the mark."""
    window.driver.execute_script("window.trimoSamePage = true")


def same_page(window: Browser) -> bool:
    return bool(window.driver.execute_script("return window.trimoSamePage === true"))


def test_a_pipeline_page_turns_from_running_to_cancelled_without_a_reload(
    dash: RunningApp, redis_url: str, request: pytest.FixtureRequest
) -> None:
    seed_sync(redis_url, make_pipeline("o/r", 7, "Live one"), make_run("o.r.7-a"), "running")
    window = browser_as(dash, request.node.name)
    try:
        window.get("/pipelines/o.r.7")
        state = window.element("#pipeline-state")
        assert state.get_attribute("data-state") == "running"
        assert window.find("#stop")
        assert window.driver.title.startswith("● ")
        window.shot("running")
        mark_page(window)
        window.wait(
            lambda: dash.redis.pubsub_numsub(CHANGES)[0][1] > 0,
            10,
            "the page's live stream",
        )
        asked = time.monotonic()
        finish(redis_url, "o.r.7-a", Outcome.CANCELLED, "stopped by @alice")
        window.wait(
            lambda: window.find("#timeline .run[data-outcome='cancelled']"),
            10,
            "the run shown cancelled",
        )
        took = time.monotonic() - asked
        assert window.element("#pipeline-state").get_attribute("data-state") == "cancelled"
        assert window.find("#stop") == []
        assert window.driver.title.startswith("⚠ ")
        assert same_page(window), "the page reloaded"
        window.shot("cancelled")
        assert took < LIVE_SECONDS * 5, f"the page took {took:.2f}s to show the change"
    finally:
        window.quit()


def test_the_run_header_stays_in_view_and_follows_the_run(
    dash: RunningApp, redis_url: str, request: pytest.FixtureRequest
) -> None:
    seed_sync(redis_url, make_pipeline("o/r", 8, "Header"), make_run("o.r.8-a"), "running")
    window = browser_as(dash, request.node.name)
    try:
        window.get("/runs/o.r.8-a")
        head = window.element("#run-head")
        assert head.value_of_css_property("position") == "sticky"
        assert window.find("#run-head #stop button")
        assert window.find("#run-elapsed time[data-elapsed]")
        assert "started" in window.text("#run-status")
        window.driver.execute_script(
            "document.getElementById('log').style.minHeight = '5000px';"
            "window.scrollTo(0, document.body.scrollHeight)"
        )
        top = window.driver.execute_script(
            "return document.getElementById('run-head').getBoundingClientRect().top"
        )
        assert 0 <= float(top) < 5, f"the header scrolled away (top {top})"
        mark_page(window)
        finish(redis_url, "o.r.8-a", Outcome.CANCELLED, "stopped by @alice")
        window.wait(lambda: window.text("#run-state") == "cancelled", 10, "the run cancelled")
        assert window.find("#stop") == []
        assert "took" in window.text("#run-elapsed")
        assert same_page(window)
        window.shot("ended")
    finally:
        window.quit()


def test_the_fleet_page_shows_a_runner_coming_online(
    dash: RunningApp, request: pytest.FixtureRequest
) -> None:
    window = browser_as(dash, request.node.name, login="root")
    try:
        window.get("/fleet")
        window.element("h1")
        assert window.find("#runners") == []
        mark_page(window)
        info = RunnerInfo(
            id="runner-live", host="box", labels=["default"], capacity=2, running=[],
            version="0.1.0", pid=1, started_at=now(), seen_at=now(),
        )  # fmt: skip
        dash.redis.set(contract.runner_info(info.id), info.model_dump_json(), ex=60)
        dash.redis.sadd(contract.RUNNERS, info.id)
        window.wait(lambda: window.find("#runners .runner[data-runner='runner-live']"), 30,
                    "the runner's row")  # fmt: skip
        assert same_page(window)
        window.shot("runner-online")
    finally:
        window.quit()


def test_a_hostile_log_renders_inert_coloured_and_searchable(
    dash: RunningApp, redis_url: str, request: pytest.FixtureRequest
) -> None:
    seed_sync(redis_url, make_pipeline("o/r", 9, "Hostile"), make_run("o.r.9-a"), "running")
    stream = contract.run_events("o.r.9-a")
    ids = [
        dash.redis.xadd(stream, {"event": RawLog(line=line).model_dump_json()})
        for line in (HOSTILE_LINE, "z" * 50_000, "needle in the log", "\x1b[32mok\x1b[0m")
    ]
    target = ids[2].decode()
    window = browser_as(dash, request.node.name, width=390)
    try:
        window.get(f"/runs/o.r.9-a#L{target}")
        window.wait(lambda: len(window.find("#log .log-line")) == 4, 20, "the four lines")
        assert window.find("#log script, #log img, #log a[href^='javascript']") == []
        assert window.find("#log .ansi-fg-1.ansi-bold")
        assert "\x1b" not in window.text("#log") and "new window title" not in window.text("#log")
        assert window.element(f"#L{target}").get_attribute("class").endswith("target")
        wide = window.driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert wide <= 0, f"the page scrolls sideways by {wide}px at 390px"
        window.shot("hostile-log")
        search = window.element("#log-search")
        search.send_keys("needle")
        window.wait(lambda: window.text("#log-count") == "1 of 4 lines", 10, "the search count")
        assert [e.get_attribute("id") for e in window.find("#log .log-line:not([hidden])")] == [
            f"L{target}"
        ]
        window.shot("searched")
        assert window.element("#log-download").get_attribute("href").endswith("/log.txt")
    finally:
        window.quit()
    client, _ = signed_in(dash.base_url, dash.settings, "alice", {"o/r": "read"})
    with client:
        text = client.get("/runs/o.r.9-a/log.txt")
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    assert "attachment" in text.headers["content-disposition"]
    lines = text.text.splitlines()
    assert len(lines) == 4 and "\x1b" not in text.text and lines[2].endswith("needle in the log")


def test_a_plan_is_implemented_from_its_button(
    dash: RunningApp, redis_url: str, request: pytest.FixtureRequest
) -> None:
    pipeline_id = seed_discovery(redis_url, 11)
    window = browser_as(dash, request.node.name, width=390)
    try:
        window.get(f"/pipelines/{pipeline_id}")
        plan = window.element(".plan.markdown")
        assert plan.find_elements(By.CSS_SELECTOR, "h2, ol, table")
        assert window.find(".plan script, .plan img, .plan iframe, .plan [onerror]") == []
        assert window.find("#preview-start") == [] and window.find("#preview-unpushed")
        window.shot("plan-ready")
        window.element("#implement").click()
        window.wait(lambda: window.path.endswith("?asked=implement"), 20, "the thanks")
        window.shot("implement-asked")
    finally:
        window.quit()
    jobs = queued_dashboard_jobs(dash)
    assert [job[1]["ask"] for job in jobs] == [
        {"pipeline": pipeline_id, "prompt": IMPLEMENT_PLAN, "agent": ""}
    ]


def test_board_cards_say_what_now_and_retry_from_the_card(
    dash: RunningApp, redis_url: str, request: pytest.FixtureRequest
) -> None:
    seed_sync(redis_url, make_pipeline("o/r", 12, "Busy"), make_run("o.r.12-a"), "running")
    failed = make_pipeline("o/r", 13, "Broken")
    seed_sync(redis_url, failed, make_run("o.r.13-a"), "finished", Outcome.FAILURE)
    info = RunnerInfo(
        id="runner-1", host="box", labels=["default"], capacity=2, running=["o.r.12-a"],
        version="0.1.0", pid=1, started_at=now(), seen_at=now(),
    )  # fmt: skip
    dash.redis.set(contract.runner_info(info.id), info.model_dump_json(), ex=60)
    dash.redis.sadd(contract.RUNNERS, info.id)
    window = browser_as(dash, request.node.name)
    try:
        window.get("/")
        assert "boom" in window.text("#card-o\\.r\\.13 .card-error")
        assert window.find("#card-o\\.r\\.12 .card-step") == []
        mark_page(window)
        window.wait(lambda: dash.redis.pubsub_numsub(CHANGES)[0][1] > 0, 10, "the board feed")
        view = RunView(run_id="o.r.12-a", recent_tools=["Read app.py", "Bash pytest -q"])
        dash.redis.set(VIEW_PREFIX + "o.r.12-a", view.model_dump_json())
        window.wait(lambda: "Bash pytest -q" in window.text("#card-o\\.r\\.12 .card-step"),
                    15, "the running card's step")  # fmt: skip
        assert same_page(window)
        window.shot("step-and-error")
        window.click("#card-o\\.r\\.13 .card-retry button")
        window.wait(lambda: window.path == "/pipelines/o.r.13?asked=retry", 20, "the thanks")
    finally:
        window.quit()
    jobs = queued_dashboard_jobs(dash)
    assert [(job[1]["action"], job[1]["ask"]) for job in jobs] == [
        ("retry", {"pipeline": "o.r.13", "run_id": "o.r.13-a"})
    ]


NOTIFICATION_STUB = """
window.trimoNotes = [];
window.Notification = class {
  static permission = "default";
  static requestPermission() {
    window.Notification.permission = "granted";
    return Promise.resolve("granted");
  }
  constructor(title, options) { window.trimoNotes.push([title, options.body]); }
  addEventListener() {}
};
"""


def test_a_person_who_opts_in_is_notified_when_a_pipeline_needs_them(
    dash: RunningApp, redis_url: str, request: pytest.FixtureRequest
) -> None:
    secret = "SECRET-PROMPT-TEXT"
    seed_sync(redis_url, make_pipeline("o/r", 14, "Notify"), make_run("o.r.14-a", secret),
              "running")  # fmt: skip
    window = browser_as(dash, request.node.name)
    try:
        window.get("/")
        window.element("#card-o\\.r\\.14")
        window.driver.execute_script(NOTIFICATION_STUB)
        window.click("#notify")
        window.wait(lambda: window.text("#notify") == "Notifications on", 10, "the opt-in")
        window.wait(lambda: dash.redis.pubsub_numsub(CHANGES)[0][1] > 0, 10, "the board feed")
        finish(redis_url, "o.r.14-a", Outcome.FAILURE, "tests failed")
        notes = window.wait(
            lambda: window.driver.execute_script("return window.trimoNotes"), 15, "a notification"
        )
        assert notes == [["o/r #14 needs you", "Notify · failed"]]
        assert secret not in str(notes)
    finally:
        window.quit()
