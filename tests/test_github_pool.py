"""The App's calls to GitHub share one pool of kept-alive connections: githubkit alone
opened a new connection (and built a new TLS context, most of the App's CPU under load) for
every call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from app.github.client import GitHubApp
from tests.fakegithub.counting import CountingGitHub
from tests.fakegithub.runner import generate_key_pair
from tests.webhook_helpers import make_settings


@pytest.fixture
async def counting() -> AsyncIterator[tuple[CountingGitHub, int]]:
    github = CountingGitHub()
    server = await asyncio.start_server(github.serve, "127.0.0.1", 0)
    try:
        yield github, int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


def github_app(port: int) -> GitHubApp:
    pem, _public = generate_key_pair()
    settings = make_settings(
        "redis://127.0.0.1:1/0",
        github_app_id=1,
        github_private_key=SecretStr(pem),
        github_api_url=f"http://127.0.0.1:{port}",
    )
    return GitHubApp(settings, aioredis.Redis(), auto_retry=False, timeout=5)


async def test_calls_one_after_another_use_one_connection(
    counting: tuple[CountingGitHub, int],
) -> None:
    server, port = counting
    github = github_app(port)
    for _ in range(5):
        assert (await github.identity()).slug == "trimo"
    installation = await github.installation_client(7)
    await installation.arequest("GET", "/app")
    assert server.requests == 6
    assert server.connections == 1


async def test_calls_at_once_each_get_a_connection_and_keep_it(
    counting: tuple[CountingGitHub, int],
) -> None:
    server, port = counting
    github = github_app(port)
    await asyncio.gather(*(github.identity() for _ in range(4)))
    opened = server.connections
    await asyncio.gather(*(github.identity() for _ in range(4)))
    assert server.requests == 8
    assert 1 <= opened <= 4
    assert server.connections == opened


def test_a_second_event_loop_gets_its_own_connections() -> None:
    """A process that runs two loops (a test's, a second asyncio.run) never reuses a
    connection of another loop, and each loop keeps its own."""

    async def twice() -> tuple[int, int]:
        server_side = CountingGitHub()
        server = await asyncio.start_server(server_side.serve, "127.0.0.1", 0)
        app = github_app(int(server.sockets[0].getsockname()[1]))
        await app.identity()
        await asyncio.to_thread(lambda: asyncio.run(app.identity()))
        await app.identity()
        server.close()
        return server_side.requests, server_side.connections

    assert asyncio.run(twice()) == (3, 2)
