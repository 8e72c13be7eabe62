"""The runner asks its egress proxy on a Unix socket in a directory of its own (not with
`docker exec`, which Docker runs one at a time): no run's container has the socket; a
directory someone else made, or a link, is refused; and an answer cut short is a failure,
never a success (real Docker, as root)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from runner import leftovers
from runner.errors import TrimoError
from runner.network.egress import EgressProxy, control_socket
from runner.network.proxyimage import ensure_image
from tests.conftest import unique

pytestmark = pytest.mark.docker


@pytest.fixture
def runner_id(docker_client: docker.DockerClient) -> Iterator[str]:
    ensure_image(docker_client)
    name = unique(f"control-{uuid.uuid4().hex[:6]}")
    yield name
    leftovers.close(docker_client, name)
    shutil.rmtree(control_socket(name).parent, ignore_errors=True)


def test_the_proxy_answers_on_a_socket_no_run_can_reach(
    docker_client: docker.DockerClient, runner_id: str, test_image: str
) -> None:
    proxy = EgressProxy.ensure(docker_client, runner_id)
    where = control_socket(runner_id).parent
    assert where.stat().st_mode & 0o777 == 0o700 and where.stat().st_uid == os.geteuid()
    assert proxy.ask("make coffee") == (2, "bad request")
    with pytest.raises(TrimoError, match="NUL"):
        proxy.ask("stop", "run\0other")
    attachment = proxy.attach(f"run-{uuid.uuid4().hex[:6]}", ["example.com"])
    try:
        output = docker_client.containers.run(
            test_image,
            ["bash", "-c", "ls -a /run/trimo-control /run/trimo 2>&1; echo done"],
            network=attachment.network,
            entrypoint=[],
            remove=True,
        ).decode()
    finally:
        attachment.release()
    assert "egress.sock" not in output and "done" in output


def test_a_control_directory_that_is_a_link_is_refused(
    docker_client: docker.DockerClient, runner_id: str, tmp_path: Path
) -> None:
    where = control_socket(runner_id).parent
    where.parent.mkdir(parents=True, exist_ok=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where.symlink_to(elsewhere)
    try:
        with pytest.raises(TrimoError, match="not a directory of this user's"):
            EgressProxy.ensure(docker_client, runner_id)
    finally:
        where.unlink()
    assert list(elsewhere.iterdir()) == []


def test_an_answer_cut_short_is_a_failure(
    docker_client: docker.DockerClient, runner_id: str
) -> None:
    proxy = EgressProxy.ensure(docker_client, runner_id)
    proxy.container.stop(timeout=0)  # its socket stays; a server of ours answers there
    path = control_socket(runner_id)
    path.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)

        def answer_half() -> None:
            conn, _ = server.accept()
            with conn:
                while conn.recv(4096):
                    pass
                conn.sendall(b"tinyproxy started\ntrimo-egress-ex")

        thread = threading.Thread(target=answer_half)
        thread.start()
        code, text = proxy.ask("start", "run")
        thread.join(10)
    assert code == 1 and "cut short" in text
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    with pytest.raises(TrimoError, match="did not answer"):
        proxy.ask("stop", "run")


def test_many_requests_at_once_are_all_answered(
    docker_client: docker.DockerClient, runner_id: str
) -> None:
    """A runner of concurrency 8 starting and stopping runs, its spares being made: more
    connections than socat's default backlog of 5 arrive before it accepts them. Each must
    be answered, never refused (a refused start fails its run; a refused stop would leave
    the run's tinyproxy running and its slot taken)."""
    proxy = EgressProxy.ensure(docker_client, runner_id)
    answers: list[tuple[int, str] | Exception] = []
    gate = threading.Barrier(48)

    def ask() -> None:
        gate.wait()
        try:
            answers.append(proxy.ask("stop", f"never-started-{uuid.uuid4().hex[:6]}"))
        except Exception as exc:
            answers.append(exc)

    askers = [threading.Thread(target=ask) for _ in range(48)]
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join(180)
    assert [a for a in answers if not isinstance(a, tuple) or a[0] != 0] == []
    assert len(answers) == 48
