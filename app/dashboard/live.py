"""Live updates, one Redis reader per stream shared by every browser that listens.

- `BoardFeed`: one pub/sub subscription to the pipelines' change channel per process.
  Changes are gathered for `BATCH_SECONDS`, their summaries loaded in one round trip, and
  each update handed to every board listener (which keeps what its viewer may see). Every
  `STEPS_SECONDS` it also looks at the views of the runs online runners hold, and hands out
  the pipelines whose running run's step, tokens or cost moved (no change is published
  for those).
- `RunFeeds`: per run, one blocking `XREAD` on its event stream while anyone watches it.
  A listener reads what it missed (`XRANGE` after its `Last-Event-ID`) and then what the
  shared reader hands it, skipping what it already had.

A listener that falls far behind is told to reload rather than let its queue grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar, cast

import redis.asyncio as aioredis
from arq.connections import ArqRedis
from redis.exceptions import RedisError

from app import redisio
from app.dashboard.board import Usage, runs_of
from app.dashboard.data import StreamEntry, pulls_of, stored_events, stream_entries, usage_of_runs
from app.runs.pipelines import CHANGES, Pipelines
from app.runs.summary import PipelineSummary
from runner import contract
from runner.registry import online_runners

log = logging.getLogger("trimo.dashboard")

BATCH_SECONDS: Final = 0.1
LISTENER_QUEUE: Final = 2000
XREAD_BLOCK_MS: Final = 1000
RETRY_SECONDS: Final = 1.0
STEPS_SECONDS: Final = 2.0

T = TypeVar("T")
RedisGetter = Callable[[], Awaitable[ArqRedis]]


class Overflow(Exception):
    """The listener fell too far behind: it should start again from what is stored."""


class Listener(Generic[T]):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[T] = asyncio.Queue(LISTENER_QUEUE)
        self.overflowed = False

    def put(self, item: T) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True

    async def get(self) -> T:
        if self.overflowed:
            raise Overflow
        item = await self.queue.get()
        if self.overflowed:
            raise Overflow
        return item


@dataclass(frozen=True)
class PipelineUpdate:
    summary: PipelineSummary
    pull: int | None
    pull_title: str
    usage: Mapping[str, Usage]
    """What its runs' views say, by run id."""


class BoardFeed:
    """Pipeline changes, fanned out from one subscription."""

    def __init__(self, redis: RedisGetter) -> None:
        self._redis = redis
        self._listeners: set[Listener[PipelineUpdate]] = set()
        self._task: asyncio.Task[None] | None = None
        self._running: dict[str, Usage] = {}
        """The running runs' usage last looked at."""

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[Listener[PipelineUpdate]]:
        listener: Listener[PipelineUpdate] = Listener()
        self._listeners.add(listener)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._follow())
        try:
            yield listener
        finally:
            self._listeners.discard(listener)

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        while self._listeners:
            try:
                await self._subscribed()
            except (RedisError, OSError) as exc:
                log.warning("board feed: Redis trouble (%s); again in %.0fs", exc, RETRY_SECONDS)
                await asyncio.sleep(RETRY_SECONDS)
            except Exception:  # a bug here must not leave every board without news
                log.exception("board feed failed; again in %.0fs", RETRY_SECONDS)
                await asyncio.sleep(RETRY_SECONDS)

    async def _subscribed(self) -> None:
        redis = await self._redis()
        pubsub = redis.pubsub()
        await pubsub.subscribe(CHANGES)
        clock = asyncio.get_running_loop().time
        looked = clock()
        try:
            while self._listeners:
                if clock() - looked >= STEPS_SECONDS:
                    looked = clock()
                    await self._look_at_running(redis)
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None:
                    continue
                changed = {redisio.as_text(message["data"]) or ""}
                deadline = asyncio.get_running_loop().time() + BATCH_SECONDS
                while (left := deadline - asyncio.get_running_loop().time()) > 0:
                    more = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
                    if more is not None:
                        changed.add(redisio.as_text(more["data"]) or "")
                await self._hand_out(redis, sorted(changed))
        finally:
            with contextlib.suppress(RedisError, OSError):
                await cast(Callable[[], Awaitable[None]], pubsub.aclose)()

    async def _look_at_running(self, redis: ArqRedis) -> None:
        """Hand out the pipelines whose running run's view moved since the last look."""
        run_ids = sorted({r for runner in await online_runners(redis) for r in runner.running})
        now = await usage_of_runs(redis, run_ids)
        before, self._running = self._running, now
        moved = [run_id for run_id, usage in now.items() if before.get(run_id) != usage]
        store = Pipelines(redis)
        ids = {pid for run_id in moved if (pid := await store.pipeline_of_run(run_id))}
        if ids:
            await self._hand_out(redis, sorted(ids))

    async def _hand_out(self, redis: ArqRedis, ids: list[str]) -> None:
        summaries = await Pipelines(redis).summaries(ids)
        pulls = await pulls_of(redis, summaries)
        usage = await usage_of_runs(redis, [r for s in summaries for r in runs_of(s)])
        for summary in summaries:
            update = PipelineUpdate(
                summary, pulls.numbers.get(summary.id), pulls.titles.get(summary.id, ""), usage
            )
            for listener in list(self._listeners):
                listener.put(update)


def entry_key(entry_id: str) -> tuple[int, int]:
    millis, _, seq = entry_id.partition("-")
    try:
        return int(millis), int(seq or 0)
    except ValueError:
        return 0, 0


@dataclass
class _RunReader:
    listeners: set[Listener[StreamEntry]] = field(default_factory=set)
    task: asyncio.Task[None] | None = None


class RunFeeds:
    """Each watched run's events, read once and fanned out."""

    def __init__(self, redis: RedisGetter) -> None:
        self._redis = redis
        self._readers: dict[str, _RunReader] = {}

    async def follow(
        self, run_id: str, after: str | None, keepalive: float
    ) -> AsyncGenerator[StreamEntry | None]:
        """The run's events after stream id `after` (None: from its first), then live ones;
        None after `keepalive` seconds without one."""
        reader = self._readers.setdefault(run_id, _RunReader())
        listener: Listener[StreamEntry] = Listener()
        redis = await self._redis()
        start = await self._last_id(redis, run_id)
        reader.listeners.add(listener)
        if reader.task is None or reader.task.done():
            reader.task = asyncio.create_task(self._read(run_id, reader, start))
        try:
            last = entry_key(after) if after else (0, 0)
            async for entry in stored_events(redis, run_id, after):
                last = entry_key(entry[0])
                yield entry
            while True:
                try:
                    entry = await asyncio.wait_for(listener.get(), keepalive)
                except TimeoutError:
                    yield None
                    continue
                if entry_key(entry[0]) > last:
                    last = entry_key(entry[0])
                    yield entry
        finally:
            reader.listeners.discard(listener)

    def watching(self, run_id: str) -> int:
        reader = self._readers.get(run_id)
        return len(reader.listeners) if reader else 0

    async def close(self) -> None:
        for reader in list(self._readers.values()):
            if reader.task is not None:
                reader.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader.task

    @staticmethod
    async def _last_id(redis: aioredis.Redis, run_id: str) -> str:
        newest = await redis.xrevrange(contract.run_events(run_id), "+", "-", 1)
        return (redisio.as_text(newest[0][0]) or "0-0") if newest else "0-0"

    async def _read(self, run_id: str, reader: _RunReader, start: str) -> None:
        cursor = start
        try:
            while reader.listeners:
                try:
                    redis = await self._redis()
                    answer = await redis.xread(
                        {contract.run_events(run_id): cursor}, count=200, block=XREAD_BLOCK_MS
                    )
                except (RedisError, OSError) as exc:
                    log.warning("run %s feed: Redis trouble (%s)", run_id, exc)
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                except Exception:  # a bug here must not leave the run's pages without news
                    log.exception("run %s feed failed", run_id)
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                for _stream, raw in answer or []:
                    for entry in stream_entries(raw):
                        cursor = entry[0]
                        for listener in list(reader.listeners):
                            listener.put(entry)
        finally:
            if self._readers.get(run_id) is reader and not reader.listeners:
                del self._readers[run_id]
