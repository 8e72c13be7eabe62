"""The dashboard in a real browser: Debian's headless Chromium driven through selenium,
against the whole loop (tests/loop_harness.py: `trimo serve`, a runner, the GitHub
stand-in with its git server and OAuth web flow, Redis, Docker).

`Browser.sign_in(login)` signs in through the stand-in's OAuth pages exactly as a person
would; `Browser.use_session(cookie)` takes a session made by `dashboard_helpers.sign_in`
(for pages over seeded Redis, without the loop). Screenshots go to tests/screenshots/
(git-ignored), one per `shot()`.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from app.dashboard.auth import SESSION_COOKIE
from tests.fakegithub import RunningFakeGitHub
from tests.loop_harness import OWNER, Loop

SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
AXE = Path(__file__).resolve().parent / "axe" / "node_modules" / "axe-core" / "axe.min.js"
"""axe-core, installed by scripts/test (tests/axe/package-lock.json)."""
SESSION_SECRET = "browser-test-session-secret"
ADMIN = "root-admin"
PAGE_LOAD_SECONDS = 20

T = TypeVar("T")


def chromium() -> tuple[str, str]:
    """Paths of chromium and chromedriver; the test fails (never skips) without them."""
    browser = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.fail(
            "the browser tests need Debian's chromium and chromium-driver: "
            "run scripts/test, or `apt-get install chromium chromium-driver`"
        )
    return browser, driver


@contextmanager
def running_dashboard_loop(redis_url: str, workdir: Path, corpora: Path) -> Iterator[Loop]:
    """A started `dashboard_loop` on a stand-in of its own, the App installed and announced;
    stopped after, and the stand-in must have seen no request GitHub would refuse."""
    with RunningFakeGitHub() as gh:
        gh.install_app(OWNER)
        loop = dashboard_loop(gh, redis_url, workdir, corpora)
        loop.start()
        loop.announce_installation()
        try:
            yield loop
        finally:
            loop.stop()
            assert gh.state.violations == [], gh.state.violations


def dashboard_loop(gh: RunningFakeGitHub, redis_url: str, workdir: Path, corpora: Path) -> Loop:
    """A loop whose `trimo serve` lets people sign in with the stand-in's OAuth flow."""
    loop = Loop(gh, redis_url, workdir, corpora)
    app = gh.state.app
    assert app is not None
    loop.extra_env.update(
        {
            "TRIMO_GITHUB_URL": gh.api_url,
            "TRIMO_GITHUB_CLIENT_ID": app.client_id,
            "TRIMO_GITHUB_CLIENT_SECRET": gh.state.oauth.client_secret,
            "TRIMO_SESSION_SECRET": SESSION_SECRET,
            "TRIMO_PUBLIC_URL": loop.url,
            "TRIMO_ADMINS": ADMIN,
        }
    )
    with gh.state.lock:
        gh.state.oauth.callback_url = f"{loop.url}/oauth/callback"
    return loop


class Browser:
    """One headless Chromium window on the dashboard at `base_url`."""

    def __init__(
        self, base_url: str, gh: RunningFakeGitHub | None, name: str, width: int = 1400
    ) -> None:
        binary, driver_path = chromium()
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for argument in (
            "--headless=new",
            "--no-sandbox",  # Chromium runs as root here
            "--disable-dev-shm-usage",
            "--disable-gpu",
            f"--window-size={width},1000",
            "--no-first-run",
            "--disable-extensions",
        ):
            options.add_argument(argument)
        try:
            self.driver = webdriver.Chrome(options=options, service=Service(driver_path))
        except WebDriverException as exc:
            pytest.fail(f"headless Chromium did not start: {exc.msg}")
        self.driver.set_page_load_timeout(PAGE_LOAD_SECONDS)
        if width < 500:  # narrower than a window can be: a phone's screen, emulated
            self.driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": 844, "deviceScaleFactor": 1, "mobile": True},
            )
        self.base_url = base_url.rstrip("/")
        self.gh = gh
        self.name = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)
        self._shots = 0

    def quit(self) -> None:
        self.driver.quit()

    def get(self, path: str) -> None:
        self.driver.get(f"{self.base_url}{path}")

    @property
    def path(self) -> str:
        url = str(self.driver.current_url)
        return url.removeprefix(self.base_url) if url.startswith(self.base_url) else url

    def sign_in(self, login: str, then: str = "/") -> None:
        """Sign in as `login` through GitHub's (the stand-in's) OAuth pages, landing on `then`."""
        assert self.gh is not None, "signing in through GitHub needs the stand-in"
        self.gh.state.sign_in_as(login)
        self.get(f"/login?next={then}")
        self.wait(lambda: self.path == then, 20, f"to come back to {then} signed in as {login}")

    def use_session(self, cookie: str) -> None:
        """Carry the signed session cookie `cookie` (see `dashboard_helpers.sign_in`).

        A cookie is set on the origin being shown. On a busy machine Chromium once showed
        its own error page for the first load (no origin: "invalid cookie domain"), so the
        page is asked for until it is the dashboard's."""

        def shown() -> bool:
            self.get("/static/dashboard.css")
            return str(self.driver.current_url).startswith(self.base_url)

        self.wait(shown, 20, "the dashboard to be shown before its cookie is set")
        self.driver.add_cookie({"name": SESSION_COOKIE, "value": cookie, "path": "/"})

    def violations(
        self, impacts: tuple[str, ...] = ("critical",), within: str | None = None
    ) -> list[str]:
        """What axe-core finds wrong with the page's accessibility (or only of the elements
        matching the CSS selector `within`), of `impacts`, one line each (rule, impact, the
        first elements)."""
        if not AXE.is_file():
            pytest.fail(f"axe-core is missing ({AXE}): run scripts/test, or npm ci in tests/axe")
        self.driver.execute_script(AXE.read_text())
        found = self.driver.execute_async_script(
            """
            const done = arguments[arguments.length - 1];
            const within = arguments[0];
            axe.run(within ? {include: [[within]]} : document, {resultTypes: ["violations"]})
              .then(r => done(r.violations.map(v => [
                v.id, v.impact, v.help, v.nodes.slice(0, 3).map(n => n.target.join(" "))])))
              .catch(e => done([["axe-failed", "critical", String(e), []]]));
            """,
            within,
        )
        return [
            f"{rule} ({impact}): {text} at {', '.join(targets)}"
            for rule, impact, text, targets in found
            if impact in impacts
        ]

    def shot(self, label: str) -> Path:
        """A screenshot of the window, saved as tests/screenshots/<test>-<n>-<label>.png."""
        SCREENSHOTS.mkdir(exist_ok=True)
        self._shots += 1
        path = SCREENSHOTS / f"{self.name}-{self._shots:02d}-{label}.png"
        self.driver.save_screenshot(str(path))
        return path

    def find(self, css: str) -> list[WebElement]:
        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def element(self, css: str, timeout: float = 20) -> WebElement:
        """The first element matching `css`, waiting for it to appear."""
        return self.wait(lambda: next(iter(self.find(css)), None), timeout, f"an element {css}")

    def click(self, css: str, timeout: float = 20) -> None:
        """Click the first element matching `css`, again if a live page redrew it meanwhile."""

        def clicked() -> bool:
            found = self.find(css)
            if not found:
                return False
            found[0].click()  # stale: `wait` tries again
            return True

        self.wait(clicked, timeout, f"to click {css}")

    def text(self, css: str) -> str:
        return "\n".join(self._texts(css))

    def _texts(self, css: str) -> list[str]:
        try:
            return [str(e.text) for e in self.find(css)]
        except StaleElementReferenceException:
            return []

    def wait(self, probe: Callable[[], T | None], timeout: float, what: str) -> T:
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = probe()
            except StaleElementReferenceException:
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                self.shot("timeout")
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; at {self.path}:\n"
                    + str(self.driver.find_element(By.TAG_NAME, "body").text)[:2000]
                )
            time.sleep(0.1)

    def post_without_token(self, path: str, fields: dict[str, str]) -> tuple[int, str]:
        """A same-origin POST from the page's own context with no CSRF token, as a script
        injected into it would send; (status, body)."""
        result = self.driver.execute_async_script(
            """
            const [path, fields, done] = arguments;
            fetch(path, {method: "POST", body: new URLSearchParams(fields),
                         credentials: "same-origin"})
              .then(async r => done([r.status, await r.text()]))
              .catch(e => done([0, String(e)]));
            """,
            path,
            fields,
        )
        return int(result[0]), str(result[1])
