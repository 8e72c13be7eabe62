"""The agent's last line reaches the run even when it has no newline: Docker's following
log stream sometimes ends without it (real Docker)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import docker
import pytest

from runner.container import AgentContainer

pytestmark = pytest.mark.docker

RUNS = 24


def output_of(client: docker.DockerClient, image: str, script: str) -> list[str]:
    """The lines `AgentContainer.lines` gives for a container running `script`."""
    container = client.containers.run(image, ["bash", "-c", script], detach=True, entrypoint=[])
    try:
        box = AgentContainer.__new__(AgentContainer)
        box._client, box._container = client, container
        return list(box.lines())
    finally:
        container.remove(force=True)


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
