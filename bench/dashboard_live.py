"""Live dashboard latency: 100 browsers connected, 20 runs live (target: an event on the page
within 1 s, p95).

Starts the App (uvicorn subprocess) on a private redis-server, seeds 20 running pipelines,
and connects `--browsers` server-sent-event streams as signed-in admins: 60 % on the board,
the rest on the 20 runs' logs. For `--seconds`, each run writes an agent message to its event
stream every `--interval` seconds (as a runner does), and one pipeline a tick changes (its
card moves, as the reporter's bookkeeping does). Each stream measures, per event, the time
from the write to the moment it read the event.

Baseline beside it: a bare Redis client blocked in XREAD on the same run streams (what
reading Redis directly costs, no App in between).

    PYTHONPATH=. .venv/bin/python bench/dashboard_live.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import time
from datetime import UTC, datetime

import httpx
import redis.asyncio as aioredis
from arq.connections import create_pool
from pydantic import SecretStr

from app.dashboard.auth import SESSION_COOKIE
from app.ops.server import private_redis
from app.runs.pipelines import Pipelines
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
from runner import contract
from runner.events import AssistantMessage
from runner.redisurl import redis_settings

RUNS = 20
STAMP = re.compile(r"sent@(\d+\.\d+)")
DATETIME = re.compile(r'datetime="([^"]+)"')


class Latencies:
    def __init__(self) -> None:
        self.log: list[float] = []
        self.board: list[float] = []
        self.baseline: list[float] = []
        self.errors: dict[str, int] = {}

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def listen(
    client: httpx.AsyncClient, path: str, stop: asyncio.Event, seen: Latencies, kind: str
) -> None:
    try:
        async with client.stream("GET", path, timeout=None) as response:
            if response.status_code != 200:
                seen.error(f"{path}: HTTP {response.status_code}")
                return
            event = ""
            async for line in response.aiter_lines():
                if stop.is_set():
                    return
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event in ("line", "card"):
                    now = time.time()
                    if kind == "log" and (found := STAMP.search(line)):
                        seen.log.append(now - float(found.group(1)))
                    elif kind == "board" and event == "card":
                        html = json.loads(line[6:])["html"]
                        if (stamp := DATETIME.search(html)) is not None:
                            at = datetime.fromisoformat(stamp.group(1)).timestamp()
                            seen.board.append(now - at)
    except httpx.HTTPError as exc:
        if not stop.is_set():
            seen.error(type(exc).__name__)


async def baseline_reader(
    redis: aioredis.Redis, run_ids: list[str], stop: asyncio.Event, seen: Latencies
) -> None:
    cursors = {contract.run_events(run_id): "0-0" for run_id in run_ids}
    while not stop.is_set():
        answer = await redis.xread(cursors, block=500)
        now = time.time()
        for stream, entries in answer or []:
            for entry_id, fields in entries:
                cursors[stream.decode()] = entry_id.decode()
                if found := STAMP.search(fields[b"event"].decode()):
                    seen.baseline.append(now - float(found.group(1)))


async def emit(
    redis: aioredis.Redis, run_ids: list[str], interval: float, stop: asyncio.Event
) -> None:
    store = Pipelines(redis)  # type: ignore[arg-type]
    tick = 0
    while not stop.is_set():
        began = time.monotonic()
        pipe = redis.pipeline(transaction=False)
        for run_id in run_ids:
            text = f"working on it, sent@{time.time():.6f}"
            pipe.xadd(
                contract.run_events(run_id),
                {"event": AssistantMessage(text=text).model_dump_json()},
            )
        await pipe.execute()
        moved = run_ids[tick % len(run_ids)]
        await store.mark_running(moved, runner="runner-1", started_at=datetime.now(UTC))
        tick += 1
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - began)))


async def main(browsers: int, seconds: float, interval: float) -> None:
    with scratch() as root, private_redis(root / "redis") as redis_url:
        pool = await create_pool(redis_settings(redis_url))
        store = Pipelines(pool)
        run_ids = []
        now = datetime.now(UTC)
        for index in range(RUNS):
            seed = make_pipeline(index, 1, now)
            run = seed.runs[0].model_copy(update={"status": "waiting", "outcome": None})
            seed.runs = []
            await store.add_run(seed, run)
            await store.mark_running(run.run_id, runner="runner-1")
            run_ids.append(run.run_id)
        secret = "bench-session-secret"
        settings = AppSettings(
            _env_file=None, redis_url=redis_url, session_secret=SecretStr(secret), admins=ADMIN
        )  # type: ignore[call-arg]
        cookie = await signed_cookie(settings)
        server, base_url = start_app(redis_url, secret)
        seen = Latencies()
        stop = asyncio.Event()
        limits = httpx.Limits(max_connections=browsers + 10)
        try:
            async with httpx.AsyncClient(
                base_url=base_url, cookies={SESSION_COOKIE: cookie}, limits=limits
            ) as client:
                on_board = int(browsers * 0.6)
                streams = [
                    asyncio.create_task(listen(client, "/events/board", stop, seen, "board"))
                    for _ in range(on_board)
                ] + [
                    asyncio.create_task(
                        listen(client, f"/runs/{run_ids[i % RUNS]}/events", stop, seen, "log")
                    )
                    for i in range(browsers - on_board)
                ]
                bare = aioredis.Redis.from_url(redis_url)
                baseline = asyncio.create_task(baseline_reader(bare, run_ids, stop, seen))
                await asyncio.sleep(2.0)  # every stream connected and caught up
                seen.log.clear()
                seen.board.clear()
                writer = aioredis.Redis.from_url(redis_url)
                emitter = asyncio.create_task(emit(writer, run_ids, interval, stop))
                await asyncio.sleep(seconds)
                stop.set()
                await emitter
                await asyncio.sleep(1.5)  # the last events arrive
                for task in [*streams, baseline]:
                    task.cancel()
                await asyncio.gather(*streams, baseline, return_exceptions=True)
                await writer.aclose()
                await bare.aclose()
        finally:
            server.terminate()
            server.wait(10)
            await pool.aclose()

    def row(name: str, values: list[float]) -> str:
        return latency_row(name, values, 40)

    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"{browsers} browsers ({int(browsers * 0.6)} on the board), {RUNS} live runs, an event "
          f"per run every {interval}s for {seconds:.0f}s (load average {load} on "
          f"{os.cpu_count()} CPUs)")  # fmt: skip
    print(row("run log: write → page", seen.log))
    print(row("board card: change → page", seen.board))
    print(row("baseline: write → bare XREAD", seen.baseline))
    if seen.errors:
        print("errors:", seen.errors)
    worst = max(percentile(seen.log, 95), percentile(seen.board, 95)) if seen.board else 99.0
    print(f"target p95 ≤ 1 s: {'meets' if worst <= 1.0 else 'MISSES'} it")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--browsers", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument(
        "--interval", type=float, default=0.5, help="seconds between a run's events"
    )
    args = parser.parse_args()
    asyncio.run(main(args.browsers, args.seconds, args.interval))
