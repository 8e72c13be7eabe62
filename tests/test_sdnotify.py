"""A draining runner asks systemd for its drain time and the saves' (EXTEND_TIMEOUT_USEC), so
that a raised TRIMO_DRAIN_SECONDS is not cut short by the unit's stop timeout."""

from __future__ import annotations

import signal
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner import sdnotify
from tests.runner_helpers import RunnerProcess


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A service manager's notify socket: its path and the socket that reads it."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(60)
        yield path, sock


def test_extend_stop_asks_for_the_drain_and_the_saves(
    manager: tuple[str, socket.socket],
) -> None:
    path, sock = manager
    assert sdnotify.extend_stop(60, {"NOTIFY_SOCKET": path})
    assert sock.recv(4096) == b"EXTEND_TIMEOUT_USEC=180000000"


def test_an_abstract_socket_is_reached_too() -> None:
    name = f"trimo-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        assert sdnotify.notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"STOPPING=1"


def test_without_a_service_manager_nothing_happens(tmp_path: Path) -> None:
    assert not sdnotify.extend_stop(60, {})
    assert not sdnotify.extend_stop(60, {"NOTIFY_SOCKET": str(tmp_path / "gone")})


@pytest.mark.docker
@pytest.mark.redis
def test_a_runner_stopped_by_systemd_asks_for_its_drain(
    redis_url: str, tmp_path: Path, manager: tuple[str, socket.socket]
) -> None:
    path, sock = manager
    runner = RunnerProcess(
        redis_url, tmp_path / "cache", f"notify-{uuid.uuid4().hex[:8]}", "default",
        TRIMO_DRAIN_SECONDS="400", NOTIFY_SOCKET=path,
    ).start()  # fmt: skip
    assert runner.proc is not None
    try:
        runner.proc.send_signal(signal.SIGTERM)
        assert sock.recv(4096) == b"EXTEND_TIMEOUT_USEC=520000000"
        assert runner.proc.wait(timeout=60) == 0  # nothing ran: the drain is short
    finally:
        if runner.proc.poll() is None:
            runner.proc.kill()
            runner.proc.wait(timeout=30)
