"""HTTP/1.x heads as the preview proxy reads and rewrites them: pure functions, no I/O.

A preview is hostile, and so is what it answers. Its answer's head is parsed strictly (a
line a browser might read differently from us is refused, not passed on) and rewritten:
no cookie of Trimo's own names, no `Clear-Site-Data`, and `Connection: close`, so that a
browser never sends a second request down a connection the proxy routed for the first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

COOKIE = "trimo_preview"
"""The proxy's cookie in path mode: which preview this browser opened last."""
RESERVED_COOKIES = "trimo_"
"""Cookies named so are Trimo's (the proxy's, the dashboard's `trimo_session`): never sent
to a preview, never set by one."""
MAX_HEAD_BYTES = 64 * 1024
MAX_HEAD_LINES = 200
MAX_EXPIRED_PATHS = 10
_TOKEN_CHAR = re.compile(r"[^\x21-\x7e]|[()<>@,;:\\\"/\[\]?={}]")
_STATUS = re.compile(r"HTTP/1\.[01] ([1-5][0-9]{2})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")
_ENTRY = re.compile(r"/p/([A-Za-z0-9_-]{1,128})([/?].*)?")
_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "upgrade"})
_DROPPED_ANSWERS = frozenset({"clear-site-data"})


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


@dataclass(frozen=True)
class Answer:
    """The status line and headers of a preview's answer."""

    status: int
    reason: str
    headers: list[tuple[str, str]]


def _header(line: str) -> tuple[str, str] | None:
    name, sep, value = line.partition(":")
    if not sep or not name or _TOKEN_CHAR.search(name):
        return None
    return name, value.strip(" \t")


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
        header = _header(line)
        if header is None:
            return None
        headers.append(header)
    return Head(parts[0], parts[1], parts[2], headers)


def parse_answer(lines: list[bytes]) -> Answer | None:
    """A preview's status line and header lines (each with its line ending, the blank line
    left out); None when a browser could read them otherwise than this: a bare CR, a NUL,
    a folded line or a name with spaces."""
    text = []
    for raw in lines:
        line = raw.decode("latin-1").removesuffix("\n").removesuffix("\r")
        if "\r" in line or "\x00" in line:
            return None
        text.append(line)
    if not text or (status := _STATUS.fullmatch(text[0])) is None:
        return None
    headers = []
    for line in text[1:]:
        header = _header(line)
        if header is None:
            return None
        headers.append(header)
    return Answer(int(status.group(1)), status.group(2) or "", headers)


def reserved_cookie(set_cookie: str) -> bool:
    """Whether a `Set-Cookie` value sets one of Trimo's cookies, in any spelling a browser
    takes: any case, spaces, or nameless (`=trimo_preview=x` is sent as `trimo_preview=x`)."""
    return RESERVED_COOKIES in set_cookie.partition(";")[0].lower()


def downstream_head(answer: Answer) -> bytes:
    """The answer's head as the browser gets it."""
    lines = [f"HTTP/1.1 {answer.status} {answer.reason}".rstrip()]
    for name, value in answer.headers:
        lowered = name.lower()
        if lowered in _HOP or lowered in _DROPPED_ANSWERS:
            continue
        if lowered in ("set-cookie", "set-cookie2") and reserved_cookie(value):
            continue
        lines.append(f"{name}: {value}")
    if answer.status == 101:
        upgrade = next((v for k, v in answer.headers if k.lower() == "upgrade"), "")
        lines += ["Connection: Upgrade", f"Upgrade: {upgrade}"]
    elif answer.status >= 200:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def cookie_tokens(head: Head) -> set[str]:
    """Every value of the proxy's cookie in the request. More than one means a preview
    planted one (a script's `document.cookie` with a narrower Path comes first)."""
    found = set()
    for name, value in head.headers:
        if name.lower() != "cookie":
            continue
        for pair in value.split(";"):
            key, _, token = pair.strip().partition("=")
            if key.strip().lower() == COOKIE:
                found.add(token.strip())
    return found


def _reserved(pair: str) -> bool:
    return pair.strip().lower().lstrip("=").startswith(RESERVED_COOKIES)


def upstream_head(head: Head, peer: str, scheme: str) -> bytes:
    """The head sent to the preview: Trimo's cookies removed, one response per connection."""
    lines = [f"{head.method} {head.target} {head.version}"]
    for name, value in head.headers:
        lowered = name.lower()
        if lowered in _HOP or lowered.startswith("x-forwarded-"):
            continue
        if lowered == "cookie":
            value = "; ".join(p.strip() for p in value.split(";") if p.strip() and not _reserved(p))
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


def response(status: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    """One whole answer of the proxy's own."""
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers)]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def expiring_cookies(target: str, host: str | None) -> list[tuple[str, str]]:
    """`Set-Cookie` headers that expire a planted cookie of the proxy's name at every path
    narrower than `/` a browser could have sent with a request for `target`: host-only,
    for the host name, and nameless (sent as `trimo_preview=...` too)."""
    path = target.split("?", 1)[0]
    if not path.startswith("/"):
        return []
    segments = path.split("/")[1:]
    prefixes: list[str] = []
    for n in range(1, len(segments) + 1):
        prefix = "/" + "/".join(segments[:n])
        prefixes += [prefix, prefix + "/"] if n < len(segments) else [prefix]
    kept = [p for p in dict.fromkeys(prefixes) if p != "/" and len(p) <= 256][:MAX_EXPIRED_PATHS]
    name = (host or "").rsplit(":", 1)[0].lower()
    domain = f"; Domain={name}" if re.fullmatch(r"[a-z0-9.-]*[a-z][a-z0-9.-]*", name) else ""
    found = []
    for p in kept:
        found += [f"{COOKIE}=; Path={p}; Max-Age=0", f"={COOKIE}=; Path={p}; Max-Age=0"]
        found += [f"{COOKIE}=; Path={p}{domain}; Max-Age=0"] if domain else []
    return [("Set-Cookie", cookie) for cookie in found]


def entry(target: str) -> tuple[str, str] | None:
    """(token, where to go after) for an entry link `/p/<token>/...` (path mode); else None."""
    match = _ENTRY.fullmatch(target)
    if match is None:
        return None
    rest = match.group(2) or "/"
    return match.group(1), "/" + rest.lstrip("/") if rest.startswith("/") else "/" + rest
