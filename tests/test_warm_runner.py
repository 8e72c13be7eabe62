"""A runner's runs after its first start in sandboxes it started ahead (runner.warm), on
`allowlist` with their own proxy, and deliver their work; each sandbox serves one run. When
the runner stops, the sandboxes it kept and their directories' tmpfs are gone (real runner,
Docker, Redis and git)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from runner.container import LABEL_RUNNER
from runner.job import Outcome, RunRequest
from runner.warm.box import LABEL_WARM
from runner.warm.pool import warm_dir
from tests.conftest import git, unique
from tests.engine_helpers import make_request
from tests.runner_helpers import RunnerProcess, enqueue, finished_of, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.redis]

SCRIPT = 'test -n "$HTTPS_PROXY" && echo has-its-proxy; echo "$RANDOM" > warm-$TRIMO_N.txt'


def boxes(client: docker.DockerClient, runner_id: str) -> list[str]:
    found = client.containers.list(
        sparse=True, filters={"label": [f"{LABEL_RUNNER}={runner_id}", f"{LABEL_WARM}=1"]}
    )
    return sorted(str(c.attrs["Names"][0]).lstrip("/") for c in found)


def until(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_runs_start_in_sandboxes_started_ahead_and_each_serves_one(
    sample_repo: Path, tmp_path: Path, redis_url: str, docker_client: docker.DockerClient
) -> None:
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(sample_repo), str(origin)], check=True)
    runner_id = unique("runner-warm")
    cache = tmp_path / "cache"
    runner = RunnerProcess(redis_url, cache, runner_id, "default", concurrency=2).start()
    try:

        def run(n: int) -> RunRequest:
            return make_request(
                origin, SCRIPT, pipeline=f"warm{n}", network="allowlist",
                secrets={"TRIMO_N": f"number{n}"},
            )  # fmt: skip

        first = run(0)
        enqueue(redis_url, first)
        found = wait_for(redis_url, first.run_id, "finished", timeout=180)
        assert finished_of(found).outcome == Outcome.SUCCESS
        until(lambda: len(boxes(docker_client, runner_id)) == 2, "no sandboxes started ahead")
        ready = boxes(docker_client, runner_id)

        both = [run(1), run(2)]
        for request in both:
            enqueue(redis_url, request)
        for n, request in enumerate(both, start=1):
            found = wait_for(redis_url, request.run_id, "finished", timeout=180)
            assert finished_of(found).outcome == Outcome.SUCCESS, found
            assert any("has-its-proxy" in getattr(e, "text", "") for e in found)
            branch = f"trimo/warm{n}"
            assert git(origin, "show", f"{branch}:warm-number{n}.txt").strip().isdigit()
        log = runner.log.read_text()
        used = {name for name in ready if f"in {name}, started ahead" in log}
        assert len(used) == 2, "both runs took a sandbox started ahead"
        assert not used & set(boxes(docker_client, runner_id)), "a sandbox served two runs"
    finally:
        runner.terminate()
    assert boxes(docker_client, runner_id) == []
    with open("/proc/self/mountinfo") as info:
        assert str(warm_dir(cache, runner_id)) not in info.read()
