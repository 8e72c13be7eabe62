"""Scale-out: many runs on several runner processes sharing one Redis, every part real.

    PYTHONPATH=. .venv/bin/python bench/scale_out.py [--repos 20] [--issues 2] [--runs 5]
        [--runners 4] [--workers 2] [--concurrency 2] [--no-baseline]

The fleet of tests/scale_out.py (the GitHub stand-in, `trimo serve`, more `trimo worker`s,
`trimo runner`s standing in for machines with mixed labels, real Docker and the `script`
agent): every run's comment is posted at once, then the bench waits for every check run to
end. It prints the throughput (runs a minute, first webhook to the last run recorded as ended
in its pipeline) and the
wait from queued on a runner queue to started (p50, p95), beside the same runs on one runner
process with every label (the baseline: one machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from tests.conftest import CORPORA
from tests.fakegithub import RunningFakeGitHub
from tests.loop_harness import Loop
from tests.redis_servers import RedisProcess
from tests.scale_out import LABELS, MACHINES, Figures, Fleet, Machine, Plan, figures, percentile

CHECKS_SECONDS = 60.0


def measure(plan: Plan, workdir: Path) -> Figures:
    """Run `plan` on a fleet of its own (a fresh Redis, stand-in and processes)."""
    workdir.mkdir(parents=True)
    server = RedisProcess(workdir / "redis").start()
    try:
        with RunningFakeGitHub() as gh:
            fleet = Fleet(Loop(gh, server.url, workdir, CORPORA), plan).start()
            try:
                began = time.monotonic()
                submit_s = fleet.submit()
                facts = fleet.loop.wait(
                    lambda: fleet.facts_when_all_ended(plan.runs), 3600, "every run to end"
                )
                wall_s = time.monotonic() - began
                try:  # the reporter completes the last check runs a moment after
                    fleet.loop.wait(
                        lambda: fleet.completed_checks() >= plan.runs, CHECKS_SECONDS, "checks"
                    )
                except AssertionError:
                    open_checks = plan.runs - fleet.completed_checks()
                    print(f"  ! {open_checks} check run(s) not completed {CHECKS_SECONDS:g} s "
                          "after the last run ended", flush=True)  # fmt: skip
                return figures(facts, submit_s, wall_s, fleet.redelivered)
            finally:
                fleet.stop()
    finally:
        server.stop()


def line(name: str, figures_: Figures) -> str:
    waits = figures_.waits
    return (
        f"  {name:<24} {figures_.runs_per_minute:7.1f} runs/min   "
        f"queued→started p50 {percentile(waits, 0.5):6.2f} s  p95 {percentile(waits, 0.95):6.2f} s"
        f"   run p50 {percentile(figures_.durations, 0.5):5.2f} s"
        f"   ({figures_.runs} runs in {figures_.wall_s:.0f} s; webhooks posted in "
        f"{figures_.submit_s:.1f} s, {figures_.redelivered} redelivered)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repos", type=int, default=20)
    parser.add_argument("--issues", type=int, default=2, help="issues (pipelines) per repository")
    parser.add_argument("--runs", type=int, default=5, help="runs per issue")
    parser.add_argument("--runners", type=int, default=len(MACHINES))
    parser.add_argument("--workers", type=int, default=2, help="App worker processes")
    parser.add_argument("--concurrency", type=int, default=2, help="runs at once per runner")
    parser.add_argument("--no-baseline", action="store_true", help="skip the one-runner run")
    args = parser.parse_args()
    machines = tuple(
        Machine(f"machine-{n + 1}", MACHINES[n % len(MACHINES)].labels) for n in range(args.runners)
    )
    plan = Plan(
        repos=args.repos,
        issues_per_repo=args.issues,
        runs_per_issue=args.runs,
        app_workers=args.workers,
        concurrency=args.concurrency,
        machines=machines,
    )
    with tempfile.TemporaryDirectory(prefix="trimo-bench-scale-") as tmp:
        fleet = measure(plan, Path(tmp) / "fleet")
        baseline = None
        if not args.no_baseline:
            one = dataclasses.replace(plan, machines=(Machine("machine-1", LABELS),))
            baseline = measure(one, Path(tmp) / "baseline")
    print(
        f"{plan.runs} script runs over {plan.repos} repositories, {plan.app_workers} App "
        f"worker(s), {args.concurrency} run(s) at once per runner:"
    )
    print(line(f"{args.runners} runners", fleet))
    if baseline is not None:
        print(line("1 runner (baseline)", baseline))


if __name__ == "__main__":
    main()
