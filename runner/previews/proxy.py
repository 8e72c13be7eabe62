"""This runner's reverse proxy for its previews: one asyncio server, raw HTTP/1.1.

`GET /p/<token>/path` sets a cookie holding the token and redirects to `/path`; every
other request goes to the preview its cookie names. A wrong or expired token gets a 404.
The proxy reads only the head of a connection's first request, then passes bytes both
ways untouched, so WebSockets (dev servers' live reload) and streamed bodies pass through;
each connection to a preview is closed after one response (or upgrade), so every request
is routed, and counted against idleness, on its own.

Why a cookie and not a path prefix: dev servers and built apps use absolute paths
(`/assets/app.js`, `/@vite/client`), which a prefix would break. The price is one preview
at a time per browser and proxy host: the link last opened wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass
from functools import cache

from runner.previews.routes import Route, Routes
from runner.templating import render

log = logging.getLogger("trimo.previews")

COOKIE = "trimo_preview"
MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0
CHUNK_BYTES = 64 * 1024
_ENTRY = re.compile(r"/p/([A-Za-z0-9_-]{1,128})([/?].*)?")
_TOKEN_CHAR = re.compile(r"[^\x21-\x7e]")
_DROPPED = frozenset({"connection", "keep-alive", "proxy-connection", "upgrade"})


@dataclass(frozen=True)
class Head:
    """The first lines of an HTTP/1.x request."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def upgrade(self) -> bool:
        tokens = {t.strip().lower() for t in (self.header("connection") or "").split(",")}
        return "upgrade" in tokens and self.header("upgrade") is not None


def parse_head(raw: bytes) -> Head | None:
    """The request line and headers of `raw` (ending in a blank line); None if malformed."""
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1]:
        return None
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or _TOKEN_CHAR.search(name):
            return None
        headers.append((name, value.strip()))
    return Head(parts[0], parts[1], parts[2], headers)


def cookie_token(head: Head) -> str | None:
    for name, value in head.headers:
        if name.lower() != "cookie":
            continue
        for pair in value.split(";"):
            key, _, token = pair.strip().partition("=")
            if key == COOKIE:
                return token
    return None


def entry(target: str) -> tuple[str, str] | None:
    """(token, where to go after) for an entry link `/p/<token>/...`; else None."""
    match = _ENTRY.fullmatch(target)
    if match is None:
        return None
    rest = match.group(2) or "/"
    return match.group(1), "/" + rest.lstrip("/") if rest.startswith("/") else "/" + rest


def upstream_head(head: Head, peer: str, scheme: str) -> bytes:
    """The head sent to the preview: our cookie removed, one response per connection."""
    lines = [f"{head.method} {head.target} {head.version}"]
    for name, value in head.headers:
        lowered = name.lower()
        if lowered in _DROPPED or lowered.startswith("x-forwarded-"):
            continue
        if lowered == "cookie":
            kept = [p.strip() for p in value.split(";") if not p.strip().startswith(COOKIE + "=")]
            value = "; ".join(p for p in kept if p)
            if not value:
                continue
        lines.append(f"{name}: {value}")
    if head.upgrade:
        lines += ["Connection: Upgrade", f"Upgrade: {head.header('upgrade')}"]
    else:
        lines.append("Connection: close")
    lines += [f"X-Forwarded-For: {peer}", f"X-Forwarded-Proto: {scheme}"]
    if (host := head.header("host")) is not None:
        lines.append(f"X-Forwarded-Host: {host}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@cache
def _page(name: str) -> bytes:
    return render(f"previews/{name}.html.j2").encode()


def response(status: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers)]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def not_found() -> bytes:
    return response(
        "404 Not Found",
        [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")],
        _page("not_found"),
    )


class PreviewProxy:
    """The reverse proxy in front of this runner's previews."""

    def __init__(self, routes: Routes, secure: bool) -> None:
        self.routes = routes
        self.secure = secure
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self.handle, host, port, limit=MAX_HEAD_BYTES)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._handle(reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, OSError):
            pass
        except Exception:  # one bad connection never stops the proxy
            log.exception("preview proxy: a connection failed")
        finally:
            writer.transport.abort()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_SECONDS)
        except asyncio.LimitOverrunError:
            writer.write(response("431 Request Header Fields Too Large", []))
            await writer.drain()
            return
        head = parse_head(raw)
        if head is None:
            writer.write(response("400 Bad Request", []))
            await writer.drain()
            return
        entered = entry(head.target)
        if entered is not None:
            await self._enter(writer, *entered)
            return
        token = cookie_token(head)
        route = self.routes.find(token) if token else None
        if route is None:
            writer.write(not_found())
            await writer.drain()
            return
        await self._forward(reader, writer, head, route)

    async def _enter(self, writer: asyncio.StreamWriter, token: str, then: str) -> None:
        route = self.routes.find(token)
        if route is None:
            writer.write(not_found())
        else:
            max_age = max(1, int(route.expires_at - self.routes.clock()))
            cookie = f"{COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax"
            cookie += "; Secure" if self.secure else ""
            self.routes.touch(route)
            headers = [("Location", then), ("Set-Cookie", cookie), ("Cache-Control", "no-store")]
            writer.write(response("303 See Other", headers))
        await writer.drain()

    async def _forward(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: Head,
        route: Route,
    ) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(route.address, route.port), CONNECT_TIMEOUT_SECONDS
            )
        except (OSError, TimeoutError):
            writer.write(
                response(
                    "502 Bad Gateway",
                    [("Content-Type", "text/html; charset=utf-8"), ("Retry-After", "2")],
                    _page("unreachable"),
                )
            )
            await writer.drain()
            return

        def cut() -> None:
            writer.transport.abort()
            up_writer.transport.abort()

        route.closers.add(cut)
        peer = writer.get_extra_info("peername")
        try:
            self.routes.touch(route)
            scheme = "https" if self.secure else "http"
            up_writer.write(upstream_head(head, str(peer[0]) if peer else "", scheme))
            up = asyncio.create_task(self._pipe(reader, up_writer, route))
            down = asyncio.create_task(self._pipe(up_reader, writer, None))
            done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            if up in done and down not in done and not head.upgrade:
                with contextlib.suppress(OSError):
                    up_writer.write_eof()
                await asyncio.wait({down})
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
        finally:
            route.closers.discard(cut)
            up_writer.transport.abort()

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, route: Route | None
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(CHUNK_BYTES):
                if route is not None:
                    self.routes.touch(route)
                sink.write(data)
                await sink.drain()
