"""How the stand-in misbehaves on purpose: drift in its answers, chaos in its errors.

Both are seeded, so a failing test can be replayed. Turn them on through the state:

    gh.state.drift = Drift(seed=1, remove=0.2, null=0.2, add=0.3)
    gh.state.chaos = Chaos(seed=1, rates={"5xx": 0.1, "404": 0.02, "slow": 0.05})
    gh.state.chaos = Chaos(seed=1, endpoints={"create_pull": {"422": 0.5}})  # one endpoint
    gh.state.delay = 0.2  # seconds before every API answer, as github.com takes
    gh.state.rounds = Rounds()  # every request waits until the test lets its round go

Endpoints are named by their handler in `endpoints.py` (`create_pull`, `update_comment`...).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.fakegithub.replies import DOCS, Reply

# What each kind of injected error says, in GitHub's words.
CHAOS_KINDS = ("404", "403", "422", "5xx", "slow")
SERVER_ERRORS: tuple[tuple[int, str], ...] = (
    (500, "Server Error"),
    (502, "Server Error"),
    (503, "Service Unavailable"),
    (
        504,
        "We couldn't respond to your request in time. Sorry about that. Please try"
        " resubmitting your request and contact us if the problem persists.",
    ),
)


def error_reply(status: int, message: str, **extra: Any) -> Reply:
    return Reply(
        status, {"message": message, "documentation_url": DOCS, "status": str(status), **extra}
    )


@dataclass
class Chaos:
    """Errors and slow answers at set rates, drawn from one seeded generator.

    `rates` maps a kind ("404", "403", "422", "5xx", "slow") to the share of requests
    that meet it; `endpoints` replaces the global rates for the endpoints it names
    (`{}` exempts one). A slow answer waits `slow_seconds`, then answers normally.
    """

    seed: int = 0
    rates: Mapping[str, float] = field(default_factory=dict)
    endpoints: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    slow_seconds: float = 11.0

    def __post_init__(self) -> None:
        for rates in (self.rates, *self.endpoints.values()):
            unknown = set(rates) - set(CHAOS_KINDS)
            if unknown:
                raise ValueError(f"unknown chaos kinds {sorted(unknown)}; use {CHAOS_KINDS}")
            if sum(rates.values()) > 1:
                raise ValueError(f"chaos rates add up to more than 1: {dict(rates)}")
        self._rng = random.Random(self.seed)

    def draw(self, endpoint: str) -> str | None:
        """The kind of trouble the next request to `endpoint` meets, or None."""
        rates = self.endpoints.get(endpoint, self.rates)
        roll = self._rng.random()
        total = 0.0
        for kind in CHAOS_KINDS:
            total += rates.get(kind, 0.0)
            if roll < total:
                return kind
        return None

    def reply(self, kind: str) -> Reply:
        """GitHub's answer for an injected error of `kind` (not "slow")."""
        if kind == "404":
            return error_reply(404, "Not Found")
        if kind == "403":
            return error_reply(403, "Resource not accessible by integration")
        if kind == "422":
            return error_reply(
                422,
                "Validation Failed",
                errors=[{"resource": "Issue", "code": "unprocessable", "field": "data"}],
            )
        status, message = self._rng.choice(SERVER_ERRORS)
        return error_reply(status, message)


@dataclass
class Drift:
    """Answers that drift from the documentation: fields removed, nulled, or unknown ones added.

    Each field outside the paths Trimo reads (`endpoints.NEEDS`, plus `keep` here) is
    removed with probability `remove`, else nulled with probability `null`; each object
    gains an unknown field with probability `add`. Paths are dotted, `[]` for list items:
    `head.repo.full_name`, `[].number`.
    """

    seed: int = 0
    remove: float = 0.2
    null: float = 0.2
    add: float = 0.2
    keep: Mapping[str, Collection[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self.changes: list[tuple[str, str]] = []  # (path, "removed" | "nulled" | "added")

    def apply(self, data: Any, needs: Collection[str], endpoint: str = "") -> Any:
        kept = frozenset(needs) | frozenset(self.keep.get(endpoint, ()))
        return self._walk(data, kept, "")

    def _walk(self, data: Any, kept: frozenset[str], path: str) -> Any:
        if isinstance(data, list):
            return [self._walk(item, kept, f"{path}[]") for item in data]
        if not isinstance(data, dict):
            return data
        out: dict[str, Any] = {}
        for key, value in data.items():
            here = f"{path}.{key}" if path else key
            if here in kept:
                out[key] = value
                continue
            if not any(k.startswith(here + ".") or k.startswith(here + "[]") for k in kept):
                roll = self._rng.random()
                if roll < self.remove:
                    self.changes.append((here, "removed"))
                    continue
                if roll < self.remove + self.null:
                    self.changes.append((here, "nulled"))
                    out[key] = None
                    continue
            out[key] = self._walk(value, kept, here)
        if self._rng.random() < self.add:
            name = f"{self._rng.choice(UNKNOWN_NAMES)}_{self._rng.randrange(1000)}"
            out[name] = self._rng.choice(UNKNOWN_VALUES)
            self.changes.append((f"{path}.{name}" if path else name, "added"))
        return out


UNKNOWN_NAMES = ("pinned_comment", "sub_issues_summary", "issue_dependencies", "rollup", "meta")
UNKNOWN_VALUES: tuple[Any, ...] = (
    None,
    "",
    0,
    True,
    [],
    {"total": 3, "completed": 1},
    [{"id": 1, "type": None}],
)


class Rounds:
    """Lockstep: every API request waits until the test lets its round go, so a test counts
    GitHub round trips (what waits for what) instead of timing them.

    The stand-in holds each request as it comes (`hold`); `take(n)` waits for `n` held
    requests, lets them all go and returns them as "METHOD path", in the order they came.
    A request that depends on an answer cannot come before its round is let go.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: list[str] = []
        self._gone = 0
        """Rounds let go so far."""
        self._open = False

    async def hold(self, call: str) -> None:
        """The stand-in's side: wait until the round `call` came in is let go."""
        with self._lock:
            self._held.append(call)
            mine = self._gone
        while True:
            with self._lock:
                if self._open or self._gone > mine:
                    return
            await asyncio.sleep(0.002)

    def held(self) -> list[str]:
        with self._lock:
            return list(self._held)

    async def take(self, count: int, timeout: float = 60.0) -> list[str]:
        """The test's side: wait for `count` held requests, then let them go."""
        deadline = time.monotonic() + timeout
        while len(self.held()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"waited for {count} requests; held: {self.held()}")
            await asyncio.sleep(0.005)
        with self._lock:
            calls, self._held = self._held, []
            self._gone += 1
        return calls

    def open(self) -> None:
        """Let everything go, now and from now on."""
        with self._lock:
            self._open = True
