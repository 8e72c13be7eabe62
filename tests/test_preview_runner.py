"""The runner's previews with real Docker, real Redis and real git: a branch's web app
reachable through the proxy, refreshed, stopped when idle, capped, and a failing setup
reported with its log tail. (The whole loop from a comment: tests/test_preview_loop.py.)"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import docker
import httpx
import pytest
import redis.asyncio as aioredis

from runner import contract
from runner.container import AgentContainer
from runner.job import RepoRef
from runner.previews import sandbox
from runner.previews.job import (
    PreviewEvent,
    PreviewFailed,
    PreviewReady,
    PreviewRequest,
    PreviewStopped,
    preview_event_adapter,
)
from runner.previews.links import Links
from runner.previews.manager import REPLACED_GRACE_SECONDS, Limits, PreviewManager
from runner.previews.proxy import COOKIE, PreviewProxy
from runner.previews.routes import Routes
from tests import preview_app
from tests.conftest import git, unique

pytestmark = [pytest.mark.docker, pytest.mark.redis]

BRANCH = "trimo/1-web-app"
DISK = 64 * 1024 * 1024


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def make_remote(tmp_path: Path, name: str, text: str) -> Path:
    """A bare repository whose pipeline branch holds the web app showing `text`."""
    work = tmp_path / f"{name}-work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    git(work, "config", "user.email", "dev@example.com")
    git(work, "config", "user.name", "Dev")
    (work / "README.md").write_text("# app\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "initial")
    git(work, "checkout", "-q", "-b", BRANCH)
    for path, content in preview_app.files(text).items():
        (work / path).write_text(content)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "web app")
    remote = tmp_path / f"{name}.git"
    git(tmp_path, "clone", "-q", "--bare", str(work), str(remote))
    return remote


def commit_page(tmp_path: Path, name: str, text: str) -> None:
    work = tmp_path / f"{name}-work"
    (work / "index.html").write_text(preview_app.page(text))
    git(work, "commit", "-qam", f"show {text}")
    git(work, "push", "-q", str(tmp_path / f"{name}.git"), BRANCH)


class Setup:
    def __init__(
        self,
        tmp_path: Path,
        redis: aioredis.Redis,
        manager: PreviewManager,
        clock: Clock,
        port: int,
    ) -> None:
        self.tmp_path = tmp_path
        self.redis = redis
        self.manager = manager
        self.clock = clock
        self.port = port
        self.count = 0
        self.nonce = secrets.token_hex(4)
        """Preview ids name containers and networks: other test runs on this Docker must
        not share them."""

    def request(
        self, remote: Path, pipeline: str = "acme-app.1", **changes: object
    ) -> PreviewRequest:
        self.count += 1
        fields: dict[str, object] = {
            "preview_id": f"{pipeline}-p{self.count}-{self.nonce}",
            "pipeline": pipeline,
            "repo": RepoRef(full_name="acme/app", clone_url=str(remote)),
            "branch": BRANCH,
            "image": "trimo-agent:base",
            "setup": "echo setting up",
            "command": preview_app.COMMAND,
            "port": 8000,
            "network": "none",
            "idle_minutes": 30,
            **changes,
        }
        return PreviewRequest.model_validate(fields)

    async def start(self, request: PreviewRequest) -> str:
        await self.redis.set(contract.preview_wanted(request.pipeline), request.preview_id)
        return await self.manager.start(request)

    async def events(self) -> list[PreviewEvent]:
        entries = await self.redis.xrange(contract.PREVIEW_EVENTS)
        return [preview_event_adapter.validate_json(fields[b"event"]) for _id, fields in entries]


async def serving(
    tmp_path: Path, redis_url: str, docker_client: docker.DockerClient, url: str
) -> AsyncIterator[Setup]:
    """A proxy and a preview manager; `url` is TRIMO_RUNNER_PREVIEW_URL, `{port}` in it
    the proxy's port."""
    redis = aioredis.Redis.from_url(redis_url)
    clock = Clock()
    routes = Routes(clock)
    proxy = PreviewProxy(routes, Links.parse(url.format(port=1)))
    await proxy.start("127.0.0.1", 0)
    host = sandbox.Host.of_this_process(
        docker_client, unique("test-runner"), tmp_path / "cache", 1000, disk_bytes=DISK
    )
    manager = PreviewManager(
        host,
        redis,
        Links.parse(url.format(port=proxy.port)),
        routes,
        Limits(max_previews=2, ready_timeout_seconds=30),
    )
    try:
        yield Setup(tmp_path, redis, manager, clock, proxy.port)
    finally:
        await manager.close()
        await proxy.close()
        await redis.aclose()


@pytest.fixture
async def setup(
    tmp_path: Path, redis_url: str, docker_client: docker.DockerClient, test_image: str
) -> AsyncIterator[Setup]:
    async for found in serving(tmp_path, redis_url, docker_client, "http://127.0.0.1:{port}"):
        yield found


@pytest.fixture
async def per_host(
    tmp_path: Path, redis_url: str, docker_client: docker.DockerClient, test_image: str
) -> AsyncIterator[Setup]:
    async for found in serving(tmp_path, redis_url, docker_client, "http://*.localhost:{port}"):
        yield found


def fetch(url: str, client: httpx.Client | None = None) -> httpx.Response:
    own = client or httpx.Client(follow_redirects=True, timeout=10)
    return own.get(url)


def containers(client: docker.DockerClient, preview_id: str) -> list[object]:
    return list(
        client.containers.list(all=True, filters={"label": f"{sandbox.LABEL_PREVIEW}={preview_id}"})
    )


async def test_the_branch_app_is_reachable_through_its_link_and_only_its_link(
    setup: Setup, docker_client: docker.DockerClient
) -> None:
    remote = make_remote(setup.tmp_path, "app", "Hello from the branch")
    request = setup.request(remote)

    assert await setup.start(request) == "ready"

    [ready] = await setup.events()
    assert isinstance(ready, PreviewReady) and not ready.refreshed
    base = f"http://127.0.0.1:{setup.port}"
    assert ready.url.startswith(f"{base}/p/") and len(ready.url) > len(base) + 40
    with httpx.Client(follow_redirects=True, timeout=10) as browser:
        page = await asyncio.to_thread(browser.get, ready.url)
        assert page.status_code == 200 and "Hello from the branch" in page.text
        assert browser.cookies.get(COOKIE)
        # The app never sees the proxy's cookie; absolute paths work through the cookie.
        assert COOKIE not in page.headers["x-seen-cookie"]
        browser.cookies.set("own", "1")
        again = await asyncio.to_thread(browser.get, f"{base}/index.html")
        assert again.status_code == 200 and again.headers["x-seen-cookie"] == "own=1"

    wrong = ready.url.replace("/p/", "/p/x", 1)
    assert (await asyncio.to_thread(fetch, wrong)).status_code == 404
    assert (await asyncio.to_thread(fetch, f"{base}/")).status_code == 404
    forged = httpx.Client(timeout=10, cookies={COOKIE: "A" * 43})
    assert (await asyncio.to_thread(forged.get, f"{base}/")).status_code == 404

    # An upgraded connection (a dev server's live-reload WebSocket) passes both ways.
    token = ready.url.rstrip("/").rsplit("/", 1)[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", setup.port)
    writer.write(
        f"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        f"Cookie: {COOKIE}={token}\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101")
    for word in (b"live", b"reload"):
        writer.write(word)
        assert await asyncio.wait_for(reader.readexactly(len(word)), 10) == word.upper()
    writer.close()

    # Nothing the runner holds reaches the preview's environment.
    [container] = docker_client.containers.list(
        filters={"label": f"{sandbox.LABEL_PREVIEW}={request.preview_id}"}
    )
    env = container.attrs["Config"]["Env"]
    assert not [e for e in env if e.split("=")[0] in {"GITHUB_TOKEN", "ANTHROPIC_API_KEY"}]
    assert container.attrs["HostConfig"]["ReadonlyRootfs"] is True
    assert container.attrs["Config"]["User"] == "1000:1000"


async def test_a_new_commit_refreshes_the_preview_behind_the_same_link(
    setup: Setup, docker_client: docker.DockerClient
) -> None:
    remote = make_remote(setup.tmp_path, "app", "First version")
    first = setup.request(remote)
    assert await setup.start(first) == "ready"
    commit_page(setup.tmp_path, "app", "Second version")

    second = setup.request(remote)
    assert await setup.start(second) == "ready"

    ready = [e for e in await setup.events() if isinstance(e, PreviewReady)]
    assert [e.refreshed for e in ready] == [False, True]
    assert ready[0].url == ready[1].url and ready[0].sha != ready[1].sha
    page = await asyncio.to_thread(fetch, ready[1].url)
    assert "Second version" in page.text
    assert containers(docker_client, first.preview_id) == []


async def test_a_replaced_preview_serves_on_until_its_successor_is_up(
    setup: Setup, docker_client: docker.DockerClient
) -> None:
    remote = make_remote(setup.tmp_path, "app", "First version")
    first = setup.request(remote)
    assert await setup.start(first) == "ready"
    commit_page(setup.tmp_path, "app", "Second version")
    # The App wants a refresh; before this runner takes its job, a sweep comes.
    second = setup.request(remote)
    await setup.redis.set(contract.preview_wanted(second.pipeline), second.preview_id)
    await setup.manager.sweep()
    assert containers(docker_client, first.preview_id) != [], "the link still works"
    assert await setup.manager.start(second) == "ready"
    ready = [e for e in await setup.events() if isinstance(e, PreviewReady)]
    assert [e.refreshed for e in ready] == [False, True]
    assert containers(docker_client, first.preview_id) == []

    # Replaced by one that another runner starts: served on for the grace, then stopped.
    await setup.redis.set(contract.preview_wanted(second.pipeline), "on-another-runner")
    await setup.manager.sweep()
    assert containers(docker_client, second.preview_id) != []
    setup.clock.now += REPLACED_GRACE_SECONDS
    await setup.manager.sweep()
    assert containers(docker_client, second.preview_id) == []
    assert not [e for e in await setup.events() if isinstance(e, PreviewStopped)], "not told"


async def test_an_idle_preview_stops_and_its_link_goes_dead(
    setup: Setup, docker_client: docker.DockerClient
) -> None:
    remote = make_remote(setup.tmp_path, "app", "Soon idle")
    request = setup.request(remote, idle_minutes=5)
    assert await setup.start(request) == "ready"
    [ready] = await setup.events()
    assert isinstance(ready, PreviewReady)

    setup.clock.now += 4 * 60
    assert (await asyncio.to_thread(fetch, ready.url)).status_code == 200  # a request...
    setup.clock.now += 4 * 60
    await setup.manager.sweep()  # ...so 4 minutes later it is not idle yet
    assert containers(docker_client, request.preview_id)

    setup.clock.now += 2 * 60
    await setup.manager.sweep()

    stopped = (await setup.events())[-1]
    assert isinstance(stopped, PreviewStopped) and stopped.reason == "idle"
    assert containers(docker_client, request.preview_id) == []
    assert (await asyncio.to_thread(fetch, ready.url)).status_code == 404
    assert await setup.redis.get(contract.preview_wanted(request.pipeline)) is None


async def test_past_its_lifetime_a_link_is_refused_and_the_preview_stops(setup: Setup) -> None:
    remote = make_remote(setup.tmp_path, "app", "Short-lived")
    request = setup.request(remote)
    assert await setup.start(request) == "ready"
    [ready] = await setup.events()
    setup.clock.now += setup.manager.limits.max_lifetime_seconds + 1

    assert (await asyncio.to_thread(fetch, ready.url)).status_code == 404
    await setup.manager.sweep()
    stopped = (await setup.events())[-1]
    assert isinstance(stopped, PreviewStopped) and stopped.reason == "expired"


async def test_the_cap_per_runner_stops_the_preview_idle_longest(
    setup: Setup, docker_client: docker.DockerClient
) -> None:
    remote = make_remote(setup.tmp_path, "app", "Capped")
    first = setup.request(remote, pipeline="acme-app.1")
    second = setup.request(remote, pipeline="acme-app.2")
    third = setup.request(remote, pipeline="acme-app.3")
    assert await setup.start(first) == "ready"
    setup.clock.now += 60
    assert await setup.start(second) == "ready"
    setup.clock.now += 60
    first_url = next(
        e.url
        for e in await setup.events()
        if isinstance(e, PreviewReady) and e.preview_id == first.preview_id
    )
    await asyncio.to_thread(fetch, first_url)  # the first is used again: the second is idle longest

    assert await setup.start(third) == "ready"

    assert sorted(setup.manager.served) == ["acme-app.1", "acme-app.3"]
    stopped = [e for e in await setup.events() if isinstance(e, PreviewStopped)]
    assert [(e.pipeline, e.reason) for e in stopped] == [("acme-app.2", "cap")]
    assert containers(docker_client, second.preview_id) == []


async def test_a_failing_setup_is_reported_with_its_log_tail(
    setup: Setup, docker_client: docker.DockerClient
) -> None:
    remote = make_remote(setup.tmp_path, "app", "Never shown")
    request = setup.request(
        remote, setup="echo installing packages; echo 'E: no such package: left-pad' >&2; exit 3"
    )

    assert await setup.start(request) == "failed"

    [failed] = await setup.events()
    assert isinstance(failed, PreviewFailed)
    assert "ended before it answered" in failed.reason
    assert "installing packages" in failed.log_tail and "left-pad" in failed.log_tail
    assert containers(docker_client, request.preview_id) == []
    assert await setup.redis.get(contract.preview_wanted(request.pipeline)) is None


async def test_a_setup_that_ends_before_its_address_is_read_is_reported_with_its_log(
    setup: Setup, docker_client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a busy host a setup failing at once ends before the runner reads the container's
    address, and Docker has taken it back by then: that is still a failed setup, with its log."""
    real_start = AgentContainer.start

    def start_then_end(self: AgentContainer) -> None:
        real_start(self)
        deadline = time.monotonic() + 30
        while docker_client.containers.get(self.id).status == "running":
            assert time.monotonic() < deadline, "the setup never ended"
            time.sleep(0.05)

    monkeypatch.setattr(AgentContainer, "start", start_then_end)
    remote = make_remote(setup.tmp_path, "app", "Never shown")
    request = setup.request(remote, setup="echo 'E: no such package: left-pad' >&2; exit 3")

    assert await setup.start(request) == "failed"

    [failed] = await setup.events()
    assert isinstance(failed, PreviewFailed)
    assert "ended before it answered" in failed.reason, failed.reason
    assert "left-pad" in failed.log_tail
    assert containers(docker_client, request.preview_id) == []


async def test_a_preview_the_app_no_longer_wants_stops(
    setup: Setup, docker_client: docker.DockerClient
) -> None:
    remote = make_remote(setup.tmp_path, "app", "Wanted a while")
    request = setup.request(remote)
    assert await setup.start(request) == "ready"

    await setup.redis.delete(contract.preview_wanted(request.pipeline))
    await setup.manager.sweep()

    stopped = (await setup.events())[-1]
    assert isinstance(stopped, PreviewStopped) and stopped.reason == "stopped"
    assert containers(docker_client, request.preview_id) == []
    # A request the App replaced before a runner took it starts nothing.
    stale = setup.request(remote)
    await setup.redis.set(contract.preview_wanted(stale.pipeline), "someone-else")
    assert await setup.manager.start(stale) == "superseded"


@pytest.mark.parametrize("network", ["allowlist", "bridge"])
async def test_previews_on_the_other_networks_are_reachable_too(setup: Setup, network: str) -> None:
    remote = make_remote(setup.tmp_path, "app", f"On {network}")
    assert await setup.start(setup.request(remote, network=network)) == "ready"
    [ready] = await setup.events()
    assert isinstance(ready, PreviewReady)
    assert f"On {network}" in (await asyncio.to_thread(fetch, ready.url)).text


async def test_an_unexpected_error_ends_as_a_failed_preview(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(sandbox, "launch", broken)
    remote = make_remote(setup.tmp_path, "app", "Never")
    assert await setup.start(setup.request(remote)) == "failed"
    [failed] = await setup.events()
    assert isinstance(failed, PreviewFailed) and "unexpected error (ref " in failed.reason
    assert "a bug" not in failed.reason


async def test_a_preview_that_writes_beyond_its_disk_fails_and_says_so(
    setup: Setup, docker_client: docker.DockerClient
) -> None:
    """Its setup writes 100 MiB to /workspace: that used to land on the runner host's own
    disk. Now it fills the preview's disk (TRIMO_DISK) and the preview fails, saying why."""
    remote = make_remote(setup.tmp_path, "app", "Never shown")
    fill = "head -c 100M /dev/zero > /workspace/big && echo wrote it all"
    request = setup.request(remote, setup=fill)

    assert await setup.start(request) == "failed"

    [failed] = await setup.events()
    assert isinstance(failed, PreviewFailed)
    assert "ended before it answered; its disk is full (64 MiB" in failed.reason
    assert "No space left on device" in failed.log_tail and "wrote it all" not in failed.log_tail
    assert containers(docker_client, request.preview_id) == []
    place = setup.tmp_path / "cache" / "previews" / request.preview_id
    assert not place.exists()
    with open("/proc/mounts") as mounts:
        assert str(place) not in mounts.read()


async def test_with_a_host_per_preview_each_is_at_its_own_host_name_and_no_other(
    per_host: Setup,
) -> None:
    remote = make_remote(per_host.tmp_path, "app", "First app")
    other = make_remote(per_host.tmp_path, "other", "Second app")
    assert await per_host.start(per_host.request(remote, pipeline="acme-app.1")) == "ready"
    assert await per_host.start(per_host.request(other, pipeline="acme-other.2")) == "ready"
    urls = [e.url for e in await per_host.events() if isinstance(e, PreviewReady)]
    hosts = [httpx.URL(url).host for url in urls]
    assert all(h.endswith(".localhost") and len(h) == 52 + len(".localhost") for h in hosts)
    assert urls == [f"http://{host}:{per_host.port}/" for host in hosts]

    def get(host: str, path: str = "/") -> httpx.Response:
        address = f"http://127.0.0.1:{per_host.port}{path}"
        return httpx.get(address, headers={"Host": f"{host}:{per_host.port}"}, timeout=10)

    first, second = [await asyncio.to_thread(get, host) for host in hosts]
    assert first.status_code == 200 and "First app" in first.text
    assert second.status_code == 200 and "Second app" in second.text
    assert "First app" in (await asyncio.to_thread(get, hosts[0], "/any/path")).text
    for unknown in ("localhost", "x" * 52 + ".localhost", f"{hosts[0]}.example.com"):
        assert (await asyncio.to_thread(get, unknown)).status_code == 404

    # A dev server's live-reload WebSocket on its own host.
    reader, writer = await asyncio.open_connection("127.0.0.1", per_host.port)
    writer.write(
        f"GET /ws HTTP/1.1\r\nHost: {hosts[1]}\r\nConnection: Upgrade\r\n"
        "Upgrade: websocket\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101")
    writer.write(b"live")
    assert await asyncio.wait_for(reader.readexactly(4), 10) == b"LIVE"
    writer.close()
