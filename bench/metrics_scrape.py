"""What metrics and logs cost: a scrape of a busy fleet, a pipeline save, a log line.

Against a private redis-server, fills Redis as a busy installation would (`--runners`
runners online over 20 labels, runs queued, `--installations` write budgets, every
runner's figures, `--live` runs in flight), then prints side by side with a baseline:

- a `/metrics` scrape (`app.ops.scrape.exposition`) vs a Redis PING and the process's own
  figures alone (what a scrape costs without Redis);
- a pipeline save with the runs-by-state script vs the same save without it (before);
- a log line in JSON (with its context and scrubbing) and rich vs a plain stdlib line and
  rich as it was before.

    PYTHONPATH=. .venv/bin/python bench/metrics_scrape.py
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from arq import create_pool
from arq.connections import ArqRedis
from prometheus_client import generate_latest
from rich.console import Console
from rich.logging import RichHandler

from app.conversation.policy import RunSettings
from app.edge.web import QUEUE_NAME
from app.ops.metrics import REGISTRY
from app.ops.scrape import exposition
from app.ops.server import private_redis
from app.redisio import settle
from app.reporting.budget import Priority, WriteBudget
from app.runs.pipelines import Pipeline, PipelineRun, Pipelines
from app.runs.runcounts import RunCounts
from bench.scratch import scratch
from runner import contract, figures, logs, registry
from runner.job import Resources
from runner.redisurl import redis_settings

SETTINGS = RunSettings(
    agent="script", image="i", label="default", timeout_minutes=1, network="none",
    resources=Resources(),
)  # fmt: skip


async def timed(call: Callable[[], Awaitable[object]], times: int) -> list[float]:
    took = []
    for _ in range(times):
        began = time.perf_counter()
        await call()
        took.append((time.perf_counter() - began) * 1000)
    return took


def line(what: str, values: list[float], note: str = "") -> None:
    p95 = sorted(values)[int(len(values) * 0.95) - 1]
    print(f"  {what:<40} p50 {statistics.median(values):7.2f} ms  p95 {p95:7.2f} ms  {note}")


async def fill(pool: ArqRedis, runners: int, installations: int, live: int) -> None:
    now = datetime.now(UTC)
    for n in range(runners):
        labels = ["default", f"label-{n % 20}"]
        info = registry.RunnerInfo(
            id=f"runner-{n}", host="h", labels=labels, capacity=4, running=[], version="0",
            pid=n, started_at=now, seen_at=now,
        )  # fmt: skip
        await registry.announce(pool, info)
        for k in range(10):
            await figures.observe_run(
                pool, info.id, outcome="success", duration=30.0 * k, time_to_agent=0.3 * k
            )
    for n in range(20):
        await settle(pool.sadd(contract.RUN_LABELS, f"label-{n}"))
        await pool.zadd(contract.run_queue(f"label-{n}"), {f"q-{n}-{k}": k for k in range(n + 1)})
    budget = WriteBudget(pool)
    for n in range(installations):
        for _ in range(5):
            await budget.take(1000 + n, Priority.FINAL)
    counts = RunCounts(pool)
    for start in range(0, live, 500):
        states = [(f"live-{k}", "running", None) for k in range(start, min(live, start + 500))]
        await counts.track(states)


def a_pipeline(runs: int) -> Pipeline:
    return Pipeline(
        id="o.r.1", repo="o/r", number=1, kind="issue", branch="trimo/1-x", base_branch="main",
        clone_url="https://example.invalid/o/r.git", installation_id=1,
        runs=[
            PipelineRun(run_id=f"run-{k}", prompt="p", settings=SETTINGS, requested_by="a",
                        thread=1, status="finished" if k < runs - 1 else "running")
            for k in range(runs)
        ],
    )  # fmt: skip


class _NoCounts:
    async def track(self, states: object) -> None:
        return None


def log_rate(handler: logging.Handler, lines: int) -> float:
    """Lines a second through `handler`, each inside a run's context."""
    logger = logging.getLogger(f"bench.logs.{id(handler)}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    began = time.perf_counter()
    with logs.log_context(run_id="octo.widgets.7-abc", pipeline="octo.widgets.7", repo="o/w"):
        for n in range(lines):
            logger.info("run %s pushed %d commit(s) to %s", "octo.widgets.7-abc", n, "trimo/7-x")
    return lines / (time.perf_counter() - began)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runners", type=int, default=100)
    parser.add_argument("--installations", type=int, default=100)
    parser.add_argument("--live", type=int, default=5000)
    parser.add_argument("--scrapes", type=int, default=50)
    args = parser.parse_args()
    with scratch() as root, private_redis(root / "redis") as url:
        pool = await create_pool(redis_settings(url))
        await fill(pool, args.runners, args.installations, args.live)
        print(
            f"/metrics with {args.runners} runners, 20 labels, {args.installations} "
            f"installations, {args.live} live runs ({args.scrapes} scrapes)"
        )
        size = len(await exposition(pool, QUEUE_NAME))
        scrapes = await timed(lambda: exposition(pool, QUEUE_NAME), args.scrapes)
        line(f"scrape ({size // 1024} KiB of text)", scrapes)

        async def own_figures() -> bytes:
            return generate_latest(REGISTRY)

        line("Redis PING", await timed(pool.ping, args.scrapes), "(baseline)")
        line("this process's figures alone", await timed(own_figures, args.scrapes), "(baseline)")

        counted, before = Pipelines(pool), Pipelines(pool)
        setattr(before, "_counts", _NoCounts())  # noqa: B010 (the save as it was before)
        pipeline = a_pipeline(20)
        print("\npipeline save (20 runs; the two saves take turns, 300 each)")
        with_script: list[float] = []
        without: list[float] = []
        for _ in range(300):
            with_script += await timed(lambda: counted._write(pipeline), 1)
            without += await timed(lambda: before._write(pipeline), 1)
        line("with the runs-by-state script", with_script)
        line("without it", without, "(baseline)")
        await pool.aclose()

    lines = 20_000
    plain = logging.StreamHandler(io.StringIO())
    plain.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    rich_before = RichHandler(show_path=False, console=Console(file=_Tty()))
    print(f"\nlog lines ({lines}, in a run's context)")
    rates = [
        ("JSON, context, scrubbed", log_rate(logs.make_handler("json", io.StringIO()), lines), ""),
        ("rich, scrubbed", log_rate(logs.make_handler("rich", _Tty()), lines // 10), ""),
        ("rich as before (no context, no scrub)", log_rate(rich_before, lines // 10), "(baseline)"),
        ("stdlib plain", log_rate(plain, lines), "(baseline)"),
    ]
    for what, rate, note in rates:
        print(f"  {what:<40} {rate:9.0f} lines/s  {note}")


if __name__ == "__main__":
    asyncio.run(main())
