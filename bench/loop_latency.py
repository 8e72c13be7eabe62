"""From a signed webhook arriving to 👀 and to the check run showing "in progress".

    PYTHONPATH=. python bench/loop_latency.py [--runs 20] [--github-delay 0.2]

Starts the GitHub stand-in, a private redis-server, `trimo serve` and `trimo
runner` (real Docker, the `script` agent), then for each run posts a signed
`/trimo run` comment on a new issue and times the moment the stand-in has the
👀 reaction and the check-run update with status in_progress. Prints p50 and
p95 of both, and the GitHub API calls made on the way to in progress, in order.
`--github-delay` makes the stand-in wait that long before every API answer
(200 ms is typical of github.com); sequential round trips ≈ the added latency
divided by the delay.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tests.fakegithub import RunningFakeGitHub
from tests.loop_harness import Loop
from tests.webhook_helpers import free_port

CORPORA = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora"
if not CORPORA.is_dir():  # a worktree elsewhere: as tests/conftest.py
    CORPORA = Path(os.environ.get("TRIMO_CORPORA", "/work/shared/corpora"))


def in_progress_seen(loop: Loop, number: int) -> bool:
    hint = f"widgets.{number}-"
    ids = {c.id for c in loop.check_runs() if hint in (c.external_id or "")}
    return any(
        (r.json or {}).get("status") == "in_progress" and int(r.path.rsplit("/", 1)[1]) in ids
        for r in loop.state.requests_to("PATCH", r"/check-runs/\d+$")
    )


def eyes_seen(loop: Loop, comment_id: int) -> bool:
    return "eyes" in loop.reactions(comment_id)


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(samples):.3f} s, p95 {p95:.3f} s, max {max(samples):.3f} s"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--github-delay", type=float, default=0.0, help="seconds before each API answer"
    )
    args = parser.parse_args()
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="trimo-bench-"))
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    try:
        with RunningFakeGitHub() as gh:
            loop = Loop(gh, f"redis://127.0.0.1:{port}/0", workdir, CORPORA).start()
            try:
                warm = loop.new_issue("warm up")
                loop.comment(warm, "/trimo run echo warm")
                loop.wait(lambda: in_progress_seen(loop, warm), 60, "warm-up run")
                loop.state.delay = args.github_delay
                eyes, in_progress, calls = [], [], []
                for n in range(args.runs):
                    number = loop.new_issue(f"bench {n}")
                    before = len(loop.state.requests)
                    t0 = time.perf_counter()
                    comment = loop.comment(number, "/trimo run echo hello")
                    seen_eyes: float | None = None
                    while not in_progress_seen(loop, number):
                        if seen_eyes is None and eyes_seen(loop, comment.id):
                            seen_eyes = time.perf_counter() - t0
                        if time.perf_counter() - t0 > 60:
                            raise AssertionError(f"run {n} never showed in progress")
                        time.sleep(0.01)
                    in_progress.append(time.perf_counter() - t0)
                    eyes.append(seen_eyes if seen_eyes is not None else in_progress[-1])
                    calls = [f"{r.method} {r.path}" for r in loop.state.requests[before:]]
                    time.sleep(0.5)
                print(f"GitHub answers after {args.github_delay * 1000:.0f} ms, {args.runs} runs:")
                print(f"  signed webhook → 👀:                      {percentiles(eyes)}")
                print(f"  signed webhook → check run in progress: {percentiles(in_progress)}")
                print(f"  API calls of the last run up to in progress ({len(calls)}):")
                for call in calls:
                    print(f"    {call}")
            finally:
                loop.stop()
    finally:
        redis.terminate()


if __name__ == "__main__":
    main()
