"""The cost of the sandbox boundary: how long the agent's work takes to reach the remote.

Two figures, each over REPEAT runs of the script agent in a small repository:

- agent exit → pushed: the agent writes a file and exits; from its last output
  line to the `finished` event (a helper sandbox commits and bundles the work,
  the host verifies the bundle, pushes and summarises);
- commit → pushed while running: the agent commits, says so, and keeps running;
  from that line to the `pushed` event (docker exec bundles every push interval).

The baseline is this same script run on the tree before the boundary (346facf,
host git on the workspace), on this machine: exit → pushed median 0.142 s,
commit → pushed median 2.034 s.

    PYTHONPATH=. python bench/handoff.py [--repeat 10] [--interval 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from bench.scratch import empty_repo, scratch, script_run
from runner.engine import EngineConfig, RunEngine
from runner.job import Pushed, RunEvent, RunFinished, RunRequest

EXIT_MARK = "agent-exits-now"
COMMIT_MARK = "agent-committed-now"


def request(repo: Path, n: int, prompt: str) -> RunRequest:
    return script_run(repo, f"bench-{n}", prompt)


def time_between(engine: RunEngine, run: RunRequest, mark: str, until: type) -> float:
    seen: dict[str, float] = {}

    def on_event(event: RunEvent) -> None:
        now = time.perf_counter()
        if mark in getattr(event, "text", "") and "mark" not in seen:
            seen["mark"] = now
        if isinstance(event, until) and "until" not in seen:
            seen["until"] = now

    finished = engine.execute(run, on_event)
    if "mark" not in seen or "until" not in seen:
        raise SystemExit(f"the run did not go as planned: {finished.reason}")
    return seen["until"] - seen["mark"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--interval", type=float, default=2.0)
    args = parser.parse_args()
    with scratch() as root:
        repo = root / "repo"
        empty_repo(repo)
        engine = RunEngine(
            EngineConfig(cache_dir=root / "cache", push_interval_seconds=args.interval)
        )
        exits = [
            time_between(
                engine,
                request(repo, n, f"echo {n} > exit.txt; echo {EXIT_MARK}"),
                EXIT_MARK,
                RunFinished,
            )
            for n in range(args.repeat)
        ]
        commits = [
            time_between(
                engine,
                request(
                    repo,
                    100 + n,
                    f"echo {n} > c.txt && git add c.txt && git commit -qm c{n} "
                    f"&& echo {COMMIT_MARK}; sleep {args.interval * 2 + 1}",
                ),
                COMMIT_MARK,
                Pushed,
            )
            for n in range(args.repeat)
        ]
        print(f"{'':34} {'median':>8} {'max':>8}")
        print(
            f"{'agent exit → pushed and summarised':34} "
            f"{statistics.median(exits):8.3f} {max(exits):8.3f}"
        )
        print(
            f"{'commit → pushed while running':34} "
            f"{statistics.median(commits):8.3f} {max(commits):8.3f}"
            f"   (push interval {args.interval:g} s; the goal is ≤ 5 s)"
        )
        print("before the boundary (346facf): exit → pushed 0.142 s; commit → pushed 2.034 s")


if __name__ == "__main__":
    main()
