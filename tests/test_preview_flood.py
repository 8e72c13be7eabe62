"""Attack: a visitor without a token floods the preview proxy with idle connections.

The proxy runs inside the runner daemon, so every connection it holds is one of the
daemon's descriptors: under a 1024 soft limit, 1,100 idle connections used to leave none for
the daemon's own git ("Too many open files"). The test lowers this process's soft limit to
keep it fast; the flood comes from a child process on another loopback address, as from
another machine.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from runner import descriptors
from runner.previews.heads import COOKIE
from runner.previews.links import Links
from runner.previews.proxy import PreviewProxy, ProxyLimits
from runner.previews.routes import Route, Routes, new_token
from tests.conftest import git

SOFT_LIMIT = 512
FLOOD = 1100
FLOODER = textwrap.dedent(
    """
    import resource, socket, sys
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
    port, count = int(sys.argv[1]), int(sys.argv[2])
    held = []
    for _ in range(count):
        sock = socket.socket()
        sock.settimeout(2)
        sock.bind(("127.0.0.2", 0))
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        held.append(sock)
    print(len(held), flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture
def lowered_limit() -> Iterator[int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT_LIMIT, hard))
    try:
        yield SOFT_LIMIT
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
async def backend() -> AsyncIterator[int]:
    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(app, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


async def test_idle_connections_without_a_token_cost_the_daemon_nothing_lasting(
    lowered_limit: int, backend: int, tmp_path: Path
) -> None:
    routes = Routes()
    token = new_token()
    routes.add(Route("pv-1", token, "127.0.0.1", backend, routes.clock() + 600, 0))
    proxy = PreviewProxy(routes, Links.parse("http://127.0.0.1:1"))  # limits from the soft limit
    await proxy.start("127.0.0.1", 0)
    before = open_descriptors()  # this test process's own, whatever tests before it left
    flooder = subprocess.Popen(
        [sys.executable, "-c", FLOODER, str(proxy.port), str(FLOOD)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert flooder.stdout is not None
        held = int(await asyncio.to_thread(flooder.stdout.readline))
        assert held > 0
        # While the flood holds its connections, the daemon keeps descriptors for its own
        # work: the proxy takes at most half of them (ProxyLimits.for_descriptors), not 1,100.
        assert open_descriptors() - before < lowered_limit // 2
        remote = tmp_path / "remote.git"
        git(tmp_path, "init", "-q", "--bare", str(remote))
        mirror = tmp_path / "mirror.git"
        git(tmp_path, "clone", "-q", "--mirror", str(remote), str(mirror))
        # ...and a visitor with a token, from another address, still gets their preview.
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(f"GET / HTTP/1.1\r\nHost: h\r\nCookie: {COOKIE}={token}\r\n\r\n".encode())
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello")
        # Nothing lasting: the proxy closes connections that send no request head in time.
        deadline = time.monotonic() + 30
        while proxy.open_connections and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert proxy.open_connections == 0
    finally:
        flooder.kill()
        flooder.wait()
        await proxy.close()


def test_the_runner_raises_its_soft_limit_to_the_hard_one(lowered_limit: int) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert descriptors.raise_to_hard() == hard == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert ProxyLimits.for_descriptors(1024).max_connections == 256
