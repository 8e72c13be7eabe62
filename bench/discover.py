"""What a discovery run costs, beside a coding run, on a 20,000-file repository.

A discovery run is read-only: nothing is exported or pushed at its end, and its workspace
is thrown away, so the next run makes a fresh one from the mirror. This prints, per kind
of run, the whole run (`RunEngine.execute` to its end), and the next coding run's time to
agent start (workspace ready): after a discovery run beside after a coding run.

    PYTHONPATH=. python bench/discover.py [--files 20000] [--commits 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import docker

from bench.scratch import scratch, script_run
from bench.workspace_ready import follow_up, make_repo
from runner.engine import EngineConfig, RunEngine
from runner.job import Outcome, RunEvent

PLAN = "echo edit > src/d000/file00000.txt; printf '## Plan\\n1. Do it\\n'"


def whole_run(engine: RunEngine, repo: Path, image: str, run_id: str, discover: bool) -> float:
    request = script_run(repo, run_id, PLAN if discover else "true", image)
    request = request.model_copy(update={"mode": "discover" if discover else "code"})
    t0 = time.perf_counter()

    def ignore(_event: RunEvent) -> None:
        return None

    finished = engine.execute(request, ignore)
    if finished.outcome is not Outcome.SUCCESS:
        raise SystemExit(f"the run failed: {finished.reason}")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--commits", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--image", default="trimo-agent:base")
    args = parser.parse_args()

    client = docker.from_env()
    with scratch() as root:
        repo = root / "repo"
        make_repo(repo, args.files, args.commits)
        engine = RunEngine(EngineConfig(cache_dir=root / "cache"), client)
        follow_up(engine, repo, args.image, 0, "echo a > a.txt")  # the pipeline exists

        code_runs, code_next, discover_runs, discover_next = [], [], [], []
        for n in range(args.repeat):
            code_runs.append(whole_run(engine, repo, args.image, f"code-{n}", discover=False))
            code_next.append(follow_up(engine, repo, args.image, 100 + n))
            discover_runs.append(whole_run(engine, repo, args.image, f"disc-{n}", discover=True))
            discover_next.append(follow_up(engine, repo, args.image, 200 + n))

        def line(label: str, samples: list[float]) -> str:
            median = statistics.median(samples)
            return f"{label:<52} median {median:6.3f} s, max {max(samples):.3f} s"

        print(f"repository: {args.files} files, {args.commits} commits; {args.repeat} runs each")
        print(line("coding run that changes nothing, whole run:", code_runs))
        print(line("discovery run, whole run:", discover_runs))
        print(line("next run → agent starts, after a coding run:", code_next))
        print(line("next run → agent starts, after a discovery run:", discover_next))


if __name__ == "__main__":
    main()
