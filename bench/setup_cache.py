"""The setup cache: time to agent on a warm key beside a run without setup, a cold setup,
and the O(1) restore beside a plain copy of the same tree.

Setup writes a `node_modules` of DIRS x FILES files of SIZE bytes (300 MB in 30,000 files
by default). Each timed run is the first run of a new pipeline (a new workspace), from
`RunEngine.execute` to its agent's start; runs with and without setup alternate. The
restore is the setup cache's own step (the entry's image mounted read-only, an overlay per
path); the copy is `cp -a` of the same tree onto a pipeline's disk, what a restore by
copying would cost.

    sudo PYTHONPATH=. python bench/setup_cache.py [--repeat 5] [--dirs 300] [--files 100]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from pathlib import Path

from bench.scratch import empty_repo, scratch, script_run
from runner import disk
from runner.engine import EngineConfig, RunEngine
from runner.job import Outcome, RunEvent, RunStarted
from runner.setup import layers
from runner.setup.spec import SetupSpec

TARGET_SECONDS = 0.5


def tree_script(dirs: int, files: int, size: int) -> str:
    """Bash (perl is in every Debian image) that writes the tree into node_modules."""
    return (
        f'mkdir -p node_modules && perl -e \'for $d (1..{dirs}) {{ mkdir "node_modules/p$d";'
        f' for $f (1..{files}) {{ open(F, ">node_modules/p$d/f$f.js") or die;'
        f' print F "x" x {size}; close F }} }}\''
    )


def to_agent(engine: RunEngine, repo: Path, name: str, spec: SetupSpec | None) -> float:
    """Seconds from `execute` to the agent's start, for a new pipeline `name`."""
    request = script_run(repo, name, "true").model_copy(
        update={"pipeline": name, "branch": f"trimo/{name}", "setup": spec}
    )
    started: list[float] = []

    def on_event(event: RunEvent) -> None:
        if isinstance(event, RunStarted) and not started:
            started.append(time.perf_counter())

    t0 = time.perf_counter()
    finished = engine.execute(request, on_event)
    if finished.outcome is not Outcome.SUCCESS or not started:
        raise SystemExit(f"run {name} did not succeed: {finished.reason}")
    return started[0] - t0


def restore_and_copy(engine: RunEngine, root: Path) -> tuple[float, float]:
    """(seconds to restore the entry as overlays, seconds to `cp -a` the same tree)."""
    [(_, _, entry)] = engine.setup_cache.store.entries()
    place = root / "bench-disk"
    place.mkdir()
    with disk.mounted(place, engine.config.disk_bytes) as mounted:
        t0 = time.perf_counter()
        with layers.restored(entry, ["node_modules"], mounted / "scratch", None):
            restore = time.perf_counter() - t0
        lower = root / "lower"
        lower.mkdir()
        subprocess.run(
            ["mount", "-o", "ro,noload,loop", str(entry / disk.IMAGE_NAME), str(lower)], check=True
        )
        try:
            t0 = time.perf_counter()
            subprocess.run(["cp", "-a", str(lower / "layers" / "0"), str(mounted / "copy")],
                           check=True)  # fmt: skip
            copy = time.perf_counter() - t0
        finally:
            disk.unmount(lower)
    return restore, copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dirs", type=int, default=300)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--size", type=int, default=10_000)
    args = parser.parse_args()
    megabytes = args.dirs * args.files * args.size / 1e6
    with scratch() as root:
        repo = empty_repo(root / "repo")
        (repo / ".gitignore").write_text("node_modules/\n")
        (repo / "package-lock.json").write_text('{"lockfileVersion": 3}\n')
        subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
        subprocess.run(["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@b",
                        "commit", "-q", "-m", "lock"], check=True)  # fmt: skip
        spec = SetupSpec(
            run=tree_script(args.dirs, args.files, args.size),
            cache_key=["package-lock.json"],
            paths=["node_modules"],
            timeout_s=1800,
        )
        engine = RunEngine(EngineConfig(cache_dir=root / "cache", runner_id="bench-setup"))
        to_agent(engine, repo, "warmup", None)  # the mirror, the image in the page cache
        cold = to_agent(engine, repo, "cold", spec)
        bare, warm = [], []
        for n in range(args.repeat):
            bare.append(to_agent(engine, repo, f"bare{n}", None))
            warm.append(to_agent(engine, repo, f"warm{n}", spec))
        restore, copy = restore_and_copy(engine, root)
    base, hit = statistics.median(bare), statistics.median(warm)
    files = args.dirs * args.files
    print(f"node_modules: {megabytes:.0f} MB in {files:,} files; {args.repeat} runs each, medians")
    print(f"  time to agent, no setup (baseline)   {base:7.3f} s")
    print(f"  time to agent, warm setup cache      {hit:7.3f} s   "
          f"(+{hit - base:.3f} s; target +{TARGET_SECONDS} s)")  # fmt: skip
    print(f"  cold setup, first run on the key     {cold:7.3f} s   (time to agent)")
    print(f"  restore (read-only mount + overlay)  {restore * 1000:7.1f} ms")
    print(f"  plain copy of the same tree (cp -a)  {copy * 1000:7.1f} ms  "
          f"({copy / restore:.0f}x the restore)")  # fmt: skip
    print(f"  spread: no setup {min(bare):.3f}-{max(bare):.3f} s, "
          f"warm {min(warm):.3f}-{max(warm):.3f} s")  # fmt: skip


if __name__ == "__main__":
    main()
