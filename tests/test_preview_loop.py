"""Previews from a comment, the whole loop: `trimo serve` and `trimo runner` as processes,
real Redis, real Docker, real git, the GitHub stand-in, and a real headless Chromium.

A small web app on the pipeline's branch becomes reachable through the link in the one
preview comment (and on its check run) and Chromium loads the page; a new commit from a
run refreshes it behind the same link; `/trimo preview stop` stops it and the link 404s.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver

from tests import preview_app
from tests.conftest import free_port
from tests.loop_harness import CONFIG, Loop, running_loop

pytestmark = [pytest.mark.docker, pytest.mark.redis]

PREVIEW_CONFIG = CONFIG + (
    "preview:\n"
    "  setup: echo preparing the app\n"
    f"  command: {preview_app.COMMAND}\n"
    "  port: 8000\n"
    "  idle_minutes: 5\n"
)
LINK = re.compile(r"\[open the preview\]\((http://[^)\s]+)\)")


@pytest.fixture(scope="module")
def loop(
    redis_server: str, tmp_path_factory: pytest.TempPathFactory, corpora: Path, test_image: str
) -> Iterator[Loop]:
    port = free_port()
    env = {
        "TRIMO_RUNNER_PREVIEW_URL": f"http://127.0.0.1:{port}",
        "TRIMO_RUNNER_PREVIEW_LISTEN": f"127.0.0.1:{port}",
    }
    files = {**preview_app.files("Main page"), ".github/trimo.yml": PREVIEW_CONFIG}
    workdir = tmp_path_factory.mktemp("preview-loop")
    with running_loop(redis_server, workdir, corpora, files=files, env=env) as loop:
        yield loop


@pytest.fixture(scope="module")
def chromium() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path="/usr/bin/chromedriver")
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def preview_comment(loop: Loop, number: int, says: str, timeout: float = 90) -> str:
    return loop.wait(
        lambda: next((b for b in loop.bot_comments(number) if says in b), None),
        timeout,
        f"the preview comment to say {says!r}",
    )


def run_to_success(loop: Loop, number: int, script: str) -> None:
    before = len([c for c in loop.check_runs() if c.name == "Trimo"])
    loop.comment(number, f"/trimo run {script}")

    def done() -> str | None:
        runs = [c for c in loop.check_runs() if c.name == "Trimo"]
        latest = max(runs, key=lambda c: c.id) if len(runs) > before else None
        return latest.conclusion if latest and latest.status == "completed" else None

    assert loop.wait(done, 120, "the run to finish") == "success"


def test_a_comment_previews_the_branch_live_refreshes_it_and_stops_it(
    loop: Loop, chromium: webdriver.Chrome
) -> None:
    number = loop.new_issue("A landing page")
    run_to_success(
        loop, number, "echo '<h1>Branch one</h1>' > index.html && git commit -qam 'Page one'"
    )

    loop.comment(number, "/trimo preview")
    ready = preview_comment(loop, number, "Preview ready")
    url = LINK.search(ready)
    assert url is not None, ready
    link = url.group(1)
    with httpx.Client(follow_redirects=True, timeout=10) as browser:
        assert "Branch one" in browser.get(link).text

    chromium.get(link)
    assert "Branch one" in chromium.find_element("tag name", "h1").text
    assert chromium.current_url.endswith("/")  # the cookie took the browser past /p/<token>/

    # The comment and the check run are written one after the other: wait for the second.
    [check] = loop.wait(
        lambda: [c for c in loop.check_runs() if c.name == "Trimo preview" and c.conclusion],
        30,
        "the preview's check run",
    )
    assert check.conclusion == "neutral" and link in check.output["summary"]

    # A new commit from a run refreshes the preview behind the same link.
    run_to_success(
        loop, number, "echo '<h1>Branch two</h1>' > index.html && git commit -qam 'Page two'"
    )
    refreshed = preview_comment(loop, number, "Preview refreshed")
    assert link in refreshed
    chromium.refresh()
    assert "Branch two" in chromium.find_element("tag name", "h1").text
    previews = [b for b in loop.bot_comments(number) if "Preview" in b]
    assert len(previews) == 1, "the preview has one comment, edited in place"

    loop.comment(number, "/trimo preview stop")
    stopped = preview_comment(loop, number, "Preview stopped")
    assert "stopped by @alice" in stopped
    loop.wait(
        lambda: httpx.get(link, timeout=10).status_code == 404, 30, "the link to stop working"
    )


def test_a_failing_setup_is_reported_with_its_log_tail(loop: Loop) -> None:
    number = loop.new_issue("Broken start")
    run_to_success(
        loop,
        number,
        "rm server.pl && echo 'die \"cannot find module left-pad\\n\"' > server.pl "
        "&& git add -A && git commit -qm 'Break the server'",
    )
    loop.comment(number, "/trimo preview")
    failed = preview_comment(loop, number, "Preview failed")
    assert "ended before it answered" in failed
    assert "preparing the app" in failed and "cannot find module left-pad" in failed
