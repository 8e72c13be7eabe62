"""Runners announce themselves in Redis; a heartbeat that stops means the runner is gone."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Literal, TypeVar, cast

import redis.asyncio as aioredis
from arq.constants import in_progress_key_prefix
from pydantic import BaseModel

from runner import contract
from runner.figures import FIGURES_TTL_SECONDS

T = TypeVar("T")

HEARTBEAT_SECONDS = 5.0
HEARTBEAT_TTL_SECONDS = 20
HOLD_SECONDS = 60
"""How long a runner's hold on a job it took lasts (arq's in-progress key) unless its
heartbeat renews it: a runner killed between taking a job and marking its run active leaves
the job to another runner after this, not after the job's whole timeout."""
TAKEN_SECONDS = 26 * 3600
"""How long a run stays marked as taken: longer than any job may last."""

_TAKE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
  return 1
end
return 0
"""


class ImageInfo(BaseModel):
    """An image a runner uses, as its Docker engine has it."""

    name: str
    role: Literal["agent", "egress"]
    id: str = ""
    """The image's id; empty when the engine does not have the image."""
    version: str = ""
    """The Trimo contract it was built for: its `dev.trimo.sandbox` label (agent images) or
    `dev.trimo.egress` label (the egress proxy)."""


class RunnerInfo(BaseModel):
    id: str
    host: str
    labels: list[str]
    capacity: int
    running: list[str]
    version: str
    pid: int
    started_at: datetime
    seen_at: datetime
    previews: int = 0
    """How many previews this runner may serve at once; 0 when it serves none."""
    images: list[ImageInfo] | None = None
    """The images it runs agents and its egress proxy from (None: a runner too old to say)."""
    preview_url: str = ""
    """Where its previews are reached (TRIMO_RUNNER_PREVIEW_URL), when it serves them."""


async def announce(client: aioredis.Redis, info: RunnerInfo) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.set(contract.runner_info(info.id), info.model_dump_json(), ex=HEARTBEAT_TTL_SECONDS)
    pipe.sadd(contract.RUNNERS, info.id)
    pipe.expire(contract.runner_figures(info.id), FIGURES_TTL_SECONDS)  # a day after last seen
    await pipe.execute()


async def withdraw(client: aioredis.Redis, runner_id: str) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.delete(contract.runner_info(runner_id))
    pipe.srem(contract.RUNNERS, runner_id)
    await pipe.execute()


async def online_runners(client: aioredis.Redis) -> list[RunnerInfo]:
    """Runners whose heartbeat has not expired (and the registry tidied of the rest)."""
    ids = sorted(
        m.decode() if isinstance(m, bytes) else m
        for m in await _awaited(client.smembers(contract.RUNNERS))
    )
    if not ids:
        return []
    found = await client.mget([contract.runner_info(runner_id) for runner_id in ids])
    gone = [runner_id for runner_id, raw in zip(ids, found, strict=True) if raw is None]
    if gone:
        await _awaited(client.srem(contract.RUNNERS, *gone))
    return [RunnerInfo.model_validate_json(raw) for raw in found if raw is not None]


async def runner(client: aioredis.Redis, runner_id: str) -> RunnerInfo | None:
    """The last heartbeat of `runner_id`, if it has not expired."""
    raw = await client.get(contract.runner_info(runner_id))
    return RunnerInfo.model_validate_json(raw) if raw is not None else None


async def live_namesake(
    client: aioredis.Redis,
    runner_id: str,
    host: str,
    pid: int,
    poll_seconds: float = 0.5,
    alive: Callable[[int], bool] | None = None,
) -> RunnerInfo | None:
    """Another live process that announces itself as `runner_id`, if there is one.

    A heartbeat from this host whose process is gone is a killed predecessor's. Any other
    heartbeat is watched until it either expires (its process is gone) or is renewed (it is
    alive), which takes at most `HEARTBEAT_TTL_SECONDS`."""
    first = await runner(client, runner_id)
    if first is None:
        return None
    if first.host == host and (first.pid == pid or not (alive or pid_alive)(first.pid)):
        return None
    deadline = time.monotonic() + HEARTBEAT_TTL_SECONDS + HEARTBEAT_SECONDS
    while time.monotonic() < deadline:
        await asyncio.sleep(poll_seconds)
        latest = await runner(client, runner_id)
        if latest is None:
            return None
        if latest.seen_at != first.seen_at:
            return latest
    return None


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def keep_alive(client: aioredis.Redis, runner_id: str) -> None:
    """Renew `runner_id`'s heartbeat as it is, if there is one."""
    await client.expire(contract.runner_info(runner_id), HEARTBEAT_TTL_SECONDS)


async def runners_with_label(client: aioredis.Redis, label: str) -> list[RunnerInfo]:
    return [r for r in await online_runners(client) if label in r.labels]


async def take(client: aioredis.Redis, run_id: str, runner_id: str) -> bool:
    """Mark the run active on `runner_id`, unless a runner took it before (a job picked up
    again after its runner's hold lapsed): whether this runner has it now."""
    active = json.dumps({"runner": runner_id})
    keys_and_args = (contract.run_taken(run_id), contract.ACTIVE_RUNS)
    taken = client.eval(_TAKE, 2, *keys_and_args, runner_id, str(TAKEN_SECONDS), run_id, active)
    return bool(await _awaited(taken))


async def renew_holds(client: aioredis.Redis, job_ids: Iterable[str]) -> None:
    """Keep this runner's hold on the jobs it has (HOLD_SECONDS more), made again where it
    lapsed (Redis was away longer, or came back from a file without it)."""
    async with client.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.set(in_progress_key_prefix + job_id, b"1", px=HOLD_SECONDS * 1000)
        await pipe.execute()


async def mark_done(client: aioredis.Redis, run_id: str) -> None:
    await _awaited(client.hdel(contract.ACTIVE_RUNS, run_id))


async def orphaned_runs(client: aioredis.Redis) -> list[tuple[str, str]]:
    """(run id, runner id) of active runs whose runner's heartbeat expired."""
    orphans = []
    for run_id, raw in (await _awaited(client.hgetall(contract.ACTIVE_RUNS))).items():
        runner_id = json.loads(raw)["runner"]
        if not await client.exists(contract.runner_info(runner_id)):
            rid = run_id.decode() if isinstance(run_id, bytes) else run_id
            orphans.append((rid, runner_id))
    return orphans


async def _awaited(value: Awaitable[T] | T) -> T:
    """redis-py types its async hash and set commands as `Awaitable[T] | T`."""
    return await cast(Awaitable[T], value)


def now() -> datetime:
    return datetime.now(UTC)


async def claim_orphan(client: aioredis.Redis, run_id: str) -> bool:
    """Only one runner reports an orphaned run: the one whose HDEL removed it."""
    return bool(await _awaited(client.hdel(contract.ACTIVE_RUNS, run_id)))
