"""From a signed webhook arriving to 👀 and to the check run showing "in progress".

    PYTHONPATH=. python bench/loop_latency.py [--runs 20] [--github-delay 0.2]

Starts the GitHub stand-in, a private redis-server, `trimo serve` and `trimo runner`
(real Docker, the `script` agent), then for each run posts a signed `/trimo run` comment
on a new issue and times the moment the stand-in has the 👀 reaction and the check-run
update with status in_progress. Prints p50, p95 and max of both beside the figures before
the run was queued after one round trip, the load average, and the GitHub API calls of
the last run up to in progress, in order, each with when it was answered.
`--github-delay` makes the stand-in wait that long before every API answer (200 ms is
typical of github.com).

Each comment waits until the run before it is fully reported (its check run completed,
no event or channel update left), so the calls listed are its own, and until the
installation's write budget has room for a run's writes. GitHub allows an installation
80 content-creating requests a minute (`app.reporting.budget`); a bench that posts a run
every two seconds asks for more, and what it then times is the budget's wait (up to a
minute), not the loop. The time spent waiting between runs is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from functools import partial
from pathlib import Path

import redis

from app.reporting.budget import WINDOW_PREFIX, Limits
from app.reporting.owed import OWED
from app.reporting.reporter import GROUP
from runner.contract import ALL_RUN_EVENTS
from tests.fakegithub import RecordedRequest, RunningFakeGitHub
from tests.loop_harness import Loop
from tests.webhook_helpers import free_port

CORPORA = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora"
if not CORPORA.is_dir():  # a worktree elsewhere: as tests/conftest.py
    CORPORA = Path(os.environ.get("TRIMO_CORPORA", "/work/shared/corpora"))
BASELINE = {
    "👀": "p50 0.726 s, p95 0.888 s, max 1.077 s",
    "in progress": "p50 1.898 s, p95 8.026 s, max 18.654 s",
}
"""200 ms, 20 runs, before the run was queued after one round trip (load 1.9-3.6), by this
bench before it waited for the write budget: its max is such a wait. Paced like now, the
code of then gave 👀 p50 0.890 s, in progress p50 3.500 s, max 4.651 s at load 15."""
RUN_WRITES = 10
"""Room left in the minute's write budget before the next comment (a run takes 5-8)."""


def in_progress_seen(loop: Loop, number: int, since: int = 0) -> bool:
    hint = f"widgets.{number}-"
    ids = {c.id for c in loop.check_runs() if hint in (c.external_id or "")}
    with loop.state.lock:
        recent = loop.state.requests[since:]
    return any(
        r.method == "PATCH"
        and r.path.rsplit("/", 1)[0].endswith("/check-runs")
        and (r.json or {}).get("status") == "in_progress"
        and int(r.path.rsplit("/", 1)[1]) in ids
        for r in recent
    )


def eyes_seen(loop: Loop, comment_id: int) -> bool:
    return "eyes" in loop.reactions(comment_id)


def settled(loop: Loop, client: redis.Redis, number: int) -> bool:
    """The run on issue `number` is over and fully reported: its check run completed, no
    event left to report, no channel owed an update."""
    hint = f"widgets.{number}-"
    checks = [c for c in loop.check_runs() if hint in (c.external_id or "")]
    if not checks or any(c.status != "completed" for c in checks):
        return False
    pending = client.xpending(ALL_RUN_EVENTS, GROUP)["pending"]
    return int(pending) == 0 and int(client.zcard(OWED)) == 0


def budget_room(client: redis.Redis, installation_id: int) -> bool:
    """Whether the installation's last minute of writes leaves room for a run's."""
    used = client.zcount(f"{WINDOW_PREFIX}{installation_id}", time.time() - 60, "+inf")
    return int(used) + RUN_WRITES <= Limits().per_minute


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(samples):.3f} s, p95 {p95:.3f} s, max {max(samples):.3f} s"


def listed(calls: list[RecordedRequest], t0: float) -> list[str]:
    return [f"+{r.at - t0:5.2f} s  {r.method} {r.path}" for r in calls]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--github-delay", type=float, default=0.0, help="seconds before each API answer"
    )
    args = parser.parse_args()
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="trimo-bench-"))
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    client = redis.Redis(port=port)
    load_before = os.getloadavg()[0]
    try:
        with RunningFakeGitHub() as gh:
            loop = Loop(gh, f"redis://127.0.0.1:{port}/0", workdir, CORPORA).start()
            try:
                warm = loop.new_issue("warm up")
                loop.comment(warm, "/trimo run echo warm")
                loop.wait(lambda: settled(loop, client, warm), 60, "the warm-up run")
                loop.state.delay = args.github_delay
                eyes, in_progress, calls, waited = [], [], [], 0.0
                previous = warm
                for n in range(args.runs):
                    began = time.monotonic()
                    loop.wait(partial(settled, loop, client, previous), 60, "the last run's end")
                    loop.wait(lambda: budget_room(client, loop.creds.installation_id), 70, "room")
                    waited += time.monotonic() - began
                    number = loop.new_issue(f"bench {n}")
                    before = len(loop.state.requests)
                    t0 = time.monotonic()
                    comment = loop.comment(number, "/trimo run echo hello")
                    seen_eyes: float | None = None
                    while not in_progress_seen(loop, number, before):
                        if seen_eyes is None and eyes_seen(loop, comment.id):
                            seen_eyes = time.monotonic() - t0
                        if time.monotonic() - t0 > 60:
                            raise AssertionError(f"run {n} never showed in progress")
                        time.sleep(0.01)
                    in_progress.append(time.monotonic() - t0)
                    eyes.append(seen_eyes if seen_eyes is not None else in_progress[-1])
                    with loop.state.lock:
                        calls = listed(loop.state.requests[before:], t0)
                    previous = number
                load = f"load {load_before:.1f} → {os.getloadavg()[0]:.1f}"
                print(f"GitHub answers after {args.github_delay * 1000:.0f} ms, {args.runs} runs"
                      f" ({load}; {waited:.0f} s waited between runs):")  # fmt: skip
                print(f"  signed webhook → 👀:                     {percentiles(eyes)}")
                print(f"    before:                                {BASELINE['👀']}")
                print(f"  signed webhook → check run in progress: {percentiles(in_progress)}")
                print(f"    before:                                {BASELINE['in progress']}")
                print(f"  API calls of the last run up to in progress ({len(calls)}), answered at:")
                for call in calls:
                    print(f"    {call}")
            finally:
                loop.stop()
    finally:
        client.close()
        server.terminate()


if __name__ == "__main__":
    main()
