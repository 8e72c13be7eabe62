"""A runner with concurrency 8 starts eight runs at once, however few cores it has.

Each run holds a thread for its whole length. They came from asyncio's default executor,
min(32, cores + 4) threads shared with the daemon's other duties: on two cores a seventh
and eighth run waited, before their agents started, for earlier runs to end.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from runner.job import Outcome
from tests.conftest import unique
from tests.engine_helpers import make_request
from tests.runner_helpers import RunnerProcess, abort, enqueue, events, finished_of, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.redis]

AT_ONCE = 8


@pytest.fixture
def runner(
    sample_repo: Path, tmp_path: Path, redis_url: str, docker_client: docker.DockerClient
) -> Iterator[RunnerProcess]:
    runner_id = unique("runner-eight")
    proc = RunnerProcess(
        redis_url, tmp_path / "cache", runner_id, "default", concurrency=AT_ONCE
    ).start()
    yield proc
    proc.terminate()
    for leftover in docker_client.containers.list(
        all=True, filters={"label": f"dev.trimo.runner={runner_id}"}
    ):
        leftover.remove(force=True)


def test_eight_runs_start_together_on_a_runner_of_eight(
    sample_repo: Path, tmp_path: Path, redis_url: str, runner: RunnerProcess
) -> None:
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(sample_repo), str(origin)], check=True)
    requests = [
        make_request(origin, "sleep 600", pipeline=f"eight{n}", timeout_s=900)
        for n in range(AT_ONCE)
    ]
    for request in requests:
        enqueue(redis_url, request)

    for request in requests:  # every agent starts while all the others still go
        wait_for(redis_url, request.run_id, "started", timeout=240)
    assert not any(
        event.type == "finished"
        for request in requests
        for event in events(redis_url, request.run_id)
    )

    for request in requests:
        abort(redis_url, request)
    found = [wait_for(redis_url, r.run_id, "finished", timeout=240) for r in requests]
    assert [finished_of(f).outcome for f in found] == [Outcome.CANCELLED] * AT_ONCE
