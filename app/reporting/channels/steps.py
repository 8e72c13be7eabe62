"""What every channel shares: a run's GitHub writes, each within the write budget and 10 s,
each at most once, and what a failure means for the run being reported."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Literal, TypeVar

import redis.asyncio as aioredis
from githubkit.exception import RequestError, RequestFailed

from app.github.client import RepoAPI, failure_detail, is_transient
from app.redisio import hget, hset
from app.reporting.budget import Priority, WriteBudget
from app.reporting.runview import RunView
from app.runs.pipelines import Pipeline, PipelineRun

log = logging.getLogger("trimo.reporter")

STEPS_PREFIX: Final = "trimo:report:steps:"
"""Per run: the GitHub steps already done (so a retry repeats none), and its flags."""
VIEW_TTL_SECONDS: Final = 14 * 24 * 3600
CALL_TIMEOUT_SECONDS: Final = 10.0
LATE_WRITE_SECONDS: Final = 30.0
"""How long a write GitHub did not answer may still land (and undo a later one)."""

GONE_FLAG: Final = "flag:gone"
"""The run's GitHub output given up as a whole (its installation or repository gone)."""

Channel = Literal["check", "comment", "pull", "reactions"]
Failure = Literal["transient", "gone", "bug"]


def unsure_flag(channel: Channel) -> str:
    """When (epoch seconds) a write of the channel last went unanswered: it may land later."""
    return f"flag:unsure:{channel}"


def off_flag(channel: Channel) -> str:
    """Why the channel was given up for the run (GitHub said its object or thread is gone)."""
    return f"flag:off:{channel}"


T = TypeVar("T")


class OverBudget(Exception):
    """The installation's write budget has no room now: the run waits, no try is counted."""


class LateWrites(Exception):
    """A write GitHub did not answer may still land: the run's last word waits it out, so
    that no stale "running" lands after it. No try is counted."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"a late write may land within {seconds:.0f}s")
        self.seconds = seconds


class Unsettled(Exception):
    """GitHub said a report object is gone, yet it is there: try again later."""


@dataclass
class Target:
    """The run a channel writes about, and where."""

    api: RepoAPI
    pipeline: Pipeline
    run: PipelineRun
    view: RunView


def classify(exc: BaseException) -> Failure:
    """What a failure means for the run being reported."""
    if isinstance(exc, TimeoutError | OSError | aioredis.RedisError | Unsettled):
        return "transient"
    if isinstance(exc, RequestFailed) and exc.response.status_code == 401:
        return "gone"  # the installation was removed: its tokens stop working
    if is_transient(exc):
        return "transient"
    if isinstance(exc, RequestFailed):
        return "gone"  # 403 not accessible / suspended, 404 or 301 deleted or moved, 410, 422
    return "bug"


def describe(exc: BaseException) -> str:
    if isinstance(exc, RequestFailed):
        return failure_detail(exc)
    if isinstance(exc, TimeoutError):
        return f"no answer within {CALL_TIMEOUT_SECONDS:.0f}s"
    return f"{type(exc).__name__}: {exc}"


async def timed(call: Awaitable[T]) -> T:
    """`call`, or TimeoutError when GitHub takes longer than `CALL_TIMEOUT_SECONDS`."""
    return await asyncio.wait_for(call, CALL_TIMEOUT_SECONDS)


async def all_of(*steps: Awaitable[None]) -> None:
    """Run independent steps at once; all finish, then the first failure is raised."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


class Steps:
    """A run's GitHub writes, within its installation's write budget."""

    def __init__(self, redis: aioredis.Redis, budget: WriteBudget) -> None:
        self.redis = redis
        self.budget = budget

    async def spend(self, pipeline: Pipeline, priority: Priority) -> None:
        if not await self.budget.take(pipeline.installation_id, priority):
            raise OverBudget(f"installation {pipeline.installation_id}")

    async def once(
        self,
        pipeline: Pipeline,
        run: PipelineRun,
        channel: Channel,
        step: str,
        priority: Priority,
        make: Callable[[], Awaitable[object]],
    ) -> None:
        """The write `make` unless done for this run already, within budget and 10 s."""
        key = STEPS_PREFIX + run.run_id
        if await hget(self.redis, key, step) is not None:
            return
        await self.spend(pipeline, priority)
        await self.unsure_if_unanswered(run.run_id, make(), channel)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, step, "1")
        pipe.expire(key, VIEW_TTL_SECONDS)
        await pipe.execute()

    async def flag(self, run_id: str, name: str) -> str | None:
        return await hget(self.redis, STEPS_PREFIX + run_id, name)

    async def set_flag(self, run_id: str, name: str, value: str) -> None:
        await hset(self.redis, STEPS_PREFIX + run_id, {name: value})

    # --- writes that may land late --------------------------------------------------------

    async def unsure_if_unanswered(self, run_id: str, write: Awaitable[T], *channels: Channel) -> T:
        """`write` within 10 s; if GitHub did not answer, remember that it may still land
        (on each of `channels`)."""
        try:
            return await timed(write)
        except RequestFailed:
            raise  # GitHub answered: it did not do it, and will not later
        except (TimeoutError, RequestError):
            now = str(time.time())
            await hset(self.redis, STEPS_PREFIX + run_id, {unsure_flag(c): now for c in channels})
            raise

    async def wait_out_late_writes(self, run_id: str, channel: Channel) -> None:
        """`LateWrites` while a write on `channel` that went unanswered may still land."""
        raw = await self.flag(run_id, unsure_flag(channel))
        left = float(raw or 0) + LATE_WRITE_SECONDS - time.time()
        if left > 0:
            log.info(
                "run %s: its last %s waits %.0fs for a late write to land", run_id, channel, left
            )
            raise LateWrites(left)
