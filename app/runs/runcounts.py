"""Runs by state and by outcome, counted in Redis as pipelines change, for `/metrics`.

Counting at scrape time would mean reading every pipeline ever made; instead each save of a
pipeline passes its runs' states to one Lua script that keeps a small hash of live runs
(waiting, queued, running) and two tiny hashes of counts, so a scrape reads a few fields
and every App process agrees.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import redis.asyncio as aioredis

from app.redisio import hgetall

LIVE_RUNS: Final = "trimo:metrics:runs:live"
"""run id -> state, for runs not finished."""
RUNS_BY_STATE: Final = "trimo:metrics:runs:by-state"
RUNS_FINISHED: Final = "trimo:metrics:runs:finished"
"""outcome -> runs that ended so (a counter)."""
FINISHED_PREFIX: Final = "finished:"

# KEYS: LIVE_RUNS, RUNS_BY_STATE, RUNS_FINISHED; ARGV: run id, state, run id, state, …
_TRACK: Final = """
for i = 1, #ARGV, 2 do
  local run, state = ARGV[i], ARGV[i + 1]
  local old = redis.call('HGET', KEYS[1], run)
  if string.sub(state, 1, 9) == 'finished:' then
    if old then
      redis.call('HDEL', KEYS[1], run)
      redis.call('HINCRBY', KEYS[2], old, -1)
      redis.call('HINCRBY', KEYS[3], string.sub(state, 10), 1)
    end
  elseif old ~= state then
    if old then redis.call('HINCRBY', KEYS[2], old, -1) end
    redis.call('HSET', KEYS[1], run, state)
    redis.call('HINCRBY', KEYS[2], state, 1)
  end
end
return 0
"""


class RunCounts:
    """The counts, kept by the pipeline store and read by `/metrics`."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._track = redis.register_script(_TRACK)

    async def track(self, states: Iterable[tuple[str, str, str | None]]) -> None:
        """Record (run id, status, outcome) of a pipeline's runs; a run is counted as
        finished once, when it leaves the live runs."""
        args: list[str] = []
        for run_id, status, outcome in states:
            state = f"{FINISHED_PREFIX}{outcome or 'error'}" if status == "finished" else status
            args += (run_id, state)
        if args:
            await self._track(keys=[LIVE_RUNS, RUNS_BY_STATE, RUNS_FINISHED], args=args)

    async def read(self) -> tuple[dict[str, int], dict[str, int]]:
        """(live runs by state, finished runs by outcome)."""
        return (
            _counts(await hgetall(self.redis, RUNS_BY_STATE)),
            _counts(await hgetall(self.redis, RUNS_FINISHED)),
        )


def _counts(raw: dict[str, str]) -> dict[str, int]:
    return {key: int(value) for key, value in raw.items() if value.lstrip("-").isdigit()}
