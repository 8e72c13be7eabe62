"""Networks made ahead for a runner's next runs: each run gets one no run had before.

A runner makes its runs' networks while it is quiet, so a run starting does not wait for
Docker (runner.ahead). Kept for later, an ended run's network would be met by the
next tenant (the same address on it, the proxy's state for it, names in Docker's
resolver): the networks of ended runs used to be handed to the next runs, now never.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import docker
import docker.errors
import pytest

from runner import leftovers
from runner.network import EgressProxy, egress
from runner.network.proxyimage import ensure_image
from tests.conftest import unique

KEEP = 2


@pytest.fixture
def runner_id(docker_client: docker.DockerClient) -> Iterator[str]:
    ensure_image(docker_client)
    name = unique(f"spare-{uuid.uuid4().hex[:6]}")
    yield name
    leftovers.close(docker_client, name)


def ready(proxy: EgressProxy) -> list[str]:
    """The names of `proxy`'s networks made ahead and not yet taken."""
    return [str(network.name) for network, _address in proxy.spares.ready()]


def eventually(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def gone(client: docker.DockerClient, name: str) -> bool:
    try:
        client.networks.get(name)
    except docker.errors.NotFound:
        return True
    return False


def test_each_run_gets_a_network_no_run_had_before(
    docker_client: docker.DockerClient, runner_id: str
) -> None:
    proxy = EgressProxy.ensure(docker_client, runner_id, spare=KEEP)
    try:
        eventually(lambda: len(ready(proxy)) == KEEP, "the spares were never made")
        had: list[str] = []
        for number in range(2 * KEEP + 1):  # more than were made ahead
            attachment = proxy.attach(f"spare-{number}-{uuid.uuid4().hex[:6]}", ["example.com"])
            had.append(attachment.network)
            attachment.release()
        assert len(set(had)) == len(had), had
        eventually(  # ended runs' networks are removed, not kept
            lambda: all(gone(docker_client, name) for name in had), "an ended run's was kept"
        )
        eventually(lambda: len(ready(proxy)) == KEEP, "the spares were not made again")
        assert not set(ready(proxy)) & set(had)
    finally:
        proxy.spares.close()


def test_a_replaced_proxys_spares_are_removed(
    docker_client: docker.DockerClient, runner_id: str
) -> None:
    egress.keep_spare(KEEP)
    first = egress._proxies.get(docker_client, runner_id, None)
    try:
        eventually(lambda: len(ready(first)) == KEEP, "the spares were never made")
        made = ready(first)
        first.container.remove(force=True)  # a new image, or someone removed it

        second = egress._proxies.get(docker_client, runner_id, None)

        assert second is not first and second.container.id != first.container.id
        assert all(gone(docker_client, name) for name in made)
        eventually(lambda: len(ready(second)) == KEEP, "no spares for the new proxy")
        assert not set(ready(second)) & set(made)
    finally:
        egress.close()
        egress.keep_spare(0)
