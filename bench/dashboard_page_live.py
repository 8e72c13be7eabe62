"""A pipeline page's live update delay (target: the change on the page within 1 s, p95).

Starts the App (uvicorn subprocess) on a private redis-server with `--pipelines` pipelines,
20 of them running, and opens `--pages` pipeline pages' event streams
(`/events/pipelines/<id>`) as signed-in admins, spread over the 20. For `--seconds`, one of
the 20 changes every `--interval` seconds (a run marked running again, as the reporter's
bookkeeping does). Each page measures, per change, the time from the write to its `changed`
event, and to the page fetched again (what dashboard.js swaps its parts in from).

Baseline beside it: a bare Redis client subscribed to the pipelines' change channel (what
hearing of a change costs with no App in between).

    PYTHONPATH=. .venv/bin/python bench/dashboard_page_live.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from datetime import UTC, datetime

import httpx
import redis.asyncio as aioredis
from arq.connections import create_pool
from pydantic import SecretStr

from app.dashboard.auth import SESSION_COOKIE
from app.ops.server import private_redis
from app.runs.pipelines import CHANGES, Pipelines
from app.settings import AppSettings
from bench.dashboard_render import (
    ADMIN,
    latency_row,
    make_pipeline,
    percentile,
    signed_cookie,
    start_app,
)
from bench.scratch import scratch
from runner.redisurl import redis_settings

LIVE = 20


class Delays:
    def __init__(self) -> None:
        self.changed_at: dict[str, float] = {}
        self.event: list[float] = []
        self.page: list[float] = []
        self.baseline: list[float] = []
        self.errors: dict[str, int] = {}

    def since(self, pipeline_id: str) -> float | None:
        at = self.changed_at.get(pipeline_id)
        return time.time() - at if at is not None else None

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def page(
    client: httpx.AsyncClient, pipeline_id: str, stop: asyncio.Event, seen: Delays
) -> None:
    """One open pipeline page: on each `changed`, the page fetched again."""
    try:
        path = f"/events/pipelines/{pipeline_id}"
        async with client.stream("GET", path, timeout=None) as response:
            if response.status_code != 200:
                seen.error(f"HTTP {response.status_code}")
                return
            event = ""
            async for line in response.aiter_lines():
                if stop.is_set():
                    return
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "changed":
                    took = seen.since(pipeline_id)
                    fresh = await client.get(f"/pipelines/{pipeline_id}")
                    if took is None or fresh.status_code != 200:
                        continue
                    seen.event.append(took)
                    seen.page.append(seen.since(pipeline_id) or took)
    except httpx.HTTPError as exc:
        if not stop.is_set():
            seen.error(type(exc).__name__)


async def baseline(redis: aioredis.Redis, stop: asyncio.Event, seen: Delays) -> None:
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANGES)
    while not stop.is_set():
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message is not None and (took := seen.since(message["data"].decode())) is not None:
            seen.baseline.append(took)
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def change(
    redis: aioredis.Redis, live: list[tuple[str, str]], interval: float, stop: asyncio.Event,
    seen: Delays,
) -> None:  # fmt: skip
    store = Pipelines(redis)  # type: ignore[arg-type]
    tick = 0
    while not stop.is_set():
        began = time.monotonic()
        pipeline_id, run_id = live[tick % len(live)]
        seen.changed_at[pipeline_id] = time.time()
        await store.mark_running(run_id, runner=f"runner-{tick}", started_at=datetime.now(UTC))
        tick += 1
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - began)))


async def main(count: int, pages: int, seconds: float, interval: float) -> None:
    with scratch() as root, private_redis(root / "redis") as redis_url:
        pool = await create_pool(redis_settings(redis_url))
        store = Pipelines(pool)
        live: list[tuple[str, str]] = []
        now = datetime.now(UTC)
        for index in range(count):
            seed = make_pipeline(index, 3, now)
            runs, seed.runs = seed.runs, []
            for run in runs:
                await store.add_run(seed, run)
            if index < LIVE:
                going = runs[-1].model_copy(
                    update={"run_id": f"{seed.id}-live", "status": "waiting", "outcome": None}
                )
                await store.add_run(seed, going)
                await store.mark_running(going.run_id, runner="runner-1")
                live.append((seed.id, going.run_id))
        secret = "bench-session-secret"
        settings = AppSettings(
            _env_file=None, redis_url=redis_url, session_secret=SecretStr(secret), admins=ADMIN
        )  # type: ignore[call-arg]
        cookie = await signed_cookie(settings)
        server, base_url = start_app(redis_url, secret)
        seen = Delays()
        stop = asyncio.Event()
        limits = httpx.Limits(max_connections=2 * pages + 10)
        try:
            async with httpx.AsyncClient(
                base_url=base_url, cookies={SESSION_COOKIE: cookie}, limits=limits, timeout=30
            ) as client:
                streams = [
                    asyncio.create_task(page(client, live[i % LIVE][0], stop, seen))
                    for i in range(pages)
                ]
                bare = aioredis.Redis.from_url(redis_url)
                listener = asyncio.create_task(baseline(bare, stop, seen))
                await asyncio.sleep(2.0)  # every stream connected
                writer = aioredis.Redis.from_url(redis_url)
                changer = asyncio.create_task(change(writer, live, interval, stop, seen))
                await asyncio.sleep(seconds)
                stop.set()
                await changer
                await asyncio.sleep(1.5)  # the last changes arrive
                for task in [*streams, listener]:
                    task.cancel()
                await asyncio.gather(*streams, listener, return_exceptions=True)
                await writer.aclose()
                await bare.aclose()
        finally:
            server.terminate()
            server.wait(10)
            await pool.aclose()

    def row(name: str, values: list[float]) -> str:
        return latency_row(name, values, 44)

    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"{pages} pipeline pages open on {LIVE} of {count} pipelines, a change every "
          f"{interval}s for {seconds:.0f}s (load average {load} on "
          f"{os.cpu_count()} CPUs)")  # fmt: skip
    print(row("pipeline page: change → `changed` event", seen.event))
    print(row("pipeline page: change → page fetched again", seen.page))
    print(row("baseline: change → bare SUBSCRIBE", seen.baseline))
    if seen.errors:
        print("errors:", seen.errors)
    worst = percentile(seen.page, 95) if seen.page else 99.0
    print(f"target p95 ≤ 1 s: {'meets' if worst <= 1.0 else 'MISSES'} it")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipelines", type=int, default=1000)
    parser.add_argument("--pages", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args()
    asyncio.run(main(args.pipelines, args.pages, args.seconds, args.interval))
