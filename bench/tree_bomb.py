"""The tree bomb: what a few objects naming ten million files cost the runner.

The agent commits a tree of 10 entries repeated 7 levels deep (`TREE_BOMB` of
tests/test_hostile_costs.py). The run is pushed and summarised as any run; this prints
the runner's own peak RSS (this process runs the engine, as a runner does), the largest
any of its children (git) reached, their CPU time and the wall time of the run.

Baseline: main before the bounds on host git (20f9581^), as 20f9581 measured it here for
10**7 files: a `git diff -M` child at 3,437 MB and 7 s of CPU (issue 18: 4.4 GB and about
35 s). Not rerun: it would take the memory of every test sharing this machine. Target:
the runner ≤ 300 MB.

    PYTHONPATH=. python bench/tree_bomb.py
"""

from __future__ import annotations

import os
import resource
import time

from bench.scratch import empty_repo, scratch, script_run
from runner.engine import EngineConfig, RunEngine
from runner.job import Resources
from tests.procwatch import ChildPeak, rss_bytes
from tests.test_hostile_costs import LEVELS, TREE_BOMB

MB = 1 << 20
BASELINE_CHILD_MB = 3437


def main() -> None:
    with scratch() as root:
        repo = empty_repo(root / "repo")
        engine = RunEngine(EngineConfig(cache_dir=root / "cache", runner_id="bench"))
        run = script_run(repo, "bomb", TREE_BOMB).model_copy(
            update={"timeout_s": 300, "resources": Resources(memory="256m", pids=128)}
        )
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.monotonic()
        with ChildPeak() as children:
            finished = engine.execute(run, lambda event: None)
        took = time.monotonic() - began
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    own = rss_bytes(os.getpid(), "VmHWM") / MB
    print(f"tree bomb: 10**{LEVELS} files, {finished.outcome.value}, "
          f"{finished.diff.files_changed:,} files counted")  # fmt: skip
    print(f"{'runner peak RSS':<28} {own:>8.1f} MB   target ≤ 300 MB")
    print(f"{'largest child':<28} {children.peak / MB:>8.1f} MB   baseline "
          f"{BASELINE_CHILD_MB} MB ({children.peak_name})")  # fmt: skip
    print(
        f"{'children CPU, run wall time':<28} {cpu:>6.1f} s / {took:.1f} s   "
        "baseline ~35 s for one git diff"
    )


if __name__ == "__main__":
    main()
