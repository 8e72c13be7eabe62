"""A write budget per installation, shared by every App process through Redis.

GitHub's secondary rate limits allow one installation no more than 80
content-creating requests a minute and 500 an hour. Every write the reporter
makes takes one unit from its installation's budget first:

- a run's last word and replies to people (`FINAL`) and a run's first word
  (`FIRST`) may use the whole budget, so they always go first;
- live updates of running runs (`LIVE`) use only part of it, are merged (the
  latest state wins, see the reporter), and slow down as the hour fills up;
  each running run is refreshed at least once a minute while the hour allows.

The decisions (`allows`, `live_interval`, `due_live`) are pure functions of the
usage and the clock, tested without Redis; `WriteBudget` only counts and takes
writes, atomically, in one Lua script over a sorted set per installation.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

import redis.asyncio as aioredis

WINDOW_PREFIX: Final = "trimo:budget:writes:"
WRITERS: Final = "trimo:budget:writers"
"""Installations that wrote in the last hour (sorted set, score = last write), for /metrics."""
MINUTE: Final = 60.0
HOUR: Final = 3600.0


class Priority(IntEnum):
    FINAL = 0
    """A run's last word, a reply to a person: never held back by live updates."""
    FIRST = 1
    """A run's first word (🚀, in progress)."""
    LIVE = 2
    """A live update of a running run: merged, paced, dropped when the budget is tight."""


@dataclass(frozen=True)
class Limits:
    per_minute: int = 80
    per_hour: int = 500
    live_per_minute: int = 60
    """Live updates leave the rest of each minute to first and last words."""
    live_per_hour: int = 380
    """…and the rest of each hour: 120 first and last words, 40 to 60 runs' worth."""
    base_interval: float = 3.0
    """The fastest one run is updated live, however much budget is left."""
    floor_interval: float = 60.0
    """A running run with nothing new is still refreshed this often (its elapsed time)."""
    horizon: float = 30 * MINUTE
    """What is left of the hour's live budget is spread over this long."""

    def caps(self, priority: Priority) -> tuple[int, int]:
        """The most writes a minute and an hour that `priority` may bring the usage to."""
        if priority is Priority.LIVE:
            return self.live_per_minute, self.live_per_hour
        return self.per_minute, self.per_hour


@dataclass(frozen=True)
class Usage:
    """Writes an installation made in the last minute and the last hour."""

    minute: int
    hour: int


@dataclass(frozen=True)
class LiveRun:
    """A running run as the live-update pacing sees it."""

    run_id: str
    changed: bool
    """Something new happened since its last update."""
    last_sent: float
    """When GitHub last heard about it (clock seconds)."""


def allows(priority: Priority, usage: Usage, limits: Limits) -> bool:
    """Whether one more write of `priority` fits in the budget."""
    minute_cap, hour_cap = limits.caps(priority)
    return usage.minute < minute_cap and usage.hour < hour_cap


def live_rate(usage: Usage, limits: Limits) -> float:
    """Live writes a minute the installation can afford now (all its runs together)."""
    hour_left = max(0, limits.live_per_hour - usage.hour)
    return min(float(limits.live_per_minute), hour_left / (limits.horizon / MINUTE))


def live_interval(running: int, usage: Usage, limits: Limits) -> float:
    """Seconds between two live updates of one run, `running` runs sharing the budget."""
    rate = live_rate(usage, limits)
    if rate <= 0:
        return float("inf")
    return max(limits.base_interval, max(1, running) * MINUTE / rate)


def due_live(runs: Sequence[LiveRun], usage: Usage, limits: Limits, now: float) -> list[str]:
    """The runs whose live update should go out now, the longest waiting first.

    A run is due when its interval has passed and it has news, or when the floor
    interval has passed without any; no more are chosen than the budget allows.
    """
    interval = live_interval(len(runs), usage, limits)
    due = [
        run
        for run in runs
        if now - run.last_sent >= interval
        and (run.changed or now - run.last_sent >= limits.floor_interval)
    ]
    due.sort(key=lambda run: run.last_sent)
    minute_cap, hour_cap = limits.caps(Priority.LIVE)
    room = max(0, min(minute_cap - usage.minute, hour_cap - usage.hour))
    return [run.run_id for run in due[:room]]


# --- Redis ---------------------------------------------------------------------------------

# KEYS[1]: the installation's writes (sorted set, score = time); KEYS[2]: `WRITERS`
# ARGV: now, minute cap, hour cap, member, take (1) or only count (0), installation id
_TAKE: Final = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 3600)
local hour = redis.call('ZCARD', KEYS[1])
local minute = redis.call('ZCOUNT', KEYS[1], '(' .. (now - 60), '+inf')
if ARGV[5] == '0' or minute >= tonumber(ARGV[2]) or hour >= tonumber(ARGV[3]) then
  return {0, minute, hour}
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('EXPIRE', KEYS[1], 3660)
redis.call('ZADD', KEYS[2], now, ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 3600)
return {1, minute + 1, hour + 1}
"""


class WriteBudget:
    """The installations' write budgets in Redis, shared by every App process."""

    def __init__(
        self,
        redis: aioredis.Redis,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limits = limits or Limits()
        self.clock = clock
        self._script = redis.register_script(_TAKE)

    async def _call(self, installation_id: int, priority: Priority, take: bool) -> list[int]:
        minute_cap, hour_cap = self.limits.caps(priority)
        reply = await self._script(
            keys=[f"{WINDOW_PREFIX}{installation_id}", WRITERS],
            args=[self.clock(), minute_cap, hour_cap, uuid.uuid4().hex, int(take), installation_id],
        )
        return [int(value) for value in reply]

    async def usage(self, installation_id: int) -> Usage:
        _taken, minute, hour = await self._call(installation_id, Priority.FINAL, take=False)
        return Usage(minute=minute, hour=hour)

    async def take(self, installation_id: int, priority: Priority) -> bool:
        """Take one write of `priority` if it fits; whether it did."""
        taken, _minute, _hour = await self._call(installation_id, priority, take=True)
        return bool(taken)
