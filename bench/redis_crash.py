"""Redis killed mid-run, N times: how many crashes lost something, and what.

    PYTHONPATH=. python bench/redis_crash.py [N]   (N defaults to 10)

Starts the GitHub stand-in, a redis-server with `--appendonly yes --appendfsync always`,
`trimo serve` and `trimo runner` (real Docker, the `script` agent). Each round is the
scenario of tests/test_redis_restart.py: a run in flight, the next run of its pipeline
waiting, a run queued for a label no runner has and a dead letter; then `kill -9` of
Redis, 3 s down, the same server again from its append-only file. A round loses
something when a queued job, run event, pipeline run or dead letter is gone after the
restart, or when the run in flight and the one after it do not both succeed within 120 s.

Printed beside the count, the two ways the test used to fail, as baselines:
- rounds where the run had published nothing yet when the old test took its snapshot
  (each was a KeyError there: a race in the test, not a loss);
- rounds where the App held the run's report lock at the crash: before b925d40 the lock
  lasted 300 s and outlived a failed release, so each such round stalled the run's check
  runs for minutes; now it lasts RUN_LOCK_SECONDS and is renewed while held.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from app.reporting.reporter import RUN_LOCK_SECONDS
from tests.conftest import CORPORA
from tests.fakegithub import RunningFakeGitHub
from tests.loop_harness import Loop
from tests.redis_crash import AOF_ALWAYS, completed_checks, crash, losses, set_up_mid_run, snapshot
from tests.redis_servers import RedisProcess

FINISH_SECONDS = 120.0


def one_round(loop: Loop, server: RedisProcess, round_: int) -> tuple[list[str], bool, bool, float]:
    """(what was lost, App was reporting at the crash, run published late, recovery s)."""
    mid = set_up_mid_run(loop, server.url, round_)
    crash(server)
    back = time.monotonic()
    lost = losses(mid.before, snapshot(server.url))
    deadline = back + FINISH_SECONDS
    while time.monotonic() < deadline and len(completed_checks(loop, mid.number)) < 2:
        time.sleep(0.2)
    recovery = time.monotonic() - back
    checks = completed_checks(loop, mid.number)
    if checks != ["success", "success"]:
        lost.append(f"check runs of issue #{mid.number} after {recovery:.0f}s: {checks}")
    return lost, mid.reporting, mid.published_late, recovery


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", nargs="?", type=int, default=10, help="how many crashes")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="trimo-bench-redis-crash-"))
    server = RedisProcess(workdir / "redis", AOF_ALWAYS).start()
    lost_rounds: list[tuple[int, list[str]]] = []
    reporting = late = 0
    recoveries: list[float] = []
    try:
        with RunningFakeGitHub() as gh:
            loop = Loop(gh, server.url, workdir / "loop", CORPORA)
            loop.workdir.mkdir()
            loop.start()
            try:
                for round_ in range(1, args.n + 1):
                    lost, held, published_late, recovery = one_round(loop, server, round_)
                    reporting += held
                    late += published_late
                    recoveries.append(recovery)
                    if lost:
                        lost_rounds.append((round_, lost))
                    print(
                        f"round {round_}: {'LOST ' + '; '.join(lost) if lost else 'nothing lost'}"
                        f" (App reporting the run: {'yes' if held else 'no'}; both runs done "
                        f"{recovery:.1f}s after Redis was back)",
                        flush=True,
                    )
            finally:
                loop.stop()
    finally:
        server.stop()
    n = args.n
    print(
        f"\nkill -9 of Redis (appendfsync always) mid-run: {len(lost_rounds)} of {n} lost something"
    )
    for round_, lost in lost_rounds:
        print(f"  round {round_}: {'; '.join(lost)}")
    print(
        f"both runs done after Redis was back: p50 {statistics.median(recoveries):.1f}s, "
        f"max {max(recoveries):.1f}s"
    )
    print(
        f"baseline, the old test's snapshot: the run had published nothing yet in {late} of {n}"
        " (a KeyError each, a race in the test)"
    )
    print(
        f"baseline, the report lock: the App held it at the crash in {reporting} of {n}; "
        f"each held the run back up to 300 s before b925d40, {RUN_LOCK_SECONDS:.0f} s now"
    )


if __name__ == "__main__":
    main()
