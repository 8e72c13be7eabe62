"""A process that used the egress proxy leaves none of its kept networks behind when it ends.

Each `trimo run` is a process of its own, and the networks it kept for a next run that never
comes would pile up until Docker (or TRIMO_NETWORK_POOL) has no subnet left."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import docker
import pytest

from runner import leftovers
from runner.network.egress import LABEL_EGRESS
from tests.conftest import unique

USE_ONE_RUN = """
import sys, docker
from runner.network.egress import attach
client = docker.from_env()
attachment = attach(client, "allowlist", sys.argv[2], ["example.com"], sys.argv[1])
attachment.release()
print(attachment.network)
"""


@pytest.fixture
def runner_id(docker_client: docker.DockerClient) -> Iterator[str]:
    name = unique(f"idle-{uuid.uuid4().hex[:6]}")
    yield name
    leftovers.close(docker_client, name)


def test_a_process_that_ends_removes_the_networks_it_kept(
    docker_client: docker.DockerClient, runner_id: str
) -> None:
    for round_ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", USE_ONE_RUN, runner_id, f"run-{round_}"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().startswith("trimo-net-")
    kept = docker_client.networks.list(filters={"label": f"{LABEL_EGRESS}={runner_id}"})
    names = sorted(str(network.name) for network in kept)
    assert names == [f"{_proxy_name(docker_client, runner_id)}-out"], names


def _proxy_name(client: docker.DockerClient, runner_id: str) -> str:
    (container,) = client.containers.list(filters={"label": f"{LABEL_EGRESS}={runner_id}"})
    return str(container.name)
