"""Attacks from one preview on another in a real headless Chromium, through the real proxy.

In path mode every preview of a runner shares one origin: preview A used to plant the
proxy's cookie for a narrower path (`Set-Cookie: trimo_preview=<A>; Path=/api`, or the
same from a script) and so receive the requests a person later made to preview B, a login
form's password included; or to register a service worker that answers for every preview.
In host mode each preview has an origin of its own.

The previews here are small asyncio servers that answer what a hostile preview would: what
is under test is the proxy and the browser.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from runner.previews.heads import COOKIE
from runner.previews.links import Links
from runner.previews.proxy import PreviewProxy
from runner.previews.routes import Route, Routes, new_token
from tests.browser import chromium

Answer = tuple[int, list[tuple[str, str]], str]
LOGIN = """<!doctype html><title>B: signing in</title><body>B<script>
fetch("/api/login", {method: "POST", body: "password=hunter2"})
  .then(async r => { document.title = r.status + " " + await r.text(); })
  .catch(e => { document.title = "error " + e; });
</script></body>"""


@dataclass
class StandIn:
    """A preview that answers `pages` (path → answer) and notes every request it gets."""

    pages: dict[str, Answer]
    seen: list[tuple[str, str, bytes]] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            method, target = head.split(" ")[:2]
            length = next(
                (
                    int(h.split(":")[1])
                    for h in head.split("\r\n")
                    if h.lower().startswith("content-length:")
                ),
                0,
            )
            body = await reader.readexactly(length) if length else b""
            self.seen.append((method, target, body))
            status, headers, text = self.pages.get(target.split("?")[0], (404, [], "no such page"))
            data = text.encode()
            lines = [f"HTTP/1.1 {status} X", *(f"{k}: {v}" for k, v in headers)]
            lines += [f"Content-Length: {len(data)}", "Connection: close"]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
            await writer.drain()
        finally:
            writer.close()

    def paths(self) -> list[str]:
        return [target for _method, target, _body in self.seen]


@dataclass
class Previews:
    proxy: PreviewProxy
    routes: Routes
    servers: list[asyncio.Server] = field(default_factory=list)

    async def add(self, pages: dict[str, Answer], token: str | None = None) -> tuple[StandIn, str]:
        preview = StandIn(pages)
        server = await asyncio.start_server(preview.handle, "127.0.0.1", 0)
        self.servers.append(server)
        preview.port = int(server.sockets[0].getsockname()[1])
        token = token or new_token()
        clock = self.routes.clock()
        self.routes.add(
            Route(f"pv-{len(self.servers)}", token, "127.0.0.1", preview.port, clock + 600, clock)
        )
        return preview, token

    def link(self, token: str) -> str:
        return self.proxy.links.url(token).replace(":1/", f":{self.proxy.port}/", 1)


async def previews_at(links: Links) -> AsyncIterator[Previews]:
    routes = Routes()
    proxy = PreviewProxy(routes, links)
    await proxy.start("127.0.0.1", 0)
    previews = Previews(proxy, routes)
    try:
        yield previews
    finally:
        await proxy.close()
        for server in previews.servers:
            server.close()


@pytest.fixture
async def path_mode() -> AsyncIterator[Previews]:
    async for previews in previews_at(Links.parse("http://127.0.0.1:1")):
        yield previews


@pytest.fixture
async def host_mode() -> AsyncIterator[Previews]:
    async for previews in previews_at(Links.parse("http://*.localhost:1")):
        yield previews


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    binary, driver_path = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


async def open_page(driver: webdriver.Chrome, url: str, done: Callable[[str], bool]) -> str:
    """Load `url` and wait (with a deadline) until the page's title says it is done."""
    await asyncio.to_thread(driver.get, url)
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        title = str(await asyncio.to_thread(lambda: driver.title))
        if done(title):
            return title
        assert asyncio.get_running_loop().time() < deadline, f"page {url} stuck at {title!r}"
        await asyncio.sleep(0.1)


def html(text: str, *headers: tuple[str, str]) -> Answer:
    return 200, [("Content-Type", "text/html; charset=utf-8"), *headers], text


async def test_a_cookie_planted_by_a_preview_answer_never_steers_another_preview(
    path_mode: Previews, browser: webdriver.Chrome
) -> None:
    token_a = new_token()
    planted = [
        ("Set-Cookie", f"{COOKIE}={token_a}; Path=/api"),
        ("set-cookie", f"TRIMO_PREVIEW={token_a}; Path=/api/login"),
        ("Set-Cookie", f"={COOKIE}={token_a}; Path=/api"),
        ("Set-Cookie", f" {COOKIE} = {token_a} ; Path=/api; Domain=127.0.0.1"),
        ("Set-Cookie", "theme=dark; Path=/"),
    ]
    a, _ = await path_mode.add({"/": html("<title>A</title>A", *planted)}, token_a)
    b, token_b = await path_mode.add({"/": html(LOGIN), "/api/login": html("B got it")})

    await open_page(browser, path_mode.link(token_a), lambda t: t == "A")
    assert browser.get_cookie("theme") is not None  # the preview's own cookies pass
    title = await open_page(browser, path_mode.link(token_b), lambda t: t[:1].isdigit())

    assert "/api/login" not in a.paths()
    assert title == "200 B got it"
    assert ("POST", "/api/login", b"password=hunter2") in b.seen


async def test_a_cookie_planted_by_a_preview_script_never_steers_another_preview(
    path_mode: Previews, browser: webdriver.Chrome
) -> None:
    token_a = new_token()
    script = (
        f'<script>document.cookie = "{COOKIE}={token_a}; path=/api"; document.title = "A";</script>'
    )
    a, _ = await path_mode.add({"/": html(f"<title>A?</title>{script}")}, token_a)
    b, token_b = await path_mode.add({"/": html(LOGIN), "/api/login": html("B got it")})

    await open_page(browser, path_mode.link(token_a), lambda t: t == "A")
    title = await open_page(browser, path_mode.link(token_b), lambda t: t[:1].isdigit())

    assert "/api/login" not in a.paths()
    assert title.startswith("409 ")  # two tokens: the request goes nowhere...
    # ...and the planted cookie is gone: the next try reaches B.
    title = await open_page(browser, path_mode.link(token_b), lambda t: t[:1].isdigit())
    assert title == "200 B got it" and "/api/login" not in a.paths()
    assert ("POST", "/api/login", b"password=hunter2") in b.seen


SERVICE_WORKER = """self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", e => e.waitUntil(self.clients.claim()));
self.addEventListener("fetch", e => {
  if (new URL(e.request.url).pathname.startsWith("/p/")) return;
  e.respondWith(new Response("<title>intercepted by A</title>",
                             {headers: {"Content-Type": "text/html"}}));
});"""
REGISTER = """<!doctype html><title>A</title><script>
navigator.serviceWorker.register("/sw.js", {scope: "/"})
  .then(() => navigator.serviceWorker.ready)
  .then(() => { document.title = "A: registered"; })
  .catch(e => { document.title = "A: refused"; });
</script>"""
DATA = """<!doctype html><title>B</title><script>
fetch("/data").then(r => r.text()).then(t => { document.title = "B: " + t; });
</script>"""


def sw_previews() -> tuple[dict[str, Answer], dict[str, Answer]]:
    script = (200, [("Content-Type", "text/javascript")], SERVICE_WORKER)
    return {"/": html(REGISTER), "/sw.js": script}, {"/": html(DATA), "/data": html("its own")}


async def test_a_service_worker_of_one_preview_never_answers_for_another_in_path_mode(
    path_mode: Previews, browser: webdriver.Chrome
) -> None:
    pages_a, pages_b = sw_previews()
    a, token_a = await path_mode.add(pages_a)
    b, token_b = await path_mode.add(pages_b)

    title = await open_page(browser, path_mode.link(token_a), lambda t: t.startswith("A: "))
    assert title == "A: refused"
    title = await open_page(browser, path_mode.link(token_b), lambda t: t.startswith("B: "))
    assert title == "B: its own" and "/data" in b.paths() and "/data" not in a.paths()


async def test_host_mode_gives_each_preview_its_own_origin(
    host_mode: Previews, browser: webdriver.Chrome
) -> None:
    pages_a, pages_b = sw_previews()
    _a, token_a = await host_mode.add(pages_a)
    b, token_b = await host_mode.add(pages_b)
    assert host_mode.link(token_a) == f"http://{token_a}.localhost:{host_mode.proxy.port}/"

    # A's service worker is A's alone: it controls A's origin, never B's.
    title = await open_page(browser, host_mode.link(token_a), lambda t: t.startswith("A: "))
    assert title == "A: registered"
    title = await open_page(browser, host_mode.link(token_b), lambda t: t.startswith("B: "))
    assert title == "B: its own" and "/data" in b.paths()
    seen = json.dumps(browser.get_cookies())
    assert COOKIE not in seen  # no routing cookie in host mode
