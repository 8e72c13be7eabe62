"""Budgets and spend through the whole loop, seen in headless Chromium: a repository's
`max_cost_usd` stops a real run (the script agent in real Docker reports its cost as it
goes), the dashboard shows why, the spend page shows what it cost, and once the month's
cap (`TRIMO_POLICY_MONTHLY_USD`) is reached the next request is refused with a reply naming
it. Screenshots land in tests/screenshots/ (git-ignored)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.conversation.naming import pipeline_id
from tests.browser import Browser, dashboard_loop
from tests.conftest import git
from tests.fakegithub import RunningFakeGitHub
from tests.loop_harness import OWNER, WRITER, Loop
from tests.test_spend_runner import SPENDER

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]

REPO = "capped"
CONFIG = "agent: script\nimage: trimo-agent:base\ntimeout_minutes: 10\nmax_cost_usd: 0.5\n"


@pytest.fixture(scope="module")
def loop(
    redis_server: str, tmp_path_factory: pytest.TempPathFactory, corpora: Path, test_image: str
) -> Iterator[Loop]:
    with RunningFakeGitHub() as gh:
        gh.install_app(OWNER)
        harness = dashboard_loop(gh, redis_server, tmp_path_factory.mktemp("spend"), corpora)
        gh.create_repo(OWNER, REPO, {"README.md": "# capped\n", ".github/trimo.yml": CONFIG})
        gh.state.set_role(OWNER, REPO, WRITER, "write")
        harness.extra_env["TRIMO_POLICY_MONTHLY_USD"] = "0.5"
        harness.start()
        harness.announce_installation()
        try:
            yield harness
        finally:
            harness.stop()
            assert gh.state.violations == [], gh.state.violations


@pytest.fixture
def browser(loop: Loop, request: pytest.FixtureRequest) -> Iterator[Browser]:
    window = Browser(loop.url, loop.gh, request.node.name)
    try:
        yield window
    finally:
        window.quit()


def test_a_budget_stops_a_run_and_the_month_cap_refuses_the_next(
    browser: Browser, loop: Loop
) -> None:
    browser.sign_in(WRITER)
    number = loop.new_issue("Spend too much", repo=REPO)
    loop.comment(number, "/trimo run " + SPENDER, repo=REPO)
    card = f"[id='card-{pipeline_id(f'{OWNER}/{REPO}', number)}']"

    def cancelled() -> bool:
        browser.get("/")
        found = browser.find(card)
        return bool(found) and found[0].get_attribute("data-state") == "cancelled"

    browser.wait(cancelled, 120, "the run to be stopped by its budget")
    browser.get(f"/pipelines/{pipeline_id(f'{OWNER}/{REPO}', number)}")
    browser.wait(lambda: "budget: $0.55 of $0.50" in browser.text("main"), 30, "the reason")
    browser.shot("stopped-by-budget")
    bare = loop.gh.fake.bare_path(OWNER, REPO)
    branch = f"trimo/{number}-spend-too-much"
    assert git(bare, "show", f"refs/heads/{branch}:work.txt") == "done-before"

    browser.get("/spend")
    row = browser.element(f"#spend-table .spend-row[data-key='{OWNER}/{REPO}']")
    assert row.get_attribute("data-cost") == "0.550000" and "$0.55" in row.text
    assert browser.find("#spend-chart .bar[data-cost='0.550000'] rect.seg")
    browser.shot("spend-page")
    phone = Browser(loop.url, loop.gh, "spend-at-390px", width=390)
    try:
        phone.sign_in(WRITER, "/spend")
        phone.element("#spend-table .spend-row")
        sideways = (
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert int(phone.driver.execute_script(sideways)) <= 0
        phone.shot("spend-page")
    finally:
        phone.quit()

    again = loop.new_issue("One more", repo=REPO)
    loop.comment(again, "/trimo run echo more", repo=REPO)
    reply = loop.wait(
        lambda: next(
            (
                c.body
                for c in loop.state.comments_on(again, OWNER, REPO)
                if c.via_app and "can't start" in c.body
            ),
            None,
        ),
        60,
        "the refusal",
    )
    assert "reached its monthly cap of $0.50 (`TRIMO_POLICY_MONTHLY_USD`)" in reply
