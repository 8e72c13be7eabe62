"""The agent image: built locally, non-root, with Trimo's git setup."""

from __future__ import annotations

import docker


def run(client: docker.DockerClient, image: str, command: list[str]) -> str:
    output: bytes = client.containers.run(image, command, remove=True, network_mode="none")
    return output.decode().strip()


def test_base_image_runs_as_non_root_agent(
    docker_client: docker.DockerClient, test_image: str
) -> None:
    assert run(docker_client, test_image, ["id", "-un"]) == "agent"
    assert run(docker_client, test_image, ["id", "-u"]) == "1000"


def test_base_image_has_git_identity_and_safe_directory(
    docker_client: docker.DockerClient, test_image: str
) -> None:
    out = run(docker_client, test_image, ["git", "config", "--system", "--list"])
    assert "user.name=Trimo Agent" in out
    assert "safe.directory=*" in out
