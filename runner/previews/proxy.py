"""This runner's reverse proxy for its previews: one asyncio server, raw HTTP/1.1.

Which preview a request goes to (`runner.previews.links`):
- host mode: the request's host name is the token; any other host gets a 404;
- path mode: `GET /p/<token>/path` sets a cookie holding the token and redirects to
  `/path`; every other request goes to the preview its cookie names. Two different tokens
  in one request mean a preview planted a cookie: the request goes nowhere. A service
  worker's script is refused, since it would control every preview on the shared origin.
A wrong or expired token gets a 404.

The proxy reads the head of a connection's one request, and the head of the preview's
answer (rewritten by `heads.downstream_head`), then passes bytes both ways untouched, so
WebSockets (dev servers' live reload) and streamed bodies pass through. Each connection
carries one request: every request is routed on its own.

Every connection is a descriptor of the runner's: the proxy holds at most so many in all
and from one address, closes one that sends no request head within seconds, and one that
moves no byte for minutes. A visitor without a valid token costs nothing lasting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from functools import cache

from runner import descriptors
from runner.previews.heads import (
    COOKIE,
    MAX_HEAD_BYTES,
    MAX_HEAD_LINES,
    Head,
    cookie_tokens,
    downstream_head,
    entry,
    expiring_cookies,
    parse_answer,
    parse_head,
    response,
    upstream_head,
)
from runner.previews.links import Links
from runner.previews.routes import Route, Routes
from runner.templating import render

log = logging.getLogger("trimo.previews")

CONNECT_TIMEOUT_SECONDS = 10.0
CHUNK_BYTES = 64 * 1024
HTML = ("Content-Type", "text/html; charset=utf-8")
NO_STORE = ("Cache-Control", "no-store")


@dataclass(frozen=True)
class ProxyLimits:
    max_connections: int = 256
    per_client: int = 64
    """Connections from one address (behind a TLS front, that front is one address)."""
    head_seconds: float = 5.0
    """A connection that sends no complete request head within this is closed."""
    idle_seconds: float = 120.0
    """A request whose connection moves no byte either way for this long is closed."""
    upgraded_idle_seconds: float = 600.0
    """The same for an upgraded connection (a dev server's live-reload WebSocket)."""

    @classmethod
    def for_descriptors(cls, soft_limit: int) -> ProxyLimits:
        """A connection holds two descriptors (the visitor's and the preview's): the proxy
        takes at most half of the process's, and one address a quarter of that."""
        total = max(8, min(4096, soft_limit // 4))
        return cls(max_connections=total, per_client=max(2, min(256, total // 4)))


@dataclass
class _Activity:
    """When bytes last moved on a forwarded connection, and how long it may stay still."""

    last: float
    limit: float


@dataclass
class _Open:
    total: int = 0
    by_client: Counter[str] = field(default_factory=Counter)


@cache
def _page(name: str) -> bytes:
    return render(f"previews/{name}.html.j2").encode()


def not_found() -> bytes:
    return response("404 Not Found", [HTML, NO_STORE], _page("not_found"))


class PreviewProxy:
    """The reverse proxy in front of this runner's previews."""

    def __init__(self, routes: Routes, links: Links, limits: ProxyLimits | None = None) -> None:
        self.routes = routes
        self.links = links
        self.limits = limits or ProxyLimits.for_descriptors(descriptors.soft_limit())
        self._open = _Open()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def open_connections(self) -> int:
        return self._open.total

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self.handle, host, port, limit=MAX_HEAD_BYTES)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if peer else ""
        opened = self._open
        if (
            opened.total >= self.limits.max_connections
            or opened.by_client[client] >= self.limits.per_client
        ):
            # Said and closed at once: the answer fits the socket's buffer.
            writer.write(response("503 Service Unavailable", [("Retry-After", "5")]))
            writer.close()
            return
        opened.total += 1
        opened.by_client[client] += 1
        try:
            await self._handle(reader, writer, client)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, OSError):
            pass
        except Exception:  # one bad connection never stops the proxy
            log.exception("preview proxy: a connection failed")
        finally:
            writer.transport.abort()
            opened.total -= 1
            opened.by_client[client] -= 1
            if not opened.by_client[client]:
                del opened.by_client[client]

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: str
    ) -> None:
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.limits.head_seconds)
        except asyncio.LimitOverrunError:
            writer.write(response("431 Request Header Fields Too Large", []))
            await writer.drain()
            return
        head = parse_head(raw)
        if head is None:
            await self._say(writer, response("400 Bad Request", []))
            return
        if self.links.per_host:
            token = self.links.token_of(head.header("host"))
        else:
            token, refusal = self._path_token(head)
            if refusal:
                await self._say(writer, refusal)
                return
        route = self.routes.find(token) if token else None
        if route is None:
            await self._say(writer, not_found())
            return
        await self._forward(reader, writer, head, route, client)

    def _path_token(self, head: Head) -> tuple[str | None, bytes]:
        """(token, refusal) of a request in path mode; an entry link is answered here."""
        entered = entry(head.target)
        if entered is not None:
            return None, self._enter(*entered)
        if head.header("service-worker") is not None:
            page = _page("service_worker")
            return None, response("403 Forbidden", [HTML, NO_STORE], page)
        tokens = cookie_tokens(head)
        if len(tokens) > 1:
            expire = expiring_cookies(head.target, head.header("host"))
            page = _page("planted_cookie")
            return None, response("409 Conflict", [HTML, NO_STORE, *expire], page)
        return next(iter(tokens), None), b""

    def _enter(self, token: str, then: str) -> bytes:
        route = self.routes.find(token)
        if route is None:
            return not_found()
        max_age = max(1, int(route.expires_at - self.routes.clock()))
        cookie = f"{COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax"
        cookie += "; Secure" if self.links.secure else ""
        self.routes.touch(route)
        return response("303 See Other", [("Location", then), ("Set-Cookie", cookie), NO_STORE])

    @staticmethod
    async def _say(writer: asyncio.StreamWriter, answer: bytes) -> None:
        writer.write(answer)
        await writer.drain()

    async def _forward(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: Head,
        route: Route,
        client: str,
    ) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(route.address, route.port, limit=MAX_HEAD_BYTES),
                CONNECT_TIMEOUT_SECONDS,
            )
        except (OSError, TimeoutError):
            page = _page("unreachable")
            await self._say(writer, response("502 Bad Gateway", [HTML, ("Retry-After", "2")], page))
            return

        def cut() -> None:
            writer.transport.abort()
            up_writer.transport.abort()

        route.closers.add(cut)
        loop = asyncio.get_running_loop()
        activity = _Activity(loop.time(), self.limits.idle_seconds)
        try:
            self.routes.touch(route)
            scheme = "https" if self.links.secure else "http"
            up_writer.write(upstream_head(head, client, scheme))
            up = asyncio.create_task(self._pipe(reader, up_writer, activity, route))
            down = asyncio.create_task(self._answer(up_reader, writer, head, activity))
            watch = asyncio.create_task(self._watch(activity))
            done, _ = await asyncio.wait({up, down, watch}, return_when=asyncio.FIRST_COMPLETED)
            if up in done and not head.upgrade and not done & {down, watch}:
                with contextlib.suppress(OSError):
                    up_writer.write_eof()
                await asyncio.wait({down, watch}, return_when=asyncio.FIRST_COMPLETED)
            for task in (up, down, watch):
                task.cancel()
            await asyncio.gather(up, down, watch, return_exceptions=True)
        finally:
            route.closers.discard(cut)
            up_writer.transport.abort()

    async def _answer(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        head: Head,
        activity: _Activity,
    ) -> None:
        """The preview's answer: its head (after any 1xx) checked and rewritten, then its
        bytes as they come."""
        while True:
            try:
                answer = parse_answer(await _head_lines(source))
            except asyncio.IncompleteReadError:  # closed before it answered
                answer = None
            if answer is None or (answer.status == 101 and not head.upgrade):
                page = _page("unreachable")
                await self._say(sink, response("502 Bad Gateway", [HTML, NO_STORE], page))
                return
            await self._say(sink, downstream_head(answer))
            activity.last = asyncio.get_running_loop().time()
            if answer.status == 101:
                activity.limit = self.limits.upgraded_idle_seconds
            if answer.status == 101 or answer.status >= 200:
                break
        await self._pipe(source, sink, activity, None)

    async def _pipe(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        activity: _Activity,
        route: Route | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(CHUNK_BYTES):
                activity.last = loop.time()
                if route is not None:
                    self.routes.touch(route)
                sink.write(data)
                await sink.drain()
                activity.last = loop.time()

    @staticmethod
    async def _watch(activity: _Activity) -> None:
        """Returns once the connection has been still for its limit."""
        loop = asyncio.get_running_loop()
        while (left := activity.last + activity.limit - loop.time()) > 0:
            await asyncio.sleep(left)


async def _head_lines(source: asyncio.StreamReader) -> list[bytes]:
    """The lines of an answer's head up to the blank line (which is left out), bounded in
    bytes and lines; a bare LF ends a line as it does for a browser."""
    lines: list[bytes] = []
    size = 0
    while True:
        try:
            line = await source.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            return []
        size += len(line)
        if size > MAX_HEAD_BYTES or len(lines) > MAX_HEAD_LINES:
            return []
        if line in (b"\r\n", b"\n"):
            return lines
        lines.append(line)
