"""The agent's last line reaches the run even when it has no newline: Docker's following
log stream sometimes ends without it, or before the log itself; and a container that exits at
once still has its status line read (real Docker)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import docker
import pytest

from runner.container import AgentContainer

pytestmark = pytest.mark.docker

RUNS = 24
FLOODS = 12


@contextmanager
def running(client: docker.DockerClient, image: str, script: str) -> Iterator[AgentContainer]:
    """A container started running `script`, as the engine holds it; removed after."""
    container = client.containers.run(image, ["bash", "-c", script], detach=True, entrypoint=[])
    try:
        box = AgentContainer.__new__(AgentContainer)
        box._client, box._container = client, container
        yield box
    finally:
        container.remove(force=True)


def output_of(client: docker.DockerClient, image: str, script: str) -> list[str]:
    """The lines `AgentContainer.lines` gives for a container running `script`."""
    with running(client, image, script) as box:
        return list(box.lines())


def test_a_last_line_without_a_newline_is_never_lost(test_image: str) -> None:
    client = docker.from_env()
    with ThreadPoolExecutor(4) as pool:
        outputs = list(
            pool.map(
                lambda _: output_of(client, test_image, "echo one; printf 'I am here'"),
                range(RUNS),
            )
        )
    assert all(lines == ["one", "I am here"] for lines in outputs), [
        lines for lines in outputs if lines != ["one", "I am here"]
    ]


def test_a_last_line_with_a_newline_is_given_once(test_image: str) -> None:
    client = docker.from_env()
    assert output_of(client, test_image, "echo one; echo 'I am here'") == ["one", "I am here"]
    assert output_of(client, test_image, "true") == []


def test_a_flood_that_ends_at_once_reaches_the_run_whole(test_image: str) -> None:
    """Docker's following stream ended early for 1 run of `seq 20000` in 20 here."""
    client = docker.from_env()
    whole = [str(i) for i in range(1, 20_001)]
    with ThreadPoolExecutor(4) as pool:
        counts = list(pool.map(lambda _: output_of(client, test_image, "seq 20000"), range(FLOODS)))
    assert all(lines == whole for lines in counts), [len(lines) for lines in counts]


def test_the_status_line_of_a_container_that_exits_at_once_is_read(test_image: str) -> None:
    """The engine reads the workspace's status from stdout's first line: a container that
    ends right after writing it must not look like a broken workspace."""
    client = docker.from_env()

    def status() -> str:
        with running(client, test_image, "echo ready; echo late >&2") as box:
            return box.first_line()

    with ThreadPoolExecutor(4) as pool:
        lines = list(pool.map(lambda _: status(), range(RUNS)))
    assert lines == ["ready"] * RUNS, lines
