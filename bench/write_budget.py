"""GitHub writes of 20 parallel runs in one installation over a simulated hour.

    PYTHONPATH=. python bench/write_budget.py [--runs 20] [--seed 1]

Drives the real pacing (`app.reporting.budget.due_live`) and the real budget (`WriteBudget`
on a private redis-server) with a simulated clock, one tick a second. Each run
starts at once (🚀, in progress, progress comment: 3 writes), opens its pull
request on its first push (1), has news every few seconds (tool calls), and ends
between 5 and 60 minutes in (check run, progress comment, pull request body: 3).
Prints the most writes in any minute and in any hour, when the last final state
arrived, and how long a running run went without an update; beside it, today's
behaviour (an update every 3 s per run with news, no budget).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import subprocess
import tempfile
import time
from bisect import bisect_left
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from app.reporting.budget import Limits, LiveRun, Priority, WriteBudget, due_live
from tests.webhook_helpers import free_port

INSTALLATION = 1
START_WRITES = 3
FINAL_WRITES = 3
EPOCH = 1_700_000_000.0


@dataclass
class SimRun:
    run_id: str
    ends: float
    news: list[float]
    first_push: float
    urgent: list[tuple[Priority, str]] = field(default_factory=list)
    started_sent: float | None = None
    final_due: bool = False
    final_sent: float | None = None
    last_sent: float = 0.0
    changed: bool = False
    gaps: list[float] = field(default_factory=list)

    def sent(self, now: float) -> None:
        if self.started_sent is not None and self.final_sent is None:
            self.gaps.append(now - self.last_sent)
        self.last_sent = now


def make_runs(count: int, seed: int) -> list[SimRun]:
    rng = random.Random(seed)
    runs = []
    for i in range(count):
        ends = 300 + i * (3300 / max(1, count - 1))
        news, t = [], rng.uniform(1, 5)
        while t < ends:
            news.append(t)
            t += rng.expovariate(1 / 5)  # a tool call every 5 s on average
        runs.append(
            SimRun(
                run_id=f"run-{i}",
                ends=ends,
                news=news,
                first_push=rng.uniform(60, ends),
                urgent=[(Priority.FIRST, "start")] * START_WRITES,
            )
        )
    return runs


def max_in_window(times: list[float], window: float) -> int:
    ordered = sorted(times)
    return max(
        (i + 1 - bisect_left(ordered, t - window + 1e-9) for i, t in enumerate(ordered)), default=0
    )


async def with_budget(runs: list[SimRun], budget: WriteBudget, clock: list[float]) -> list[float]:
    writes: list[float] = []
    now = 0.0
    while any(run.final_sent is None for run in runs) and now < 3 * 3600:
        clock[0] = EPOCH + now
        for run in runs:
            while run.news and run.news[0] <= now:
                run.news.pop(0)
                run.changed = True
            if run.first_push <= now and run.first_push >= 0:
                run.urgent.append((Priority.FIRST, "pull"))
                run.first_push = -1
            if not run.final_due and now >= run.ends:
                run.final_due = True
                run.urgent = [(Priority.FINAL, "final")] * FINAL_WRITES + run.urgent
        # First and last words go first, the last words before the first.
        for run in sorted(runs, key=lambda r: min((p for p, _ in r.urgent), default=9)):
            while run.urgent and await budget.take(INSTALLATION, run.urgent[0][0]):
                priority, _what = run.urgent.pop(0)
                writes.append(now)
                run.sent(now)
                if priority is Priority.FIRST and run.started_sent is None:
                    run.started_sent = now
                if run.final_due and not any(p is Priority.FINAL for p, _ in run.urgent):
                    run.final_sent = run.final_sent if run.final_sent is not None else now
        live = [
            LiveRun(run.run_id, run.changed, run.last_sent)
            for run in runs
            if run.started_sent is not None and not run.final_due
        ]
        usage = await budget.usage(INSTALLATION)
        by_id = {run.run_id: run for run in runs}
        for run_id in due_live(live, usage, budget.limits, now):
            if not await budget.take(INSTALLATION, Priority.LIVE):
                break
            writes.append(now)
            by_id[run_id].changed = False
            by_id[run_id].sent(now)
        now += 1.0
    return writes


def baseline(runs: list[SimRun]) -> list[float]:
    """Today: 3 writes to start, an update every 3 s while there is news, 3 to end."""
    writes: list[float] = []
    for run in runs:
        writes += [0.0] * START_WRITES + [run.first_push]
        last, pending = 0.0, False
        news = list(run.news)
        t = 0.0
        while t < run.ends:
            while news and news[0] <= t:
                news.pop(0)
                pending = True
            if pending and t - last >= 3.0:
                writes.append(t)
                last, pending = t, False
            t += 1.0
        writes += [run.ends] * FINAL_WRITES
    return writes


def report(name: str, writes: list[float], extra: str = "") -> None:
    print(
        f"{name:<24} max {max_in_window(writes, 60):>4} writes/minute · "
        f"max {max_in_window(writes, 3600):>5} writes/hour · {len(writes):>5} in all{extra}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is needed")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="trimo-bench-")
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        for _ in range(100):
            try:
                await client.ping()
                break
            except aioredis.ConnectionError:
                await asyncio.sleep(0.05)
        clock = [EPOCH]
        limits = Limits()
        budget = WriteBudget(client, limits, clock=lambda: clock[0])
        runs = make_runs(args.runs, args.seed)
        base = baseline(make_runs(args.runs, args.seed))
        t0 = time.perf_counter()
        writes = await with_budget(runs, budget, clock)
        took = time.perf_counter() - t0
        print(
            f"{args.runs} runs in parallel in one installation, 5 to 60 minutes each "
            f"(GitHub allows {limits.per_minute}/minute, {limits.per_hour}/hour)"
        )
        report("today (every 3 s)", base, " · final states: all sent, most refused by GitHub")
        late = max(run.final_sent - run.ends for run in runs if run.final_sent is not None)
        arrived = sum(run.final_sent is not None for run in runs)
        report(
            "write budget", writes, f" · final states: {arrived}/{len(runs)}, ≤ {late:.0f} s late"
        )
        gaps = sorted(gap for run in runs for gap in run.gaps)
        within = sum(gap <= 60 for gap in gaps) / max(1, len(gaps))
        print(
            f"running runs' updates: median gap {gaps[len(gaps) // 2]:.0f} s, "
            f"longest {gaps[-1]:.0f} s, {within:.0%} of gaps ≤ 60 s "
            f"(simulated {max(writes) / 60:.0f} min in {took:.1f} s)"
        )
    finally:
        await client.aclose()
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    asyncio.run(main())
