"""A busy machine does not fail a run at its start.

Docker copies a container's stdout and stderr apart and keeps only the order within each:
under load, a line the agent writes to stderr at once is logged before the entrypoint's
ready line on stdout (8 of 40 starts with two CPU hogs beside them). The runner took the
first line of both for the entrypoint's status, so both tries of the run ended "the
workspace could not be prepared in the sandbox". These tests put a stderr line first in the
log for certain: the container waits, after writing it, until the test has seen it logged.
"""

from __future__ import annotations

import io
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
from docker.models.containers import Container

from runner.container import (
    CONTEXT_MOUNT,
    LABEL_RUN,
    READY_LINE,
    AgentContainer,
    ContainerSpec,
    without_first,
)
from runner.job import Outcome, Resources
from tests.conftest import git
from tests.engine_helpers import make_request, run

pytestmark = pytest.mark.docker

EARLY = "written to stderr first"
GO = "go"
WAIT_FOR_GO = f"until [ -e {CONTEXT_MOUNT}/{GO} ]; do sleep 0.05; done"
DEADLINE_S = 120


def release_when_logged(client: docker.DockerClient, run_id: str, failures: list[str]) -> None:
    """Wait for the run's container to log EARLY on stderr, then let it go on: the file GO
    in its /trimo (host-written) lets the entrypoint continue."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        for container in client.containers.list(filters={"label": f"{LABEL_RUN}={run_id}"}):
            if EARLY in container.logs(stdout=False, stderr=True).decode():
                release(container)
                return
        time.sleep(0.05)
    failures.append(f"the container of {run_id} never logged {EARLY!r}")


def release(container: Container) -> None:
    [context] = [m for m in container.attrs["Mounts"] if m["Destination"] == CONTEXT_MOUNT]
    (Path(context["Source"]) / GO).write_text("")


@pytest.fixture(scope="module")
def stderr_first_image(docker_client: docker.DockerClient, test_image: str) -> Iterator[str]:
    """The sandbox image whose entrypoint first writes EARLY to stderr and waits for GO."""
    tag = f"trimo-test-stderr-first-{secrets.token_hex(3)}:1"
    lines = ["#!/bin/bash", f'echo "{EARLY}" >&2', WAIT_FOR_GO, 'exec trimo-entrypoint "$@"']
    script = "".join(f"{line}\\n" for line in lines)  # printf's newlines: one RUN line
    dockerfile = (
        f"FROM {test_image}\nUSER root\n"
        f"RUN printf '{script}' > /usr/local/bin/stderr-first "
        "&& chmod 0755 /usr/local/bin/stderr-first\n"
        'USER agent\nENTRYPOINT ["/usr/local/bin/stderr-first"]\n'
    )
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    yield tag
    docker_client.images.remove(tag, force=True)


def test_the_ready_line_is_read_from_stdout_whatever_stderr_logged_first(
    tmp_path: Path, docker_client: docker.DockerClient, test_image: str
) -> None:
    dirs = {"workspace": tmp_path / "workspace", "context": tmp_path / "io"}
    dirs["out"] = dirs["context"] / "out"  # as the runner makes them: /trimo/out in /trimo
    for path in dirs.values():
        path.mkdir(mode=0o777)
        path.chmod(0o777)
    script = f'echo "{EARLY}" >&2; {WAIT_FOR_GO}; echo {READY_LINE}; echo "agent says" >&2'
    spec = ContainerSpec(
        image=test_image,
        command=["bash", "-c", script],
        workspace=dirs["workspace"],
        context_dir=dirs["context"],
        out_dir=dirs["out"],
        home=None,
        user="agent",
        network="none",
        resources=Resources(memory="128m", cpus=1.0, pids=64),
        name=f"trimo-test-busy-{secrets.token_hex(3)}",
    )
    container = AgentContainer(docker_client, spec)
    try:
        container.start()
        waiting = docker_client.containers.get(container.id)
        deadline = time.monotonic() + DEADLINE_S
        while EARLY not in waiting.logs(stdout=False, stderr=True).decode():
            assert time.monotonic() < deadline, f"{EARLY!r} never logged"
            time.sleep(0.05)
        (dirs["context"] / GO).write_text("")

        assert container.first_line() == READY_LINE
        logged = list(container.lines())
        assert logged[0] == EARLY, "the test did not put stderr first"
        assert list(without_first(logged, READY_LINE)) == [EARLY, "agent says"]
    finally:
        container.remove()


def test_a_stderr_line_logged_before_the_ready_line_does_not_fail_the_run(
    sample_repo: Path, cache: Path, docker_client: docker.DockerClient, stderr_first_image: str
) -> None:
    request = make_request(
        sample_repo,
        "echo half-done > wip.txt; echo 'cannot go on' >&2; exit 3",
        image=stderr_first_image,
    )
    failures: list[str] = []
    releaser = threading.Thread(
        target=release_when_logged, args=(docker_client, request.run_id, failures)
    )
    releaser.start()
    finished, events = run(cache, request)
    releaser.join()

    assert not failures, failures
    assert finished.outcome is Outcome.FAILURE, finished.reason
    assert "code 3" in finished.reason
    assert git(sample_repo, "show", "trimo/p1:wip.txt") == "half-done"
    text = events.text()
    assert EARLY in text and "cannot go on" in text
    assert READY_LINE not in text
