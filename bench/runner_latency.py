"""Time to agent through a real runner daemon, eight at once, and its idle memory.

    python bench/runner_latency.py [--runs 20] [--redis redis://127.0.0.1:6379/14]

Starts `trimo runner` (concurrency 8) against a local repository, warms its
mirror with one run, then measures, from `enqueue_job` to the agent's first
output line arriving on the run's event stream:
  - `--runs` runs one after another (p50, p95);
  - eight runs enqueued together (per-run median and max), beside one alone;
and the daemon's resident memory when idle.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis
from arq import create_pool
from arq.connections import ArqRedis

from bench.scratch import empty_repo
from runner import contract
from runner.job import RepoRef, Resources, RunRequest
from runner.redisurl import redis_settings

MARK = "agent-says-hello"


async def first_output(client: aioredis.Redis, run_id: str, since: float) -> float:
    last = "0-0"
    while True:
        reply = await client.xread({contract.run_events(run_id): last}, block=5000)
        for _stream, entries in reply:
            for entry_id, fields in entries:
                last = entry_id
                event = json.loads(fields[b"event"])
                if MARK in event.get("text", ""):
                    return time.perf_counter() - since
                if event["type"] == "finished":
                    raise RuntimeError(f"run ended without output: {event}")


async def one(pool: ArqRedis, client: aioredis.Redis, repo: Path, n: int) -> float:
    request = RunRequest(
        run_id=f"bench-{n}-{os.getpid()}",
        pipeline=f"bench{n % 8}",
        repo=RepoRef(full_name="bench/repo", clone_url=str(repo)),
        branch=f"trimo/bench{n % 8}",
        base_branch="main",
        prompt=f"echo {MARK}",
        agent="script",
        image="trimo-agent:base",
        resources=Resources(memory="512m", cpus=1, pids=128),
    )
    t0 = time.perf_counter()
    await pool.enqueue_job(
        contract.RUN_FUNCTION,
        request.dump_for_queue(),
        _queue_name=contract.run_queue("default"),
        _job_id=request.run_id,
    )
    return await first_output(client, request.run_id, t0)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def measure(redis_url: str, repo: Path, runs: int) -> None:
    pool = await create_pool(redis_settings(redis_url))
    client = aioredis.Redis.from_url(redis_url)
    for n in range(8):  # warm: mirror and each pipeline's workspace
        await one(pool, client, repo, 1000 + n)
    serial = [await one(pool, client, repo, n) for n in range(runs)]
    print(f"time to agent, {runs} runs one at a time: p50 {pct(serial, 50):.3f} s, "
          f"p95 {pct(serial, 95):.3f} s, max {max(serial):.3f} s")  # fmt: skip
    await asyncio.sleep(3)
    alone = [await one(pool, client, repo, 2000 + n) for n in range(3)]
    await asyncio.sleep(3)
    together = await asyncio.gather(*(one(pool, client, repo, 3000 + n) for n in range(8)))
    print(f"one run alone: median {statistics.median(alone):.3f} s; eight at once: "
          f"median {statistics.median(together):.3f} s, max {max(together):.3f} s "
          f"(2 cores)")  # fmt: skip
    await pool.aclose()
    await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="trimo-bench-"))
    subprocess.run(["redis-cli", "-u", args.redis, "flushdb"], check=True, capture_output=True)
    repo = root / "repo"
    empty_repo(repo)
    env = {
        **os.environ,
        "TRIMO_REDIS_URL": args.redis,
        "TRIMO_CACHE_DIR": str(root / "cache"),
        "TRIMO_RUNNER_ID": "bench-runner",
        "TRIMO_RUNNER_CONCURRENCY": "8",
    }
    log = (root / "runner.log").open("w")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "app.ops.cli", "runner"], env=env, stdout=log, stderr=log
    )
    try:
        time.sleep(3)
        asyncio.run(measure(args.redis, repo, args.runs))
        time.sleep(5)
        status = Path(f"/proc/{daemon.pid}/status").read_text().splitlines()
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        print(f"idle runner daemon resident memory: {rss / 1024:.0f} MB")
    finally:
        daemon.terminate()
        daemon.wait(60)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
