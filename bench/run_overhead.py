"""From `trimo run` to the agent's first output, beside a bare `docker run` of the same image.

    PYTHONPATH=. python bench/run_overhead.py [--image trimo-agent:base] [--repeat 10]

Prints medians for: a bare docker-py run (create, start, first output line);
the engine (`RunEngine.execute`, workspace of an existing pipeline); and the
whole `trimo run` command (a new process, imports included). The ratios are
Trimo's overhead.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import docker

from bench.scratch import empty_repo, scratch, script_run
from runner.contract import NetworkMode
from runner.engine import EngineConfig, RunEngine
from runner.job import RunEvent

MARK = "first-output-mark"


def bare_docker(client: docker.DockerClient, image: str) -> float:
    t0 = time.perf_counter()
    container = client.containers.run(
        image, ["bash", "-c", f"echo {MARK}"], detach=True, network_mode="none",
        cap_drop=["ALL"], security_opt=["no-new-privileges"], user="1000:1000", init=True,
        mem_limit="1g", pids_limit=256,
    )  # fmt: skip
    for chunk in container.logs(stream=True, follow=True):
        if MARK.encode() in chunk:
            break
    elapsed = time.perf_counter() - t0
    container.remove(force=True)
    return elapsed


def engine_run(
    engine: RunEngine, repo: Path, image: str, n: int, network: NetworkMode = "none"
) -> float:
    request = script_run(repo, f"bench-{network}-{n}", f"echo {MARK}", image, network)
    first: list[float] = []
    t0 = time.perf_counter()

    def on_event(event: RunEvent) -> None:
        if not first and MARK in getattr(event, "text", ""):
            first.append(time.perf_counter() - t0)

    engine.execute(request, on_event)
    return first[0]


def cli_run(repo: Path, cache: Path, image: str) -> float:
    env = {**os.environ, "TRIMO_CACHE_DIR": str(cache), "TERM": "dumb", "TRIMO_NETWORK": "none"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.ops.cli", "run", "--repo", str(repo), "--pipeline", "cli",
         "--agent", "script", "--image", image, f"echo {MARK}"],
        stdout=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    elapsed = float("nan")
    for line in proc.stdout:
        if MARK.encode() in line:
            elapsed = time.perf_counter() - t0
            break
    proc.wait()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", default="trimo-agent:base")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    client = docker.from_env()
    with scratch() as root:
        repo = root / "repo"
        empty_repo(repo)
        engine = RunEngine(EngineConfig(cache_dir=root / "cache"), client)
        engine_run(engine, repo, args.image, 0)  # warm: mirror, workspace, disk
        engine_run(engine, repo, args.image, 0, "allowlist")  # warm: the egress proxy
        cli_run(repo, root / "cache", args.image)
        bare = [bare_docker(client, args.image) for _ in range(args.repeat)]
        eng = [engine_run(engine, repo, args.image, n + 1) for n in range(args.repeat)]
        allow = [
            engine_run(engine, repo, args.image, n + 1, "allowlist") for n in range(args.repeat)
        ]
        cli = [cli_run(repo, root / "cache", args.image) for _ in range(args.repeat)]
        b, e, c = statistics.median(bare), statistics.median(eng), statistics.median(cli)
        a = statistics.median(allow)
        print(f"bare docker run → first output:          median {b:.3f} s")
        print(f"trimo engine, network none → first output: median {e:.3f} s  ({e / b:.2f}× bare)")
        print(f"trimo engine, allowlist → first output:    median {a:.3f} s  ({a / b:.2f}× bare)")
        print(f"`trimo run` command → first output:      median {c:.3f} s  ({c / b:.2f}× bare)")


if __name__ == "__main__":
    main()
