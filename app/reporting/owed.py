"""What a run owes each of its channels: one lane per run and channel, retried on its own.

A run event that needs a comment, a reaction or a pull request marks that channel owed
(`trimo:report:owed`, a sorted set of `<run>|<channel>` by when it is due, in epoch ms).
Whoever takes a lane leases it (moves it into the future); when the lane's work is done
the entry goes, unless the run owed the channel again meanwhile (its score changed), in
which case it stays due. A lane whose process died comes due again when its lease ends.
"""

from __future__ import annotations

import time
from typing import Final

import redis.asyncio as aioredis

from app.reporting.channels.steps import Channel
from runner.redisio import settle

OWED: Final = "trimo:report:owed"
LANE_TRIES: Final = "trimo:report:lane-tries"
"""`<run>|<channel>` → failed tries so far."""
LEASE_SECONDS: Final = 120.0
"""Longer than a lane's work can take (a few calls of at most 10 s each)."""
CHANNELS: Final[tuple[Channel, ...]] = ("comment", "pull", "reactions")
"""The channels with lanes of their own; the check run goes with the run's events."""

_SETTLE: Final = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  if ARGV[3] == '' then
    redis.call('ZREM', KEYS[1], ARGV[1])
  else
    redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  end
  return 1
end
if score and tonumber(score) > tonumber(ARGV[4]) then
  return 2
end
return 0
"""
SETTLED: Final = 1
OWED_ANEW: Final = 0
TAKEN: Final = 2


def lane(run_id: str, channel: Channel) -> str:
    return f"{run_id}|{channel}"


def parse(member: str) -> tuple[str, Channel] | None:
    """A lane's run and channel; None for anything else."""
    run_id, _, channel = member.rpartition("|")
    for known in CHANNELS:
        if channel == known and run_id:
            return run_id, known
    return None


def _ms(delay: float = 0.0) -> int:
    return int((time.time() + delay) * 1000)


async def owe(redis: aioredis.Redis, run_id: str, *channels: Channel) -> list[str]:
    """Mark `channels` of `run_id` due now; their lanes."""
    members = [lane(run_id, channel) for channel in channels]
    if members:
        await redis.zadd(OWED, dict.fromkeys(members, _ms()))
    return members


async def due(redis: aioredis.Redis, count: int = 100) -> list[str]:
    """Lanes due now, the longest waiting first."""
    found = await redis.zrangebyscore(OWED, "-inf", _ms(), start=0, num=count)
    return [m.decode() if isinstance(m, bytes) else str(m) for m in found]


async def lease(redis: aioredis.Redis, member: str) -> int | None:
    """Take the lane until its lease ends: the lease, or None when it is owed no more."""
    until = _ms(LEASE_SECONDS)
    changed = await redis.zadd(OWED, {member: until}, xx=True, ch=True)
    return until if changed else None


async def release(redis: aioredis.Redis, member: str, leased: int, again_in: float | None) -> int:
    """Done with the lane: gone (`again_in` None) or due again in `again_in` seconds
    (SETTLED), unless the run owed it anew meanwhile (OWED_ANEW: it stays due as that says)
    or another process leased it since (TAKEN: that one has it now)."""
    again = "" if again_in is None else str(_ms(again_in))
    return int(await settle(redis.eval(_SETTLE, 1, OWED, member, str(leased), again, str(_ms()))))


async def failed_try(redis: aioredis.Redis, member: str) -> int:
    return int(await settle(redis.hincrby(LANE_TRIES, member, 1)))


async def forget_tries(redis: aioredis.Redis, member: str) -> None:
    await settle(redis.hdel(LANE_TRIES, member))
