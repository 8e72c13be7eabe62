"""The dashboard in headless Chromium against the whole loop: sign in with GitHub (the
stand-in's OAuth pages), watch a run appear and its log grow, stop it, follow up, start a
new pipeline, and what a person without access and a forged POST get. Screenshots land in
tests/screenshots/ (git-ignored)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from app.dashboard.auth import SESSION_KEY_PREFIX
from tests.browser import ADMIN, Browser, running_dashboard_loop
from tests.loop_harness import OWNER, REPO, RUNNER_ID, WRITER, Loop

OUTSIDER = "mallory"
FULL_NAME = f"{OWNER}/{REPO}"

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture(scope="module")
def loop(
    redis_server: str, tmp_path_factory: pytest.TempPathFactory, corpora: Path, test_image: str
) -> Iterator[Loop]:
    workdir = tmp_path_factory.mktemp("dash")
    with running_dashboard_loop(redis_server, workdir, corpora) as loop:
        yield loop


@pytest.fixture
def browser(loop: Loop, request: pytest.FixtureRequest) -> Iterator[Browser]:
    window = Browser(loop.url, loop.gh, request.node.name)
    try:
        yield window
    finally:
        window.quit()


def card_of(browser: Browser, number: int) -> WebElement | None:
    """The board's card of issue `number` in this repository, if shown."""
    for card in browser.find("#board article.card"):
        head = card.find_elements(By.CSS_SELECTOR, ".card-head")
        if head and head[0].text.strip() == f"{FULL_NAME} #{number}":
            return card
    return None


def wait_for_card(browser: Browser, number: int, column: str | None = None) -> WebElement:
    def found() -> WebElement | None:
        card = card_of(browser, number)
        if card is None or (column is not None and card.get_attribute("data-column") != column):
            return None
        return card

    where = f" in column {column}" if column else ""
    return browser.wait(found, 90, f"the card of #{number}{where}")


def open_card(browser: Browser, number: int, column: str | None = None) -> str:
    """Go to the pipeline page of issue `number`'s card (the board may redraw the card at
    any moment, so its address is read, not the element clicked); that page's path."""

    def address() -> str | None:
        card = wait_for_card(browser, number, column)
        href = card.find_element(By.CSS_SELECTOR, "a.card-link").get_attribute("href")
        return str(href).removeprefix(browser.base_url) if href else None

    path = browser.wait(address, 90, f"the address of #{number}'s pipeline")
    browser.get(path)
    return path


def open_latest_run(browser: Browser) -> None:
    """From a pipeline page, go to its latest run's page."""
    links = browser.wait(lambda: browser.find("#timeline a[href^='/runs/']"), 30, "a run link")
    browser.get(str(links[-1].get_attribute("href")).removeprefix(browser.base_url))
    browser.element("#log")


def log_lines(browser: Browser) -> int:
    return len(browser.find("#log .log-line"))


def test_signing_in_with_github_lands_on_the_board(browser: Browser, loop: Loop) -> None:
    asked = len(loop.state.requests_to("GET", r"^/login/oauth/authorize$"))
    loop.state.sign_in_as(WRITER)
    browser.get("/")  # → /login → GitHub's authorize page → /oauth/callback → back here
    browser.element("#board")
    assert browser.path == "/"
    assert f"@{WRITER}" in browser.text("#nav")
    assert "admin" not in browser.text("#nav")
    browser.shot("board")
    authorizations = loop.state.requests_to("GET", r"^/login/oauth/authorize$")
    assert len(authorizations) == asked + 1
    assert authorizations[-1].query["redirect_uri"] == f"{loop.url}/oauth/callback"

    browser.element("#sign-out").click()
    browser.element("#signed-out")
    browser.shot("signed-out")
    loop.state.sign_in_as(None)  # on GitHub, the person now cancels
    browser.get("/")
    assert "did not authorise" in browser.text("#auth-failure")
    assert browser.find("#nav #sign-out") == []
    browser.shot("cancelled-on-github")


def test_a_revoked_authorisation_sends_the_person_through_github_again(
    browser: Browser, loop: Loop
) -> None:
    browser.sign_in(WRITER)
    browser.element("#board")
    loop.state.revoke_user_tokens(WRITER)
    client = redis.Redis.from_url(loop.redis_url)
    try:
        for key in client.keys(SESSION_KEY_PREFIX + "*"):
            record = json.loads(client.get(key) or b"{}")
            client.set(key, json.dumps({**record, "repos_at": 0}))  # due for a refresh
    finally:
        client.close()
    asked = len(loop.state.requests_to("GET", r"^/login/oauth/authorize$"))
    browser.get("/")  # the refresh is refused: signed out, and straight back to GitHub
    browser.element("#board")
    assert len(loop.state.requests_to("GET", r"^/login/oauth/authorize$")) == asked + 1
    assert f"@{WRITER}" in browser.text("#nav")


def test_a_run_appears_by_itself_and_its_log_grows(browser: Browser, loop: Loop) -> None:
    browser.sign_in(WRITER)
    browser.element("#board")
    number = loop.new_issue("Count slowly")
    loop.comment(number, "/trimo run for i in $(seq 1 60); do echo tick-$i; sleep 0.5; done")
    wait_for_card(browser, number)  # no reload: the board is live
    browser.shot("card-appeared")
    open_card(browser, number)
    open_latest_run(browser)
    first = browser.wait(lambda: log_lines(browser) or None, 60, "the first log lines")
    browser.shot("log-started")
    grown = browser.wait(
        lambda: log_lines(browser) if log_lines(browser) >= first + 5 else None,
        60,
        "the log to grow while the agent works",
    )
    assert grown > first and "tick-" in browser.text("#log")
    browser.shot("log-grown")


def test_stop_moves_the_card_to_needs_you_as_cancelled(browser: Browser, loop: Loop) -> None:
    browser.sign_in(WRITER)
    number = loop.new_issue("Never ends")
    loop.comment(number, "/trimo run echo started; sleep 600")
    open_card(browser, number, "running")
    open_latest_run(browser)
    browser.wait(lambda: "started" in browser.text("#log"), 60, "the run to print")
    browser.shot("before-stop")
    browser.click("#stop button")
    # The form's answer lands on the pipeline page; going to the board before it has
    # would be undone by it.
    browser.wait(lambda: "asked=stop" in browser.path, 30, "the stop to be asked")
    browser.get("/")
    card = wait_for_card(browser, number, "needs_you")
    assert card.get_attribute("data-state") == "cancelled"
    browser.shot("cancelled")
    check = loop.check_for(f"widgets.{number}-")
    assert check is not None
    assert loop.wait(lambda: check.conclusion, 60, "the check run to end") == "cancelled"


def test_a_follow_up_from_the_dashboard_runs_on_the_same_branch(
    browser: Browser, loop: Loop
) -> None:
    number = loop.new_issue("Two steps")
    loop.comment(number, "/trimo run echo one > one.txt && git add . && git commit -qm One")
    branch = loop.wait(
        lambda: next((b for b in loop.branches() if b.startswith(f"trimo/{number}-")), None),
        90,
        "the first run's branch",
    )
    loop.wait(lambda: loop.file_on(branch, "one.txt"), 90, "the first run's commit")
    browser.sign_in(WRITER)
    open_card(browser, number)
    form = browser.element("#follow-up")
    form.find_element(By.NAME, "prompt").send_keys(
        "echo two > two.txt && git add . && git commit -qm Two"
    )
    browser.shot("follow-up-typed")
    form.find_element(By.CSS_SELECTOR, "button").click()
    loop.wait(lambda: loop.file_on(branch, "two.txt"), 120, "the follow-up's commit")
    assert loop.file_on(branch, "one.txt") == "one\n"
    assert [b for b in loop.branches() if b.startswith(f"trimo/{number}-")] == [branch]
    noted = loop.wait(
        lambda: [b for b in loop.bot_comments(number) if "from the dashboard" in b],
        30,
        "the follow-up recorded on the issue",
    )
    assert f"@{WRITER}" in noted[0]
    browser.shot("follow-up-done")


def test_a_new_pipeline_pushes_a_branch_and_opens_a_pull_request(
    browser: Browser, loop: Loop
) -> None:
    browser.sign_in(WRITER, then="/pipelines/new")
    form = browser.element("#new-pipeline")
    Select(form.find_element(By.NAME, "repo")).select_by_visible_text(FULL_NAME)
    form.find_element(By.NAME, "prompt").send_keys(
        "Add a changelog\n\necho '# Changes' > CHANGELOG.md && git add . && git commit -qm Log"
    )
    browser.shot("new-pipeline")
    before = set(loop.branches())
    form.find_element(By.CSS_SELECTOR, "button").click()
    branch = loop.wait(
        lambda: next((b for b in set(loop.branches()) - before if b.startswith("trimo/")), None),
        120,
        "the new pipeline's branch",
    )
    loop.wait(lambda: loop.file_on(branch, "CHANGELOG.md"), 120, "the agent's commit")
    pulls = loop.wait(lambda: loop.state.pulls_for(branch), 60, "a pull request")
    assert pulls[0].base_ref == "main"
    browser.get("/")
    browser.wait(lambda: branch in browser.text("#board"), 60, "the new pipeline's card")
    browser.shot("new-pipeline-on-board")


def test_a_person_without_access_sees_nothing_of_the_repository(
    browser: Browser, loop: Loop
) -> None:
    number = loop.new_issue("Private matters")
    loop.comment(number, "/trimo run echo private > p.txt && git add . && git commit -qm P")
    browser.sign_in(WRITER)
    pipeline_path = open_card(browser, number)

    outsider = Browser(loop.url, loop.gh, "outsider")
    try:
        outsider.sign_in(OUTSIDER)
        outsider.element("#board")
        assert FULL_NAME not in outsider.driver.page_source
        assert card_of(outsider, number) is None
        outsider.shot("empty-board")
        outsider.get(pipeline_path)
        assert "Private matters" not in outsider.driver.page_source
        assert REPO not in outsider.text("body")
        outsider.get("/fleet")
        assert RUNNER_ID not in outsider.driver.page_source
        outsider.shot("no-pipeline")
    finally:
        outsider.quit()

    admin = Browser(loop.url, loop.gh, "admin")
    try:
        admin.sign_in(ADMIN)
        wait_for_card(admin, number)
        assert "admin" in admin.text("#nav")
    finally:
        admin.quit()


class _Attacker(BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        page = (
            "<!doctype html><form id=f method=post action='" + self.target + "'>"
            "<input name=prompt value='rm -rf /'></form>"
            "<script>document.getElementById('f').submit()</script>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_forged_post_without_the_csrf_token_is_refused(browser: Browser, loop: Loop) -> None:
    number = loop.new_issue("Target")
    loop.comment(number, "/trimo run echo target > t.txt && git add . && git commit -qm T")
    browser.sign_in(WRITER)
    pipeline = loop.url + open_card(browser, number)
    runs_before = len(loop.check_runs())

    # Another site's page (same host, another port) auto-submits a follow-up form.
    _Attacker.target = f"{pipeline}/follow-up"
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        browser.driver.get(f"http://127.0.0.1:{server.server_address[1]}/")
        browser.wait(lambda: browser.path.endswith("/follow-up"), 20, "the forged POST's answer")
        assert "came from another site" in browser.text("#refused")
        browser.shot("cross-site-refused")
    finally:
        server.shutdown()
        server.server_close()

    # A script on the dashboard's own origin without the token.
    browser.get(pipeline.removeprefix(loop.url))
    status, _ = browser.post_without_token(
        pipeline.removeprefix(loop.url) + "/follow-up", {"prompt": "echo forged"}
    )
    assert status == 403
    status, _ = browser.post_without_token("/logout", {})
    assert status == 403
    browser.get("/")
    assert f"@{WRITER}" in browser.text("#nav")  # still signed in
    assert len(loop.check_runs()) == runs_before  # no run was started
    assert not [b for b in loop.bot_comments(number) if "from the dashboard" in b]
