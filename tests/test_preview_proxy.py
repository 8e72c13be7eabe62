"""The preview proxy's pure parts, and its answers to hostile requests (no Docker needed:
the routes point at a plain asyncio server standing in for a preview)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from runner.previews.proxy import (
    COOKIE,
    MAX_HEAD_BYTES,
    PreviewProxy,
    cookie_token,
    entry,
    parse_head,
    upstream_head,
)
from runner.previews.routes import Route, Routes, new_token


def head_of(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_request_head_is_read() -> None:
    head = parse_head(head_of("GET /a?b=1 HTTP/1.1", "Host: x", "Cookie: a=1; trimo_preview=t"))
    assert head is not None
    assert (head.method, head.target, head.version) == ("GET", "/a?b=1", "HTTP/1.1")
    assert head.header("host") == "x" and cookie_token(head) == "t"
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


class Proxied:
    def __init__(self, proxy: PreviewProxy, token: str) -> None:
        self.proxy = proxy
        self.token = token

    async def ask(self, raw: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.proxy.port)
        writer.write(raw)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return answer


@pytest.fixture
async def proxied() -> AsyncIterator[Proxied]:
    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
        await writer.drain()
        writer.close()

    backend = await asyncio.start_server(app, "127.0.0.1", 0)
    port = backend.sockets[0].getsockname()[1]
    routes = Routes()
    token = new_token()
    routes.add(
        Route("pv-1", token, "127.0.0.1", port, expires_at=routes.clock() + 60, last_request=0)
    )
    proxy = PreviewProxy(routes, secure=True)
    await proxy.start("127.0.0.1", 0)
    try:
        yield Proxied(proxy, token)
    finally:
        await proxy.close()
        backend.close()


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
