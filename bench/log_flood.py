"""The log flood: what an agent printing 1,200 lines of 256 KiB in seconds costs the host.

Each case runs the engine and the event publisher in a process of its own, as a runner
does, so that the peak resident size (VmHWM) is the flood's:

- Redis up: how much Redis grows (INFO used_memory after − before, a redis-server of the
  bench's own), and the runner's peak RSS;
- Redis away (a port nothing answers on): the runner's peak RSS and the spool it leaves.

Baseline: this bench on main before the byte caps (2980e13), this machine (issue 18
measured +796 MB, 659 MB and a 314 MB spool). Targets: Redis ≤ 100 MB, runner ≤ 300 MB.
Redis takes about a fifth more than the payloads the budget counts (a 16 KiB entry has a
node of its own, in a 20 KiB allocation): `--lines 4000` fills the 64 MB budget and grows
Redis by about 80 MB. Docker's log rotation (256 MB) loses some lines of such a flood
before the runner reads them.

    PYTHONPATH=. python bench/log_flood.py [--lines 1200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import redis

from bench.scratch import empty_repo, scratch, script_run
from runner.engine import EngineConfig, RunEngine
from runner.publisher import SPOOL_NAME, EventPublisher
from tests.procwatch import rss_bytes
from tests.redis_servers import RedisProcess
from tests.test_hostile_logs import flood

MB = 1 << 20
BASELINE = {"redis": 750, "rss_up": 384, "rss_away": 683, "spool": 300}
"""This bench on 2980e13 (before the byte caps), this machine, in MB."""


def child(redis_url: str, root: Path, lines: int) -> None:
    """One flood, in this process; prints its figures as JSON."""
    repo = empty_repo(root / "repo")
    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=1)
    publisher = EventPublisher(client, root / "spool")
    engine = RunEngine(EngineConfig(cache_dir=root / "cache", runner_id="bench"))
    run = script_run(repo, "flood", flood(lines))
    finished = engine.execute(run, lambda event: publisher.publish(run.run_id, event))
    sent = publisher.flush(timeout=30)
    spool = root / "spool" / SPOOL_NAME
    print(json.dumps({
        "rss": rss_bytes(os.getpid(), "VmHWM"),
        "spool": spool.stat().st_size if spool.exists() else 0,
        "sent": sent,
        "lines_not_kept": finished.lines_not_kept,
        "outcome": finished.outcome.value,
    }))  # fmt: skip


def flood_in_child(redis_url: str, root: Path, lines: int) -> dict[str, object]:
    root.mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-m", "bench.log_flood", "--child", redis_url, str(root), str(lines)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the flood failed: {done.stderr[-2000:]}")
    figures: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def row(what: str, mb: float, baseline: int, target: str) -> str:
    return f"{what:<36} {mb:>8.1f} MB   baseline {baseline:>4} MB   target {target}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, default=1200)
    parser.add_argument("--child", nargs=3, metavar=("REDIS_URL", "DIR", "LINES"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), int(args.child[2]))
        return
    with scratch() as root:
        server = RedisProcess(root / "redis", ["--appendonly", "no"]).start()
        try:
            client = redis.Redis.from_url(server.url)
            before = int(client.info("memory")["used_memory"])
            up = flood_in_child(server.url, root / "up", args.lines)
            grown = (int(client.info("memory")["used_memory"]) - before) / MB
        finally:
            server.stop()
        away = flood_in_child("redis://127.0.0.1:1/0", root / "away", args.lines)
    not_kept = f"{up['lines_not_kept']} with Redis up, {away['lines_not_kept']} with Redis away"
    print(f"log flood: {args.lines} lines of 256 KiB; lines not kept: {not_kept}")
    print(row("Redis growth, Redis up", grown, BASELINE["redis"], "≤ 100 MB"))
    rss_up, rss_away = int(str(up["rss"])) / MB, int(str(away["rss"])) / MB
    print(row("runner peak RSS, Redis up", rss_up, BASELINE["rss_up"], "≤ 300 MB"))
    print(row("runner peak RSS, Redis away", rss_away, BASELINE["rss_away"], "≤ 300 MB"))
    spool = int(str(away["spool"])) / MB
    print(row("spool, Redis away", spool, BASELINE["spool"], "bounded (64 MB)"))


if __name__ == "__main__":
    main()
