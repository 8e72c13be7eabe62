"""Which preview a token opens: the proxy's table, kept by the preview manager.

Tokens are 256 random bits in lower-case base32 (52 characters: one DNS label, so a token
can be a host name in host mode) and are compared in constant time; a token past its
expiry opens nothing.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def new_token() -> str:
    return base64.b32encode(secrets.token_bytes(32)).decode().rstrip("=").lower()


@dataclass
class Route:
    """Where one preview's requests go, and when it was last asked for anything."""

    preview_id: str
    token: str
    address: str
    port: int
    expires_at: float
    last_request: float
    closers: set[Callable[[], None]] = field(default_factory=set)
    """How to cut the connections open to it now (called when it stops)."""


class Routes:
    """token → `Route`, with the clock the manager and the proxy share."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._routes: dict[str, Route] = {}

    def add(self, route: Route) -> None:
        self._routes[route.preview_id] = route

    def remove(self, preview_id: str) -> Route | None:
        route = self._routes.pop(preview_id, None)
        if route is not None:
            for close in list(route.closers):
                close()
        return route

    def get(self, preview_id: str) -> Route | None:
        return self._routes.get(preview_id)

    def find(self, token: str) -> Route | None:
        """The live route of `token`; every route is compared, each in constant time."""
        found = None
        given = token.encode()
        now = self.clock()
        for route in list(self._routes.values()):
            if hmac.compare_digest(given, route.token.encode()) and route.expires_at > now:
                found = route
        return found

    def touch(self, route: Route) -> None:
        route.last_request = self.clock()
