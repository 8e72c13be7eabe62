"""From a `/trimo run --attempts 3` comment to the ranked table, beside three single runs of
the same prompt one after another.

    PYTHONPATH=. python bench/attempts.py [--rounds 3] [--sleep 2] [--github-delay 0]

Starts the GitHub stand-in, a private redis-server, `trimo serve` and `trimo runner`
(concurrency 3; real Docker, the `script` agent, one `verify:` check), then per round:
  - attempts: one comment asking for 3 attempts of a short script (it sleeps `--sleep`
    seconds, then commits), timed until the thread's table says "ranked";
  - one after another: three `/trimo run` comments of the same script on one issue (runs
    of one pipeline take turns), timed until the third run's check run completes.
Prints the median and the max of each, and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.loop_latency import CORPORA
from tests.fakegithub import RunningFakeGitHub
from tests.loop_harness import CONFIG, Loop
from tests.webhook_helpers import free_port

VERIFY = "verify:\n  - name: tests\n    run: test -s work.txt\n"


def script(seconds: float) -> str:
    return f"sleep {seconds} && date +%N > work.txt && git add -A && git commit -qm Work"


def ranked(loop: Loop, number: int) -> bool:
    return any("attempts ranked" in body for body in loop.bot_comments(number))


def completed_checks(loop: Loop, number: int) -> int:
    hint = f"widgets.{number}-"
    return sum(
        1 for c in loop.check_runs() if hint in (c.external_id or "") and c.status == "completed"
    )


def timed(done: Callable[[], bool], what: str, limit: float = 300) -> float:
    t0 = time.perf_counter()
    while not done():
        if time.perf_counter() - t0 > limit:
            raise AssertionError(f"{what} did not happen within {limit:.0f} s")
        time.sleep(0.02)
    return time.perf_counter() - t0


def summary(samples: list[float]) -> str:
    return f"median {statistics.median(samples):6.2f} s, max {max(samples):6.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sleep", type=float, default=2.0, help="seconds each script works")
    parser.add_argument("--github-delay", type=float, default=0.0)
    args = parser.parse_args()
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="trimo-bench-attempts-"))
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        with RunningFakeGitHub() as gh:
            loop = Loop(
                gh, f"redis://127.0.0.1:{port}/0", workdir, CORPORA,
                files={".github/trimo.yml": CONFIG + VERIFY},
            ).start()  # fmt: skip
            try:
                warm = loop.new_issue("warm up")
                loop.comment(warm, f"/trimo run {script(0)}")
                timed(lambda: completed_checks(loop, warm) == 1, "the warm-up run")
                loop.state.delay = args.github_delay
                together, in_turn = [], []
                for n in range(args.rounds):
                    number = loop.new_issue(f"attempts {n}")
                    loop.comment(number, f"/trimo run --attempts 3 {script(args.sleep)}")
                    together.append(
                        timed(lambda issue=number: ranked(loop, issue), "the ranked table")
                    )
                    number = loop.new_issue(f"in turn {n}")
                    t0 = time.perf_counter()
                    for _ in range(3):
                        loop.comment(number, f"/trimo run {script(args.sleep)}")
                    timed(lambda issue=number: completed_checks(loop, issue) == 3, "three runs")
                    in_turn.append(time.perf_counter() - t0)
                print(
                    f"3 runs of a {args.sleep:g} s script with one verify check, "
                    f"{args.rounds} rounds, GitHub answers after {args.github_delay * 1000:.0f} ms:"
                )
                print(f"  3 attempts, comment → ranked table:      {summary(together)}")
                print(f"  3 runs one after another, → third ended: {summary(in_turn)}")
                ratio = statistics.median(in_turn) / statistics.median(together)
                print(f"  attempts are {ratio:.2f}× faster than three runs in turn")
            finally:
                loop.stop()
    finally:
        redis.terminate()


if __name__ == "__main__":
    main()
