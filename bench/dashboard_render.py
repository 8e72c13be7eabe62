"""The board's server render with 1,000 pipelines and 10,000 runs (target: p95 ≤ 100 ms).

Seeds a private redis-server with `--pipelines` pipelines of `--runs` runs each (spread over
every column), then times what `GET /` does for an admin who sees them all: read the activity
index and the summaries, the pull requests and the shown runs' usage, group into columns,
render the page. Also the whole HTTP request through the real App (uvicorn, sessions, CSP).

Baseline beside it: the same page built from whole pipelines (one MGET of every pipeline's
history, parsed), which is what the board would cost without the summaries.

    PYTHONPATH=. .venv/bin/python bench/dashboard_render.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from arq.connections import ArqRedis, create_pool
from pydantic import SecretStr

from app.conversation.policy import RunSettings
from app.dashboard.auth import SESSION_COOKIE, SESSION_CSRF, SESSION_ID, SignIn, session_secret
from app.dashboard.board import Filters, build_board, place
from app.dashboard.data import (
    SummaryCache,
    UsageCache,
    load_board,
    pulls_of,
    usage_of_runs,
)
from app.dashboard.oauth import UserToken
from app.dashboard.pages import render
from app.ops.server import private_redis
from app.reporting.channels.pullrequest import PULL_OF_PIPELINE, pull_title_field
from app.reporting.reporter import VIEW_PREFIX
from app.reporting.runview import RunView
from app.runs.pipelines import PIPELINE_PREFIX, Pipeline, PipelineRun, Pipelines
from app.runs.summary import summarise
from app.settings import AppSettings
from bench.scratch import scratch
from runner.job import CommitInfo, Outcome, Resources
from runner.redisurl import redis_settings

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "bench-admin"
SETTINGS = RunSettings(
    agent="claude", image="trimo-agent:latest", label="default", timeout_minutes=30,
    network="allowlist", resources=Resources(),
)  # fmt: skip
OUTCOMES = [Outcome.SUCCESS, Outcome.FAILURE, Outcome.CANCELLED, Outcome.TIMED_OUT]


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))]


def latency_row(name: str, values: list[float], width: int = 40) -> str:
    """One line of latency figures (`values` in seconds, shown in ms)."""
    if not values:
        return f"{name:<{width}} no events"
    ms = [v * 1000 for v in values]
    return (f"{name:<{width}} n {len(ms):6d}   p50 {statistics.median(ms):7.1f} ms   "
            f"p95 {percentile(ms, 95):7.1f} ms   max {max(ms):7.1f} ms")  # fmt: skip


def make_pipeline(index: int, runs: int, now: datetime) -> Pipeline:
    repo = f"org{index % 5}/repo{index % 50}"
    number = index + 1
    pipeline = Pipeline(
        id=f"{repo.replace('/', '.')}.{number}", repo=repo, number=number, kind="issue",
        branch=f"trimo/{number}-make-the-login-page-faster", base_branch="main",
        clone_url=f"https://github.com/{repo}.git", installation_id=1,
        title=f"Make the login page faster ({index})", closed=index % 7 == 0,
    )  # fmt: skip
    for n in range(runs):
        started = now - timedelta(minutes=(runs - n) * 30 + index)
        run = PipelineRun(
            run_id=f"{pipeline.id}-run{n}",
            prompt="Profile the login handler, cache the session lookup and add a test. " * 3,
            settings=SETTINGS, requested_by=f"person{index % 12}", thread=number,
            status="finished", started=True, outcome=OUTCOMES[(index + n) % 4],
            runner=f"runner-{index % 5}", started_at=started,
            finished_at=started + timedelta(minutes=12), requested_at=started,
            commits=[CommitInfo(sha=f"{n:040x}", subject="Cache the session lookup")] * 2,
        )  # fmt: skip
        pipeline.runs.append(run)
    last = pipeline.runs[-1]
    if index % 10 == 1:
        last.status, last.outcome, last.finished_at = "running", None, None
        pipeline.active_run = last.run_id
    elif index % 10 == 2:
        last.status, last.outcome, last.started, last.started_at = "queued", None, False, None
        pipeline.active_run = last.run_id
    elif index % 10 in (3, 4):
        last.outcome = Outcome.SUCCESS
    pipeline.updated_at = now - timedelta(minutes=index)
    return pipeline


async def seed(redis: ArqRedis, count: int, runs: int) -> None:
    now = datetime.now(UTC)
    store = Pipelines(redis)
    for start in range(0, count, 100):
        batch = [make_pipeline(i, runs, now) for i in range(start, min(count, start + 100))]
        for pipeline in batch:
            await store._write(pipeline)  # the store's own write, without a lock per pipeline
        pipe = redis.pipeline(transaction=False)
        for pipeline in batch:
            view = RunView(run_id=pipeline.runs[-1].run_id, input_tokens=120_000,
                           output_tokens=8_000, cost_usd=0.42)  # fmt: skip
            pipe.set(VIEW_PREFIX + view.run_id, view.model_dump_json())
            if pipeline.number % 10 in (3, 4):
                pipe.hset(PULL_OF_PIPELINE, pipeline.id, str(10_000 + pipeline.number))
                pipe.hset(PULL_OF_PIPELINE, pull_title_field(pipeline.id), f"Fix {pipeline.id}")
        await pipe.execute()


CPU: dict[str, list[float]] = {}
"""This process's own CPU time per timed call, by label: the share of a render the machine's
load does not inflate (the wall clock waits for a CPU when six people share two)."""


async def timed(
    call: Callable[[], Awaitable[object]],
    rounds: int,
    between: Callable[[], Awaitable[object]] | None = None,
    label: str = "",
) -> list[float]:
    await call()  # warm: templates compiled, connections open
    times = []
    for _ in range(rounds):
        if between is not None:
            await between()
        began, cpu = time.perf_counter(), time.process_time()
        await call()
        times.append((time.perf_counter() - began) * 1000)
        CPU.setdefault(label, []).append((time.process_time() - cpu) * 1000)
    return times


CACHE = SummaryCache()
USAGE = UsageCache()
LIVE_PIPELINES = 20
"""Pipelines changed before each timed render (their runs are live)."""


async def live_changes(redis: ArqRedis, count: int) -> Callable[[], Awaitable[None]]:
    """A step that changes `count` pipelines, as 20 live runs' events would."""
    store = Pipelines(redis)
    ids = [pid for pid, _ in await store.recent()][:count]

    async def change() -> None:
        for pid in ids:
            pipeline = await store.get(pid)
            assert pipeline is not None
            pipeline.updated_at = datetime.now(UTC)
            await store._write(pipeline)

    return change


async def render_from_summaries(redis: ArqRedis) -> int:
    loaded = await load_board(Pipelines(redis), None, CACHE)
    placed = place(loaded.summaries, loaded.pulls.numbers, Filters())
    usage = await USAGE.of(redis, placed.runs())
    board = build_board(placed, loaded.pulls.numbers, loaded.pulls.titles, usage, _now())
    return len(page(board))


async def render_from_whole_pipelines(redis: ArqRedis) -> int:
    """The baseline: every pipeline's whole history read and parsed."""
    ids = [pid for pid, _ in await Pipelines(redis).recent()]
    raws = await redis.mget([PIPELINE_PREFIX + pid for pid in ids])
    summaries = [summarise(Pipeline.model_validate_json(raw)) for raw in raws if raw]
    pulls = await pulls_of(redis, summaries)
    placed = place(summaries, pulls.numbers, Filters())
    usage = await usage_of_runs(redis, [run_id for run_id, _ in placed.runs()])
    board = build_board(placed, pulls.numbers, pulls.titles, usage, _now())
    return len(page(board))


def page(board: object) -> str:
    from app.dashboard.auth import Viewer

    return render(
        "board.html.j2", board=board, filters=Filters(), viewer=Viewer(ADMIN, True, {}),
        csrf="x", path="/", now=_now(), asked=False,
    )  # fmt: skip


def _now() -> datetime:
    return datetime.now(UTC)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_app(redis_url: str, secret: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = dict(
        os.environ, TRIMO_WEBHOOK_SECRET="bench", TRIMO_REDIS_URL=redis_url,
        TRIMO_SESSION_SECRET=secret, TRIMO_ADMINS=ADMIN, PYTHONPATH=str(ROOT),
    )  # fmt: skip
    command = [sys.executable, "-m", "uvicorn", "--factory", "app.edge.web:app_from_env",
               "--port", str(port), "--log-level", "warning", "--no-access-log"]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return server, base
        except httpx.HTTPError:
            time.sleep(0.1)
    server.terminate()
    raise SystemExit("the App did not start")


async def signed_cookie(settings: AppSettings) -> str:
    import json
    from base64 import b64encode

    import itsdangerous

    signin = SignIn(settings)
    session_id = await signin.open_session(ADMIN, UserToken("ghu_bench", None, None), {})
    await signin.redis.aclose()
    data = b64encode(json.dumps({SESSION_ID: session_id, SESSION_CSRF: "x"}).encode())
    return itsdangerous.TimestampSigner(session_secret(settings)).sign(data).decode()


@asynccontextmanager
async def admin_client(redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The real App (uvicorn) on `redis_url`, and a client signed in to it as an admin."""
    secret = "bench-session-secret"
    settings = AppSettings(
        _env_file=None, redis_url=redis_url, session_secret=SecretStr(secret), admins=ADMIN
    )  # type: ignore[call-arg]
    cookie = await signed_cookie(settings)
    server, base_url = start_app(redis_url, secret)
    try:
        async with httpx.AsyncClient(
            base_url=base_url, cookies={SESSION_COOKIE: cookie}, timeout=30
        ) as client:
            yield client
    finally:
        server.terminate()
        server.wait(10)


async def main(count: int, runs: int, rounds: int) -> None:
    with scratch() as root, private_redis(root / "redis") as redis_url:
        redis = await create_pool(redis_settings(redis_url))
        began = time.perf_counter()
        await seed(redis, count, runs)
        print(f"seeded {count:,} pipelines, {count * runs:,} runs in "
              f"{time.perf_counter() - began:.1f}s")  # fmt: skip
        began = time.perf_counter()
        await render_from_summaries(redis)
        cold = [(time.perf_counter() - began) * 1000]
        live = await live_changes(redis, LIVE_PIPELINES)
        ours = await timed(lambda: render_from_summaries(redis), rounds, live, "ours")
        base = await timed(
            lambda: render_from_whole_pipelines(redis), max(5, rounds // 4), None, "base"
        )
        async with admin_client(redis_url) as client:

            async def get() -> None:
                response = await client.get("/")
                assert response.status_code == 200, response.status_code
                assert "card-" in response.text

            http = await timed(get, rounds)
        await redis.aclose()

    def row(name: str, values: list[float]) -> str:
        return (f"{name:<44} p50 {statistics.median(values):7.1f} ms   "
                f"p95 {percentile(values, 95):7.1f} ms   max {max(values):7.1f} ms")  # fmt: skip

    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"board with {count:,} pipelines / {count * runs:,} runs, {rounds} renders "
          f"(load average {load} on {os.cpu_count()} CPUs)")  # fmt: skip
    print(row(f"server render, {LIVE_PIPELINES} pipelines changed each time", ours))
    print(row("  its CPU time in this process", CPU["ours"]))
    print(row("server render, first (nothing cached)", cold))
    print(row("GET / over HTTP (uvicorn, session, CSP)", http))
    print(row("baseline: from whole pipelines", base))
    print(row("  its CPU time in this process", CPU["base"]))
    verdict = "meets" if percentile(ours, 95) <= 100 else "MISSES"
    print(
        f"target p95 ≤ 100 ms: the server render's wall clock {verdict} it here; its own CPU "
        f"time is p95 {percentile(CPU['ours'], 95):.0f} ms (a loaded machine adds the wait)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipelines", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=10, help="runs per pipeline")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    asyncio.run(main(args.pipelines, args.runs, args.rounds))
