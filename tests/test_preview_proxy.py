"""The preview proxy's pure parts, and its answers to hostile requests (no Docker needed:
the routes point at a plain asyncio server standing in for a preview)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable

import pytest

from runner.previews.heads import (
    COOKIE,
    MAX_HEAD_BYTES,
    cookie_tokens,
    entry,
    parse_head,
    upstream_head,
)
from runner.previews.links import Links
from runner.previews.proxy import PreviewProxy, ProxyLimits
from runner.previews.routes import Route, Routes, new_token


def head_of(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_request_head_is_read() -> None:
    head = parse_head(head_of("GET /a?b=1 HTTP/1.1", "Host: x", "Cookie: a=1; trimo_preview=t"))
    assert head is not None
    assert (head.method, head.target, head.version) == ("GET", "/a?b=1", "HTTP/1.1")
    assert head.header("host") == "x" and cookie_tokens(head) == {"t"}
    assert not head.upgrade


@pytest.mark.parametrize(
    "raw",
    [
        head_of("GET /"),
        head_of("GET / HTTP/2"),
        head_of("GET  / HTTP/1.1"),
        head_of("GET / HTTP/1.1", "Bad Name: x"),
        head_of("GET / HTTP/1.1", " folded: x"),
        head_of("GET / HTTP/1.1", "no colon"),
    ],
)
def test_malformed_heads_are_refused(raw: bytes) -> None:
    assert parse_head(raw) is None


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/p/abc/", ("abc", "/")),
        ("/p/abc", ("abc", "/")),
        ("/p/abc/app/page?x=1", ("abc", "/app/page?x=1")),
        ("/p/abc?x=1", ("abc", "/?x=1")),
        ("/p/abc//evil.example/x", ("abc", "/evil.example/x")),  # never protocol-relative
        ("/p/../x", None),
        ("/p/", None),
        ("/q/abc/", None),
        ("/p/a%2Fb/", None),
    ],
)
def test_entry_links(target: str, expected: tuple[str, str] | None) -> None:
    assert entry(target) == expected


def test_the_preview_gets_no_proxy_cookie_and_no_forged_forwarding_headers() -> None:
    head = parse_head(
        head_of(
            "POST /api HTTP/1.1",
            "Host: preview.example",
            f"Cookie: theirs=1; {COOKIE}=secret-token; other=2",
            "X-Forwarded-For: 6.6.6.6",
            "Connection: keep-alive",
            "Content-Length: 3",
        )
    )
    assert head is not None
    sent = upstream_head(head, "10.0.0.9", "https").decode()
    assert "secret-token" not in sent
    assert "Cookie: theirs=1; other=2\r\n" in sent
    assert "6.6.6.6" not in sent and "X-Forwarded-For: 10.0.0.9\r\n" in sent
    assert "Connection: close\r\n" in sent and "keep-alive" not in sent
    assert "Content-Length: 3\r\n" in sent and "X-Forwarded-Proto: https\r\n" in sent
    assert sent.endswith("\r\n\r\n")


def test_an_upgrade_keeps_its_headers() -> None:
    head = parse_head(
        head_of("GET /hmr HTTP/1.1", "Connection: keep-alive, Upgrade", "Upgrade: websocket")
    )
    assert head is not None and head.upgrade
    sent = upstream_head(head, "", "http").decode()
    assert "Connection: Upgrade\r\n" in sent and "Upgrade: websocket\r\n" in sent


def test_routes_open_only_live_tokens() -> None:
    now = [1000.0]
    routes = Routes(lambda: now[0])
    token = new_token()
    assert len(token) >= 43
    routes.add(Route("pv-1", token, "10.0.0.2", 80, expires_at=2000.0, last_request=1000.0))
    assert routes.find(token) is not None
    assert routes.find(token[:-1]) is None and routes.find("") is None
    now[0] = 2000.0
    assert routes.find(token) is None


HELLO = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"


class Proxied:
    def __init__(self, proxy: PreviewProxy, token: str) -> None:
        self.proxy = proxy
        self.token = token
        self.answer: bytes | None = HELLO
        """What the stand-in preview answers (None: nothing, ever)."""

    async def ask(self, raw: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.proxy.port)
        writer.write(raw)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return answer

    async def get(self, path: str = "/", *headers: str) -> bytes:
        cookie = f"Cookie: {COOKIE}={self.token}"
        return await self.ask(head_of(f"GET {path} HTTP/1.1", "Host: h", cookie, *headers))


async def proxy_for(links: Links, limits: ProxyLimits | None = None) -> AsyncIterator[Proxied]:
    proxied: list[Proxied] = []

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        answer = proxied[0].answer
        if answer is None:
            await reader.read()
            return
        writer.write(answer)
        await writer.drain()
        if answer.startswith(b"HTTP/1.1 101 "):
            await reader.read()  # an upgraded stream stays open
        writer.close()

    backend = await asyncio.start_server(app, "127.0.0.1", 0)
    port = backend.sockets[0].getsockname()[1]
    routes = Routes()
    token = new_token()
    routes.add(
        Route("pv-1", token, "127.0.0.1", port, expires_at=routes.clock() + 60, last_request=0)
    )
    proxy = PreviewProxy(routes, links, limits)
    await proxy.start("127.0.0.1", 0)
    proxied.append(Proxied(proxy, token))
    try:
        yield proxied[0]
    finally:
        await proxy.close()
        backend.close()


@pytest.fixture
async def proxied() -> AsyncIterator[Proxied]:
    async for found in proxy_for(Links.parse("https://previews.example.com")):
        yield found


@pytest.fixture
async def per_host() -> AsyncIterator[Proxied]:
    async for found in proxy_for(Links.parse("https://*.previews.example.com")):
        yield found


async def test_the_entry_link_sets_a_scoped_cookie_and_redirects(proxied: Proxied) -> None:
    answer = await proxied.ask(head_of(f"GET /p/{proxied.token}/docs?x=1 HTTP/1.1", "Host: h"))
    assert answer.startswith(b"HTTP/1.1 303 See Other\r\n")
    assert b"\r\nLocation: /docs?x=1\r\n" in answer
    cookie = f"Set-Cookie: {COOKIE}={proxied.token}; Path=/; Max-Age="
    assert cookie.encode() in answer and b"HttpOnly; SameSite=Lax; Secure" in answer


async def test_a_request_with_the_cookie_reaches_the_preview(proxied: Proxied) -> None:
    answer = await proxied.ask(
        head_of("GET / HTTP/1.1", "Host: h", f"Cookie: {COOKIE}={proxied.token}")
    )
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"hello")


@pytest.mark.parametrize(
    "raw",
    [
        head_of("GET / HTTP/1.1", "Host: h"),
        head_of("GET / HTTP/1.1", "Host: h", f"Cookie: {COOKIE}=wrong"),
        head_of("GET /p/wrong-token/ HTTP/1.1", "Host: h"),
    ],
)
async def test_wrong_tokens_get_a_404(proxied: Proxied, raw: bytes) -> None:
    answer = await proxied.ask(raw)
    assert answer.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert b"This preview is not here" in answer


async def test_garbage_and_huge_heads_get_clear_errors(proxied: Proxied) -> None:
    assert (await proxied.ask(b"\x16\x03\x01 tls?\r\n\r\n")).startswith(b"HTTP/1.1 400")
    huge = b"GET / HTTP/1.1\r\nX: " + b"a" * (MAX_HEAD_BYTES + 10) + b"\r\n\r\n"
    assert (await proxied.ask(huge)).startswith(b"HTTP/1.1 431")
    # The proxy still serves afterwards.
    answer = await proxied.ask(
        head_of("GET / HTTP/1.1", "Host: h", f"Cookie: {COOKIE}={proxied.token}")
    )
    assert answer.endswith(b"hello")


@pytest.mark.parametrize(
    "set_cookie",
    [
        f"{COOKIE}=planted; Path=/api",
        "TRIMO_PREVIEW=planted; Path=/api",
        f" {COOKIE} = planted ; Path=/api",
        f"={COOKIE}=planted; Path=/api",
        f"{COOKIE}=planted; Domain=previews.example.com; Path=/",
        "trimo_session=forged; Path=/",
    ],
)
async def test_a_preview_never_sets_trimos_cookies(proxied: Proxied, set_cookie: str) -> None:
    for ending in (b"\r\n", b"\n"):  # a bare LF ends a line for a browser too
        lines = [
            b"HTTP/1.1 200 OK",
            b"Set-Cookie: theme=dark",
            b"set-cookie: " + set_cookie.encode(),
        ]
        lines += [b"SET-COOKIE: " + set_cookie.encode(), b"Content-Length: 2"]
        proxied.answer = ending.join(lines) + ending * 2 + b"ok"
        answer = await proxied.get()
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nok")
        assert b"planted" not in answer and b"forged" not in answer
        assert b"Set-Cookie: theme=dark\r\n" in answer


async def test_the_browser_never_reuses_a_connection_a_preview_asks_to_keep(
    proxied: Proxied,
) -> None:
    proxied.answer = (
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=600\r\n"
        b'Clear-Site-Data: "cookies"\r\nContent-Length: 2\r\n\r\nok'
    )
    answer = await proxied.get()
    head = answer.split(b"\r\n\r\n")[0].lower()
    assert b"connection: close" in head and b"keep-alive" not in head
    assert b"clear-site-data" not in head


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\n folded=continued\r\n\r\n",
        b"HTTP/1.1 200 OK\rSet-Cookie: trimo_preview=x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nSet-Cookie : trimo_preview=x\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        b"HTTP/0.9 junk\r\n\r\n",
        b"",
    ],
)
async def test_answers_a_browser_could_read_otherwise_become_a_502(
    proxied: Proxied, answer: bytes
) -> None:
    proxied.answer = answer
    got = await proxied.get()
    assert got.startswith(b"HTTP/1.1 502 Bad Gateway\r\n") and b"trimo_preview=x" not in got


async def test_an_early_hint_is_checked_like_the_answer(proxied: Proxied) -> None:
    proxied.answer = (
        b"HTTP/1.1 103 Early Hints\r\nSet-Cookie: trimo_preview=planted\r\n\r\n" + HELLO
    )
    answer = await proxied.get()
    assert answer.startswith(b"HTTP/1.1 103 Early Hints\r\n") and answer.endswith(b"hello")
    assert b"planted" not in answer


async def test_path_mode_refuses_service_workers_and_planted_tokens(proxied: Proxied) -> None:
    refused = await proxied.get("/sw.js", "Service-Worker: script")
    assert refused.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    planted = await proxied.ask(
        head_of(
            "POST /api/login?next=/ HTTP/1.1",
            "Host: previews.example.com",
            f"Cookie: {COOKIE}=planted; theme=dark; {COOKIE}={proxied.token}",
        )
    )
    assert planted.startswith(b"HTTP/1.1 409 Conflict\r\n")
    for path in ("/api", "/api/", "/api/login"):
        expired = f"Set-Cookie: {COOKIE}=; Path={path}; Max-Age=0\r\n".encode()
        assert expired in planted
    assert f"Set-Cookie: {COOKIE}=; Path=/;".encode() not in planted  # the proxy's own stays
    assert b"Domain=previews.example.com" in planted


def test_links_in_either_mode() -> None:
    host = Links.parse("https://*.Previews.example.com/")
    assert host.per_host and str(host) == "https://*.previews.example.com"
    assert host.url("abc") == "https://abc.previews.example.com/"
    token = new_token()
    assert len(token) == 52 and token == token.lower() and token.isalnum()
    assert host.token_of(f"{token}.previews.example.com") == token
    assert host.token_of(f"{token.upper()}.PREVIEWS.example.com:443") == token
    for other in (
        "previews.example.com",
        f"{token}.x.previews.example.com",
        f"{token}.example.com",
        "",
        None,
    ):
        assert host.token_of(other) is None
    path = Links.parse("http://127.0.0.1:8090")
    assert not path.per_host and path.url("abc") == "http://127.0.0.1:8090/p/abc/"
    assert path.token_of(f"{token}.127.0.0.1") is None
    assert Links.parse("http://[::1]:8090/").url("abc") == "http://[::1]:8090/p/abc/"
    for bad in (
        "ftp://x",
        "https://x/y",
        "https://*.*.example.com",
        "https://a*.example.com",
        "https://u@x",
        "https://x:99999",
    ):
        with pytest.raises(ValueError):
            Links.parse(bad)


async def test_host_mode_routes_by_host_name_alone(per_host: Proxied) -> None:
    host = f"Host: {per_host.token}.previews.example.com"
    answer = await per_host.ask(head_of("GET /any/path HTTP/1.1", host))
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"hello")
    # A service worker is the preview's own business on its own origin.
    answer = await per_host.ask(head_of("GET /sw.js HTTP/1.1", host, "Service-Worker: script"))
    assert answer.endswith(b"hello")
    # Unknown hosts, and the path mode's cookie and links, open nothing.
    for raw in (
        head_of(
            "GET / HTTP/1.1", "Host: previews.example.com", f"Cookie: {COOKIE}={per_host.token}"
        ),
        head_of(f"GET /p/{per_host.token}/ HTTP/1.1", "Host: previews.example.com"),
        head_of("GET / HTTP/1.1", f"Host: {per_host.token}.elsewhere.example.com"),
        head_of("GET / HTTP/1.1"),
    ):
        assert (await per_host.ask(raw)).startswith(b"HTTP/1.1 404 Not Found\r\n")


async def test_connections_are_capped_in_all_and_per_address() -> None:
    limits = ProxyLimits(max_connections=3, per_client=2)
    async for proxied in proxy_for(Links.parse("http://127.0.0.1:1"), limits):
        held = [await asyncio.open_connection("127.0.0.1", proxied.proxy.port) for _ in range(2)]
        await wait_for_open(proxied.proxy, 2)
        assert await refused(proxied.get())  # a third from 127.0.0.1
        other = await asyncio.open_connection(
            "127.0.0.1", proxied.proxy.port, local_addr=("127.0.0.2", 0)
        )
        await wait_for_open(proxied.proxy, 3)
        fourth = await asyncio.open_connection(
            "127.0.0.1", proxied.proxy.port, local_addr=("127.0.0.3", 0)
        )
        assert await refused(asyncio.wait_for(fourth[0].read(), 10))
        for _reader, writer in [*held, other, fourth]:
            writer.close()
        await wait_for_open(proxied.proxy, 0)
        assert (await proxied.get()).endswith(b"hello")


async def test_still_connections_are_closed() -> None:
    limits = ProxyLimits(head_seconds=0.3, idle_seconds=0.3, upgraded_idle_seconds=2)
    async for proxied in proxy_for(Links.parse("http://127.0.0.1:1"), limits):
        # No complete head in time.
        reader, writer = await asyncio.open_connection("127.0.0.1", proxied.proxy.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n")
        assert await asyncio.wait_for(reader.read(), 10) == b""
        # A preview that never answers.
        proxied.answer = None
        assert await asyncio.wait_for(proxied.get(), 10) == b""
        # An upgraded stream may stay still longer than a request, but not for ever.
        proxied.answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n\r\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", proxied.proxy.port)
        writer.write(
            head_of(
                "GET /ws HTTP/1.1",
                "Connection: Upgrade",
                "Upgrade: echo",
                f"Cookie: {COOKIE}={proxied.token}",
            )
        )
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(
            b"HTTP/1.1 101"
        )
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(), 10) == b""
        assert asyncio.get_running_loop().time() - started >= 1.5
        writer.close()


async def refused(answer: Awaitable[bytes]) -> bool:
    """A 503, or a reset when the proxy closed before reading what was sent."""
    try:
        return (await answer).startswith(b"HTTP/1.1 503 ")
    except ConnectionResetError:
        return True


async def wait_for_open(proxy: PreviewProxy, count: int) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while proxy.open_connections != count:
        assert asyncio.get_running_loop().time() < deadline, proxy.open_connections
        await asyncio.sleep(0.02)
