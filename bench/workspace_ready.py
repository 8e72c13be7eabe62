"""How long until a follow-up run's workspace is ready, beside a fresh `git clone`.

Builds a repository of FILES files and COMMITS commits with git fast-import, runs
one pipeline once through the engine (mirror, pipeline disk, workspace), then
times follow-up runs from `RunEngine.execute` to the moment the agent starts:
mirror fetch, the pipeline's disk mounted, the update bundle (when the branch
moved) and, inside the sandbox, checkout of the pipeline branch. A bare
`docker run` of the same image is printed beside it, since the checkout now
happens inside the agent's container.

    PYTHONPATH=. python bench/workspace_ready.py [--files 20000] [--commits 5000] [--repeat 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from pathlib import Path

import docker

from bench.scratch import scratch, script_run
from runner.engine import EngineConfig, RunEngine
from runner.job import RunEvent, RunStarted


def make_repo(path: Path, files: int, commits: int) -> None:
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    lines: list[str] = []
    stamp = 1_700_000_000

    def commit(n: int, changes: list[tuple[str, str]]) -> None:
        lines.append("commit refs/heads/main")
        lines.append(f"committer Bench <bench@example.com> {stamp + n} +0000")
        message = f"commit {n}"
        lines.append(f"data {len(message)}")
        lines.append(message)
        for name, body in changes:
            data = body.encode()
            lines.append(f"M 644 inline {name}")
            lines.append(f"data {len(data)}")
            lines.append(body)

    commit(0, [(f"src/d{i // 500:03d}/file{i:05d}.txt", f"file {i}\n") for i in range(files)])
    for n in range(1, commits):
        i = (n * 7919) % files
        commit(n, [(f"src/d{i // 500:03d}/file{i:05d}.txt", f"file {i} v{n}\n")])
    stream = ("\n".join(lines) + "\n").encode()
    subprocess.run(["git", "fast-import", "--quiet"], cwd=path, input=stream, check=True)
    subprocess.run(["git", "checkout", "-q", "-f", "main"], cwd=path, check=True)


def follow_up(engine: RunEngine, repo: Path, image: str, n: int, prompt: str = "true") -> float:
    """Seconds from `execute` to the agent's start (the workspace is ready then)."""
    request = script_run(repo, f"bench-{n}", prompt, image)
    ready: list[float] = []
    t0 = time.perf_counter()

    def on_event(event: RunEvent) -> None:
        if isinstance(event, RunStarted) and not ready:
            ready.append(time.perf_counter() - t0)

    finished = engine.execute(request, on_event)
    if not ready:
        raise SystemExit(f"the run did not start: {finished.reason}")
    return ready[0]


def bare_docker(client: docker.DockerClient, image: str) -> float:
    t0 = time.perf_counter()
    client.containers.run(image, ["true"], remove=True, network_mode="none", user="1000:1000")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--commits", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--image", default="trimo-agent:base")
    args = parser.parse_args()

    client = docker.from_env()
    with scratch() as root:
        repo = root / "repo"
        t0 = time.perf_counter()
        make_repo(repo, args.files, args.commits)
        built = time.perf_counter() - t0
        print(f"repository: {args.files} files, {args.commits} commits ({built:.1f}s to build)")

        t0 = time.perf_counter()
        subprocess.run(
            ["git", "clone", "-q", "--no-local", str(repo), str(root / "clone")], check=True
        )
        clone_s = time.perf_counter() - t0

        engine = RunEngine(EngineConfig(cache_dir=root / "cache"), client)
        first_s = follow_up(engine, repo, args.image, 0, "echo a > a.txt")
        samples = [follow_up(engine, repo, args.image, n + 1) for n in range(args.repeat)]
        moved = [
            follow_up(engine, repo, args.image, 100 + n, f"echo {n} > n.txt")
            for n in range(args.repeat)
        ]
        bare = [bare_docker(client, args.image) for _ in range(args.repeat)]
        print(f"fresh `git clone` of the repository:            {clone_s:6.3f} s")
        print(f"first run of a pipeline → agent starts:         {first_s:6.3f} s")
        print(
            f"follow-up → agent starts (workspace ready): median {statistics.median(samples):.3f}"
            f" s, max {max(samples):.3f} s over {args.repeat} runs"
        )
        print(
            f"  after a run that committed (branch moved):    median {statistics.median(moved):.3f}"
            f" s, max {max(moved):.3f} s"
        )
        print(f"bare `docker run … true` of the image: median {statistics.median(bare):.3f} s")
        print("before the sandbox boundary (host-side fetch+checkout+chown): median 0.15 s")


if __name__ == "__main__":
    main()
