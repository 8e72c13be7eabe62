"""The agent image: built locally, non-root, with Trimo's git setup."""

from __future__ import annotations

import docker
import pytest

from runner import images
from tests.conftest import build_lock


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


@pytest.mark.slow
def test_the_full_agent_image_builds_with_claude_and_codex(
    docker_client: docker.DockerClient, test_image: str
) -> None:
    """The real Dockerfile (target `agent`) builds here, trusting the host's extra CAs."""
    lines: list[str] = []
    with build_lock("trimo-agent:latest"):
        images.build_image(
            docker_client,
            "trimo-agent:latest",
            target="agent",
            ca_certs=images.host_extra_cas(),
            on_line=lines.append,
        )
    assert any(line.startswith("Step ") for line in lines)
    claude = run(docker_client, "trimo-agent:latest", ["claude", "--version"])
    codex = run(docker_client, "trimo-agent:latest", ["codex", "--version"])
    assert "Claude Code" in claude
    assert codex.startswith("codex-cli")
    assert run(docker_client, "trimo-agent:latest", ["id", "-un"]) == "agent"
