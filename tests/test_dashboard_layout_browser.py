"""The dashboard for everyone, in headless Chromium over seeded Redis: a phone's 390 px
without sideways scrolling, dark mode, the keyboard, empty states, and Not found inside
the usual layout; and no page with a critical accessibility violation (axe-core)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runner import contract
from runner.events import RawLog
from runner.job import Outcome
from tests.browser import Browser
from tests.dashboard_helpers import HOSTILE_LINE, make_pipeline, make_run, seed_sync
from tests.test_dashboard_live_browser import browser_as, dash_app
from tests.test_dashboard_plans import seed_discovery
from tests.webhook_helpers import RunningApp

pytestmark = [pytest.mark.redis, pytest.mark.slow]
LONG = "A very long title " * 8 + "with_a_very_long_unbroken_identifier_" * 4


@pytest.fixture
def dash(redis_url: str) -> Iterator[RunningApp]:
    yield from dash_app(redis_url)


def sideways(window: Browser) -> int:
    return int(
        window.driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
    )


def seed_board(redis_url: str) -> None:
    states = [("waiting", Outcome.SUCCESS), ("running", Outcome.SUCCESS),
              ("finished", Outcome.FAILURE), ("finished", Outcome.SUCCESS)]  # fmt: skip
    for number, (state, outcome) in enumerate(states * 2, start=20):
        run = make_run(f"o.r.{number}-a", prompt=LONG)
        seed_sync(redis_url, make_pipeline("o/r", number, LONG), run, state, outcome, commits=1)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_fits_a_phone(
    dash: RunningApp, redis_url: str, request: pytest.FixtureRequest, scheme: str
) -> None:
    seed_board(redis_url)
    window = browser_as(dash, request.node.name, login="root", width=390)
    try:
        window.driver.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
        )
        for path in ("/", "/pipelines/o.r.22", "/runs/o.r.21-a", "/pipelines/new", "/fleet",
                     "/spend", "/pipelines/nope"):  # fmt: skip
            window.get(path)
            window.element("#nav")
            assert window.driver.execute_script("return window.innerWidth") == 390
            assert sideways(window) <= 0, f"{path} scrolls sideways by {sideways(window)}px"
            window.shot(f"{scheme}-{path.strip('/').replace('/', '-') or 'board'}")
        background = window.driver.execute_script(
            "return getComputedStyle(document.body).backgroundColor"
        )
        assert (background == "rgb(13, 17, 23)") == (scheme == "dark"), background
    finally:
        window.quit()


def test_not_found_keeps_the_navigation_and_the_keyboard_moves_between_cards(
    dash: RunningApp, redis_url: str, request: pytest.FixtureRequest
) -> None:
    seed_board(redis_url)
    window = browser_as(dash, request.node.name)
    try:
        window.get("/pipelines/o.r.999")
        assert window.element("#error").get_attribute("data-status") == "404"
        assert "Board" in window.text("#nav") and "@alice" in window.text("#nav")
        window.get("/no/such/page")
        assert window.element("#error").get_attribute("data-status") == "404"
        assert window.find("#nav nav a")

        window.get("/")
        body = window.element("body")
        body.send_keys("j")
        first = window.element(".card.selected").get_attribute("id")
        body = window.element("body")
        window.driver.switch_to.active_element.send_keys("j")
        second = window.element(".card.selected").get_attribute("id")
        assert first != second
        window.driver.switch_to.active_element.send_keys("k")
        assert window.element(".card.selected").get_attribute("id") == first
        body.send_keys("?")
        window.wait(lambda: window.element("#help").is_displayed(), 5, "the keyboard help")
        window.shot("help")
        window.driver.switch_to.active_element.send_keys("\ue00c")  # Escape
        window.wait(lambda: not window.element("#help").is_displayed(), 5, "the help closed")
        body.send_keys("/")
        active = window.driver.switch_to.active_element
        assert active.get_attribute("name") == "repo"
    finally:
        window.quit()


def test_someone_without_repositories_is_told_what_to_do(
    dash: RunningApp, request: pytest.FixtureRequest
) -> None:
    window = browser_as(dash, request.node.name, repos={})
    try:
        window.get("/")
        assert "Install the App" in window.text("#no-repositories")
        assert window.find(".empty-column")
        window.shot("no-repositories")
    finally:
        window.quit()


def test_no_page_has_a_critical_accessibility_violation(
    dash: RunningApp, redis_url: str, request: pytest.FixtureRequest
) -> None:
    seed_board(redis_url)
    seed_discovery(redis_url, 30)
    dash.redis.xadd(contract.run_events("o.r.21-a"),
                    {"event": RawLog(line=HOSTILE_LINE).model_dump_json()})  # fmt: skip
    window = browser_as(dash, request.node.name, login="root")
    found: dict[str, list[str]] = {}
    # Nine pages in a row, most with live streams: a page left must close its streams (a
    # browser keeps six connections per host; the seventh page failed to load).
    try:
        for path in ("/pipelines/new", "/", "/pipelines/o.r.22", "/pipelines/o.r.30",
                     "/runs/o.r.21-a", "/runs/o.r.30-d", "/fleet", "/spend", "/nope"):  # fmt: skip
            window.get(path)
            window.element("#nav")
            if path == "/runs/o.r.21-a":
                window.wait(lambda: window.find("#log .log-line"), 20, "the log")
            if problems := window.violations():
                found[path] = problems
        window.get("/")
        window.element("body").send_keys("?")
        window.wait(lambda: window.element("#help").is_displayed(), 5, "the keyboard help")
        if problems := window.violations():
            found["/ with its help open"] = problems
    finally:
        window.quit()
    assert found == {}, found
