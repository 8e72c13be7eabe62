"""Time to agent through a real runner daemon, 1, 3 and 8 at once, and its idle memory.

    PYTHONPATH=. python bench/runner_latency.py [--runs 20] [--rounds 5] [--log FILE]
                                               [--redis redis://127.0.0.1:6379/14]

Starts `trimo runner` (concurrency 8) against a local repository, warms its
mirror and each pipeline's workspace, then measures, from `enqueue_job` to the
agent's first output line arriving on the run's event stream, on the default
`allowlist` network:
  - `--runs` runs one after another (p50, p95, max);
  - `--rounds` rounds each of 1, 3 and 8 runs enqueued together, each after the
    runner has made its networks ahead again (a burst after a quiet moment): each
    round's per-run median and max, the medians over the rounds, and their ratio to one
    alone (the goal: 3 within 1.3x, 8 within 1.5x);
and the daemon's resident memory when idle (the goal: at most 100 MB). Each round
waits for its runs to end before the next. The machine's load average is printed
beside each figure: on a shared machine, compare medians of quiet rounds. Last, where
the time went: each step's median (the runner's "agent started after" log lines,
runner.phases) for 1, 3 and 8 at once, and the CPU the machine used until the last agent
of a round started: that work divided by the cores is the least time it could have taken.
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

import docker
import redis.asyncio as aioredis
from arq import create_pool
from arq.connections import ArqRedis

from bench.scratch import empty_repo
from runner import contract
from runner.container import LABEL_RUNNER
from runner.job import RepoRef, Resources, RunRequest
from runner.network.proxyimage import LABEL_EGRESS
from runner.network.tenant import LABEL_TENANT
from runner.phases import steps_of
from runner.redisurl import redis_settings
from runner.warm.box import LABEL_WARM

MARK = "agent-says-hello"
AT_ONCE = (1, 3, 8)
BASELINE = {
    "serial p50": 0.526,
    "1 at once": 0.465,
    "8 at once median": 1.733,
    "8 at once max": 3.35,
}
"""Issue 21's figures (one quiet machine), before the runner started N runs in parallel."""
GOAL = {3: 1.3, 8: 1.5}
RUNNER = "bench-runner"
CONCURRENCY = 8
SPARES_SECONDS = 30.0


async def first_output(client: aioredis.Redis, run_id: str, since: float) -> float:
    """Seconds from `since` to the agent's first output; waits on until the run ends."""
    last, took = "0-0", None
    while True:
        reply = await client.xread({contract.run_events(run_id): last}, block=5000)
        for _stream, entries in reply:
            for entry_id, fields in entries:
                last = entry_id
                event = json.loads(fields[b"event"])
                if took is None and MARK in event.get("text", ""):
                    took = time.perf_counter() - since
                if event["type"] == "finished":
                    if took is None:
                        raise RuntimeError(f"run ended without output: {event}")
                    return took


def run_id(n: int) -> str:
    return f"bench-{n}-{os.getpid()}"


async def one(pool: ArqRedis, client: aioredis.Redis, repo: Path, n: int) -> float:
    request = RunRequest(
        run_id=run_id(n),
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


async def spares_ready() -> float:
    """Waits until the runner has its networks and sandboxes made ahead again, as after a
    quiet moment (the ended runs' ones removed, new ones made); the seconds waited."""
    client = docker.from_env()
    labels = [f"{LABEL_EGRESS}={RUNNER}", f"{LABEL_TENANT}=1"]
    boxes = [f"{LABEL_RUNNER}={RUNNER}", f"{LABEL_WARM}=1"]
    start = time.perf_counter()
    while time.perf_counter() - start < SPARES_SECONDS:
        networks = len(client.networks.list(filters={"label": labels}))
        ready = len(client.containers.list(sparse=True, filters={"label": boxes}))
        if networks == 2 * CONCURRENCY and ready == CONCURRENCY:
            break
        await asyncio.sleep(0.1)
    else:
        print(f"  (what the runner makes ahead was not back after {SPARES_SECONDS:g} s)")
    client.close()
    return time.perf_counter() - start


class CpuMeter:
    """The machine's busy CPU seconds (all cores, /proc/stat), sampled every 10 ms while
    runs start, to tell how much work starting them was and what two cores allow."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def busy() -> float:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:9]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    async def _sample(self) -> None:
        while True:
            self.samples.append((time.perf_counter(), self.busy()))
            await asyncio.sleep(0.01)

    def start(self) -> None:
        self.samples = [(time.perf_counter(), self.busy())]
        self._task = asyncio.create_task(self._sample())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def used_within(self, seconds: float) -> float:
        """CPU seconds used in the first `seconds` after `start`."""
        began, first = self.samples[0]
        until = [busy for at, busy in self.samples if at - began <= seconds]
        return until[-1] - first


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


async def measure(redis_url: str, repo: Path, runs: int, rounds: int) -> dict[int, list[str]]:
    """Prints the figures; returns the run ids of each number at once."""
    pool = await create_pool(redis_settings(redis_url))
    client = aioredis.Redis.from_url(redis_url)
    await asyncio.gather(*(one(pool, client, repo, 1000 + n) for n in range(8)))  # warm
    serial = [await one(pool, client, repo, n) for n in range(runs)]
    print(f"time to agent, {runs} runs one at a time: p50 {pct(serial, 50):.3f} s "
          f"(issue: {BASELINE['serial p50']:.3f} s), p95 {pct(serial, 95):.3f} s, "
          f"max {max(serial):.3f} s [{load()}]")  # fmt: skip
    ids: dict[int, list[str]] = {k: [] for k in AT_ONCE}
    medians: dict[int, list[float]] = {k: [] for k in AT_ONCE}
    maxima: dict[int, list[float]] = {k: [] for k in AT_ONCE}
    cpu: dict[int, list[float]] = {k: [] for k in AT_ONCE}
    meter = CpuMeter()
    number = 2000
    for r in range(rounds):
        for k in AT_ONCE:
            await spares_ready()
            meter.start()
            took = await asyncio.gather(*(one(pool, client, repo, number + n) for n in range(k)))
            meter.stop()
            cpu[k].append(meter.used_within(max(took)))
            ids[k] += [run_id(number + n) for n in range(k)]
            number += 8
            medians[k].append(statistics.median(took))
            maxima[k].append(max(took))
            print(f"  round {r + 1}, {k} at once: median {medians[k][-1]:.3f} s, "
                  f"max {maxima[k][-1]:.3f} s [{load()}]")  # fmt: skip
    alone = statistics.median(medians[1])
    print(f"over {rounds} rounds (medians of the rounds' figures), on allowlist:")
    for k in AT_ONCE:
        median, most = statistics.median(medians[k]), statistics.median(maxima[k])
        goal = f", goal {GOAL[k]}x" if k in GOAL else ""
        print(f"  {k} at once: median {median:.3f} s ({median / alone:.2f}x one alone{goal}), "
              f"max {most:.3f} s ({most / alone:.2f}x)")  # fmt: skip
    cores = os.cpu_count() or 1
    print(f"CPU the whole machine used until a round's last agent started (the runs' work and "
          f"anything else; median of the rounds), and the least time that work takes on "
          f"{cores} cores:")  # fmt: skip
    for k in AT_ONCE:
        used = statistics.median(cpu[k])
        floor = used / cores
        print(f"  {k} at once: {used:.3f} CPU-s ({used / k:.3f} per run), at least "
              f"{floor:.3f} s ({floor / alone:.2f}x one alone)")  # fmt: skip
    alone_was, eight_was = BASELINE["1 at once"], BASELINE["8 at once median"]
    print(f"  issue: 1 alone {alone_was:.3f} s; 8 at once median {eight_was:.3f} s "
          f"({eight_was / alone_was:.1f}x), max {BASELINE['8 at once max']:.2f} s")  # fmt: skip
    await pool.aclose()
    await client.aclose()
    return ids


def where_the_time_went(log: Path, ids: dict[int, list[str]]) -> None:
    """Each step's median over the runs of each number at once, from the runner's log."""
    steps: dict[str, dict[str, float]] = {}
    for line in log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        found = steps_of(str(record.get("message", "")))
        if found is not None and record.get("run_id"):
            steps[str(record["run_id"])] = found
    names = list(dict.fromkeys(name for found in steps.values() for name in found))
    print("where the time went in the runner, per run (median seconds):")
    print(f"  {'step':<10}" + "".join(f"{f'{k} at once':>12}" for k in AT_ONCE))
    for name in names:
        row = []
        for k in AT_ONCE:
            values = [steps[i][name] for i in ids[k] if name in steps.get(i, {})]
            row.append(f"{statistics.median(values):12.3f}" if values else f"{'-':>12}")
        print(f"  {name:<10}" + "".join(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="runs one at a time (default 20)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of 1, 3, 8 (default 5)")
    parser.add_argument("--log", type=Path, help="keep the runner's log here")
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
        "TRIMO_RUNNER_ID": RUNNER,
        "TRIMO_RUNNER_CONCURRENCY": str(CONCURRENCY),
    }
    log_path = args.log or root / "runner.log"
    log = log_path.open("w")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "app.ops.cli", "runner"], env=env, stdout=log, stderr=log
    )
    ids: dict[int, list[str]] = {}
    try:
        time.sleep(3)
        ids = asyncio.run(measure(args.redis, repo, args.runs, args.rounds))
        time.sleep(5)
        status = Path(f"/proc/{daemon.pid}/status").read_text().splitlines()
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        print(f"idle runner daemon resident memory: {rss / 1024:.0f} MB (issue: 68 MB, goal ≤ 100)")
    finally:
        daemon.terminate()
        daemon.wait(60)
        log.close()
        if ids:
            where_the_time_went(log_path, ids)
        for mount in [*root.glob("cache/warm/*"), *root.glob("**/pipelines/*/*/root")]:
            subprocess.run(["umount", "--lazy", str(mount)], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
