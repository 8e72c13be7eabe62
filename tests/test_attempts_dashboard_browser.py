"""Attempts on the dashboard in headless Chromium against the whole loop (real processes,
Redis, Docker and git; GitHub's stand-in): two attempts ranked on the pipeline page, their
diffs side by side, Pick moves the pipeline branch to one, a later Pick (from the keyboard)
switches, and on a phone the diffs stack. Screenshots land in tests/screenshots/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.keys import Keys

from app.conversation.naming import pipeline_id
from tests.browser import Browser, running_dashboard_loop
from tests.loop_harness import OWNER, REPO, WRITER, Loop

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]

# Each attempt knows its branch: attempt 1 answers "one" with an extra file (the bigger
# diff ranks it second), attempt 2 "two" (and says so).
BY_ATTEMPT = (
    'n="$(git symbolic-ref --short HEAD)"; n="${n##*-attempt-}"; '
    'if [ "$n" = 1 ]; then w=one; echo more > extra.txt; else w=two; fi; echo "$w" > answer.txt; '
    'git add -A && git commit -qm "Answer $w" && echo "<b>answered</b> $w"'
)


@pytest.fixture(scope="module")
def loop(
    redis_server: str, tmp_path_factory: pytest.TempPathFactory, corpora: Path, test_image: str
) -> Iterator[Loop]:
    workdir = tmp_path_factory.mktemp("dash-att")
    with running_dashboard_loop(redis_server, workdir, corpora) as loop:
        yield loop


def show_attempts(window: Browser) -> None:
    """Scroll the attempts into view (for the screenshot)."""
    window.driver.execute_script("document.querySelector('.attempts').scrollIntoView()")


def column_boxes(window: Browser) -> list[dict[str, float]]:
    return [
        {k: float(v) for k, v in column.rect.items()} for column in window.find(".attempt-column")
    ]


def test_pick_moves_the_pipeline_branch_and_a_later_pick_switches(
    loop: Loop, request: pytest.FixtureRequest
) -> None:
    number = loop.new_issue("Answer the question")
    loop.comment(number, f"/trimo run --attempts 2 {BY_ATTEMPT}")
    attempts = loop.wait(
        lambda: sorted(b for b in loop.branches() if b.startswith(f"trimo/{number}-")),
        120,
        "both attempts' branches",
    )
    branch = attempts[0].rsplit("-attempt-", 1)[0]
    page = f"/pipelines/{pipeline_id(f'{OWNER}/{REPO}', number)}"

    window = Browser(loop.url, loop.gh, request.node.name)
    try:
        window.sign_in(WRITER, then=page)
        window.element('tr.attempt[data-place="2"]', timeout=120)  # ranked: the page redrew
        assert [row.get_attribute("data-attempt") for row in window.find("tr.attempt")] == [
            "2",
            "1",
        ]  # fmt: skip (no checks: the smaller diff first)
        assert "<b>answered</b> two" in window.text(".attempts-table")  # text, not markup
        columns = window.wait(lambda: window.find(".attempt-column"), 30, "the diffs")
        assert len(columns) == 2 and "answer.txt" in columns[0].text
        boxes = column_boxes(window)
        assert boxes[0]["y"] == boxes[1]["y"] and boxes[0]["x"] < boxes[1]["x"]  # side by side
        assert window.violations() == []
        show_attempts(window)
        window.shot("ranked")

        window.click("#pick-2")
        loop.wait(lambda: loop.file_on(branch, "answer.txt") == "two\n", 60, "the pick")
        window.element('.attempts[data-picked="2"]', timeout=60)
        window.wait(lambda: "is kept" in window.text("#answers"), 30, "the answer on the page")
        window.element('.attempt-column[data-kept][data-attempt="2"]', timeout=30)
        pulls = loop.wait(lambda: loop.state.pulls_for(branch), 30, "a pull request")
        assert pulls[0].base_ref == "main"
        window.shot("picked")

        switch = window.element("#pick-1")
        assert switch.text == "Switch to #1"
        switch.send_keys(Keys.ENTER)  # the keyboard reaches it
        loop.wait(lambda: loop.file_on(branch, "answer.txt") == "one\n", 60, "the switch")
        window.element('.attempts[data-picked="1"]', timeout=60)
        window.wait(
            lambda: "Switched from attempt #2" in window.text(".pick-note"), 30, "the reason"
        )
        assert window.violations() == []
        show_attempts(window)
        window.shot("switched")
    finally:
        window.quit()

    phone = Browser(loop.url, loop.gh, request.node.name + "-phone", width=390)
    try:
        phone.sign_in(WRITER, then=page)
        phone.wait(lambda: len(phone.find(".attempt-column")) == 2, 30, "the diffs")
        first, second = column_boxes(phone)
        assert second["y"] >= first["y"] + first["height"] and first["x"] == second["x"]
        sideways = phone.driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert sideways <= 0, f"the page scrolls sideways by {sideways}px"
        show_attempts(phone)
        phone.shot("phone")
    finally:
        phone.quit()
