"""From a signed webhook arriving to the check run showing "in progress", whole loop.

    PYTHONPATH=. python bench/loop_latency.py [--runs 20]

Starts the GitHub stand-in, a private redis-server, `trimo serve` and `trimo
runner` (real Docker, the `script` agent), then for each run posts a signed
`/trimo run` comment on a new issue and times the moment the stand-in receives
the check-run update with status in_progress. Prints p50 and p95.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tests.fakegithub import RunningFakeGitHub
from tests.loop_harness import Loop
from tests.webhook_helpers import free_port

CORPORA = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora"


def in_progress_seen(loop: Loop, number: int) -> bool:
    hint = f"widgets.{number}-"
    ids = {c.id for c in loop.check_runs() if hint in (c.external_id or "")}
    return any(
        (r.json or {}).get("status") == "in_progress" and int(r.path.rsplit("/", 1)[1]) in ids
        for r in loop.state.requests_to("PATCH", r"/check-runs/\d+$")
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
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
                samples = []
                for n in range(args.runs):
                    number = loop.new_issue(f"bench {n}")
                    t0 = time.perf_counter()
                    loop.comment(number, "/trimo run echo hello")
                    loop.wait(lambda n=number: in_progress_seen(loop, n), 60, "in progress")
                    samples.append(time.perf_counter() - t0)
                    time.sleep(0.5)
                ordered = sorted(samples)
                p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
                print(
                    f"signed webhook → check run in progress, {args.runs} runs: "
                    f"p50 {statistics.median(samples):.3f} s, p95 {p95:.3f} s, "
                    f"max {max(samples):.3f} s"
                )
            finally:
                loop.stop()
    finally:
        redis.terminate()


if __name__ == "__main__":
    main()
