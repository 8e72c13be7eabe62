"""From the agent's exit to its checks' result, beside the check command's own run time.

    PYTHONPATH=. python bench/verify.py [--image trimo-agent:base] [--repeat 5]

Each run's script agent commits, prints a mark and exits; its one check of `verify:` is
`true` (Trimo's cost alone) or `sleep 1` (a check that works). For each, the medians of:
the agent's exit (its mark) to the run's result; of that, the save and push (to the
`verifying` event) and the checks; the check's sandbox time (start to exit) and the
command's own time, measured inside. Baselines: the same run without verify (exit to
result), and a bare `docker run` of the command in the same image.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

import docker

from bench.scratch import empty_repo, scratch, script_run
from runner.engine import EngineConfig, RunEngine
from runner.job import RunEvent, VerifyCheck

MARK = "agent-exits-now"
OWN = re.compile(r"own=(\d+)ms")
CHECKS = {"true": "true", "sleep 1": "sleep 1"}


def timed_check(command: str) -> str:
    """`command`, printing how long it took itself (in the sandbox, after it started)."""
    return f's=$(date +%s%N); {command}; e=$(date +%s%N); echo "own=$(( (e - s) / 1000000 ))ms"'


def one_run(
    engine: RunEngine, repo: Path, image: str, n: int, command: str | None
) -> dict[str, float]:
    prompt = f"echo {n} >> n.txt && git add n.txt && git commit -qm 'n {n}' && echo {MARK}"
    request = script_run(repo, f"bench-verify-{n}", prompt, image)
    if command is not None:
        request = request.model_copy(
            update={"verify": [VerifyCheck(name="check", run=timed_check(command))]}
        )
    seen: dict[str, float] = {}

    def on_event(event: RunEvent) -> None:
        now = time.perf_counter()
        if MARK in getattr(event, "line", "") or MARK in getattr(event, "text", ""):
            seen.setdefault("exit", now)
        elif event.type == "verifying":
            seen["verifying"] = now

    finished = engine.execute(request, on_event)
    done = time.perf_counter()
    figures = {"exit_to_result": done - seen["exit"]}
    if command is not None:
        report = finished.verify
        assert report is not None and report.passed, finished.reason
        check = report.checks[0]
        own = OWN.search(check.log_tail)
        figures |= {
            "save": seen["verifying"] - seen["exit"],
            "checks": done - seen["verifying"],
            "sandbox": check.seconds,
            "own": int(own.group(1)) / 1000 if own else float("nan"),
        }
    return figures


def bare_docker(client: docker.DockerClient, image: str, command: str) -> float:
    t0 = time.perf_counter()
    container = client.containers.run(
        image, ["bash", "-c", command], detach=True, network_mode="none",
        cap_drop=["ALL"], security_opt=["no-new-privileges"], user="1000:1000", init=True,
        mem_limit="1g", pids_limit=256,
    )  # fmt: skip
    container.wait()
    elapsed = time.perf_counter() - t0
    container.remove(force=True)
    return elapsed


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", default="trimo-agent:base")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    client = docker.from_env()
    with scratch() as root:
        repo = empty_repo(root / "repo")
        engine = RunEngine(EngineConfig(cache_dir=root / "cache"), client)
        one_run(engine, repo, args.image, 0, "true")  # warm: mirror, workspace, disk
        counter = iter(range(1, 10_000))
        plain = [one_run(engine, repo, args.image, next(counter), None) for _ in range(args.repeat)]
        print(f"{args.repeat} runs each; medians.")
        print(f"no verify:  agent exit → result {median(plain, 'exit_to_result'):.3f} s (baseline)")
        for label, command in CHECKS.items():
            runs = [
                one_run(engine, repo, args.image, next(counter), command)
                for _ in range(args.repeat)
            ]
            bare = statistics.median(
                bare_docker(client, args.image, command) for _ in range(args.repeat)
            )
            print(
                f"check `{label}`: agent exit → result {median(runs, 'exit_to_result'):.3f} s "
                f"(save and push {median(runs, 'save'):.3f} s, checks {median(runs, 'checks'):.3f}"
                f" s) · check's sandbox {median(runs, 'sandbox'):.3f} s · command's own "
                f"{median(runs, 'own'):.3f} s · bare docker run {bare:.3f} s"
            )


if __name__ == "__main__":
    main()
