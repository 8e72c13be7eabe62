"""What a killed runner leaves on the host is removed when it starts again, and nothing of
another runner's on the same Docker engine and cache directory is touched. Real Docker,
Redis, git, loop-mounted disks and runner processes."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import httpx
import pytest
import redis
import redis.asyncio as aioredis
from arq import create_pool

from runner import contract, disk, leftovers, registry
from runner.container import LABEL_RUNNER
from runner.job import RepoRef
from runner.network import firewall, tenant
from runner.network.proxyimage import LABEL_EGRESS
from runner.pipelinedir import PipelineDir
from runner.previews import sandbox
from runner.previews.job import (
    PreviewEvent,
    PreviewReady,
    PreviewRequest,
    PreviewStopped,
    preview_event_adapter,
)
from runner.redisurl import redis_settings
from runner.warm.pool import warm_dir
from tests import preview_app
from tests.conftest import free_port, git
from tests.engine_helpers import make_request
from tests.runner_helpers import RunnerProcess, abort, enqueue, events, finished_of, wait_for
from tests.test_preview_runner import BRANCH, make_remote

pytestmark = [pytest.mark.docker, pytest.mark.redis]


def owned(client: docker.DockerClient, runner_id: str) -> tuple[list[str], list[str]]:
    """Names of the containers and networks an owner label gives to `runner_id`."""
    containers: set[str] = set()
    networks: set[str] = set()
    for label in leftovers.OWNER_LABELS:
        wanted = {"label": f"{label}={runner_id}"}
        containers |= {c.name for c in client.containers.list(all=True, filters=wanted)}
        networks |= {n.name for n in client.networks.list(filters=wanted)}
    return sorted(containers), sorted(networks)


def remove_owned(client: docker.DockerClient, runner_id: str) -> None:
    for label in leftovers.OWNER_LABELS:
        wanted = {"label": f"{label}={runner_id}"}
        for container in client.containers.list(all=True, filters=wanted):
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
        for network in client.networks.list(filters=wanted):
            with contextlib.suppress(docker.errors.APIError):
                network.remove()


def wait_until(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


@pytest.fixture
def ids(docker_client: docker.DockerClient) -> Iterator[tuple[str, str]]:
    """Two runner ids of this test's own; whatever carries them is removed afterwards."""
    suffix = secrets.token_hex(3)
    pair = (f"hc-a-{suffix}", f"hc-b-{suffix}")
    yield pair
    for runner_id in pair:
        remove_owned(docker_client, runner_id)
        firewall.remove(docker_client, runner_id)


# -- clear(): containers, networks, disks, checkouts ---------------------------------------


def test_only_the_runners_own_containers_and_networks_go(
    tmp_path: Path, docker_client: docker.DockerClient, test_image: str, ids: tuple[str, str]
) -> None:
    mine, theirs = ids
    for runner_id in ids:
        for label in leftovers.OWNER_LABELS:
            network = tenant.make(
                docker_client,
                f"trimo-test-{runner_id}-{label.rsplit('.', 1)[-1]}",
                internal=True,
                labels={label: runner_id},
            )
            docker_client.containers.run(
                test_image,
                ["sleep", "300"],
                name=f"trimo-test-{runner_id}-{label.rsplit('.', 1)[-1]}",
                labels={label: runner_id},
                network=network.name,
                detach=True,
            )
    before_theirs = owned(docker_client, theirs)

    cleared = leftovers.clear(docker_client, mine, tmp_path / "cache")

    assert owned(docker_client, mine) == ([], [])
    assert (cleared.containers, cleared.networks) == (2, 2)
    assert owned(docker_client, theirs) == before_theirs
    assert all(len(names) == 2 for names in before_theirs)


@contextlib.contextmanager
def held(lock: Path) -> Iterator[None]:
    """A pipeline's lock as a run of another process holds it (flock is per open file)."""
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def test_disks_that_no_run_holds_are_unmounted_and_a_held_one_stays(tmp_path: Path) -> None:
    assert disk.can_limit(), "the tests run as root with loop devices (scripts/test)"
    cache = tmp_path / "cache"
    left, busy = (PipelineDir.of(cache, "https://example.com/o/r.git", p) for p in ("p1", "p2"))
    for pipeline in (left, busy):
        pipeline.create()
        with held(pipeline.lock), disk.mounted(pipeline.path, 16 * 1024 * 1024):
            pass  # its filesystem is made; now mounted as a killed run leaves it
        subprocess.run(
            ["mount", "-o", "loop,nosuid,nodev", pipeline.path / disk.IMAGE_NAME,
             pipeline.path / disk.ROOT_NAME],
            check=True,
        )  # fmt: skip
    try:
        with held(busy.lock):
            assert leftovers.unmount_idle(cache) == 1
            assert not os.path.ismount(left.path / disk.ROOT_NAME)
            assert os.path.ismount(busy.path / disk.ROOT_NAME)
    finally:
        disk.unmount(busy.path / disk.ROOT_NAME)


def test_the_runners_preview_checkouts_go_and_another_runners_stay(
    tmp_path: Path, docker_client: docker.DockerClient, ids: tuple[str, str]
) -> None:
    mine, theirs = ids
    cache = tmp_path / "cache"
    for runner_id in ids:
        (sandbox.checkouts(cache, runner_id) / "p1-preview" / "workspace").mkdir(parents=True)

    cleared = leftovers.clear(docker_client, mine, cache)

    assert cleared.checkouts == 1
    assert not sandbox.checkouts(cache, mine).exists()
    assert (sandbox.checkouts(cache, theirs) / "p1-preview" / "workspace").is_dir()


# -- whether a namesake is alive -------------------------------------------------------------


def info(runner_id: str, host: str, pid: int) -> registry.RunnerInfo:
    now = registry.now()
    return registry.RunnerInfo(
        id=runner_id, host=host, labels=["default"], capacity=1, running=[], version="0",
        pid=pid, started_at=now, seen_at=now,
    )  # fmt: skip


async def test_a_killed_predecessor_on_this_host_is_no_namesake(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    dead = info("r1", socket.gethostname(), pid=os.getpid())
    await registry.announce(client, dead)
    started = time.monotonic()
    found = await registry.live_namesake(
        client, "r1", socket.gethostname(), os.getpid() + 1, alive=lambda _pid: False
    )
    assert found is None
    assert time.monotonic() - started < 1  # no need to wait for its heartbeat to expire
    await client.aclose()


async def test_a_namesake_whose_heartbeat_goes_on_is_alive(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    other = info("r1", "another-host.example.com", pid=1234)
    await registry.announce(client, other)

    async def beating() -> None:
        for _ in range(40):
            await asyncio.sleep(0.2)
            beat = other.model_copy(update={"seen_at": registry.now()})
            await registry.announce(client, beat)

    beat = asyncio.create_task(beating())
    found = await registry.live_namesake(client, "r1", socket.gethostname(), os.getpid(), 0.1)
    beat.cancel()
    assert found is not None and found.host == "another-host.example.com"
    await client.aclose()


async def test_a_namesake_whose_heartbeat_expires_is_gone(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    other = info("r1", "another-host.example.com", pid=1234)
    await client.set(contract.runner_info("r1"), other.model_dump_json(), px=800)
    found = await registry.live_namesake(client, "r1", socket.gethostname(), os.getpid(), 0.1)
    assert found is None
    await client.aclose()


# -- a runner killed with a run and a preview, started again --------------------------------


def enqueue_preview(redis_url: str, request: PreviewRequest) -> None:
    async def go() -> None:
        pool = await create_pool(redis_settings(redis_url))
        await pool.set(contract.preview_wanted(request.pipeline), request.preview_id)
        job = await pool.enqueue_job(
            contract.PREVIEW_FUNCTION,
            request.dump_for_queue(),
            _job_id=request.preview_id,
            _queue_name=contract.preview_queue(request.runner_label),
        )
        assert job is not None
        await pool.aclose()

    asyncio.run(go())


def preview_events(redis_url: str) -> list[PreviewEvent]:
    client = redis.Redis.from_url(redis_url)
    entries = client.xrange(contract.PREVIEW_EVENTS)
    client.close()
    return [preview_event_adapter.validate_json(fields[b"event"]) for _id, fields in entries]


class Busy:
    """One runner process with an allowlisted run and a preview going."""

    def __init__(
        self, tmp_path: Path, redis_url: str, cache: Path, runner_id: str, origin: Path
    ) -> None:
        self.runner_id = runner_id
        self.port = free_port()
        self.env = {
            "TRIMO_RUNNER_PREVIEW_URL": f"http://127.0.0.1:{self.port}",
            "TRIMO_RUNNER_PREVIEW_LISTEN": f"127.0.0.1:{self.port}",
            "TRIMO_DISK": "64m",
        }
        self.process = RunnerProcess(redis_url, cache, runner_id, runner_id, 1, **self.env)
        self.run = make_request(
            origin,
            "echo a > a.txt && git add -A && git commit -qm 'Commit a'; sleep 300",
            pipeline=f"{runner_id}.1",
            runner_label=runner_id,
            network="allowlist",
            timeout_s=600,
        )
        remote = make_remote(tmp_path, f"app-{runner_id}", f"Served by {runner_id}")
        self.preview = PreviewRequest(
            preview_id=f"{runner_id}.2-p1",
            pipeline=f"{runner_id}.2",
            repo=RepoRef(full_name=f"acme/{runner_id}", clone_url=str(remote)),
            branch=BRANCH,
            image="trimo-agent:base",
            command=preview_app.COMMAND,
            port=8000,
            network="none",
            runner_label=runner_id,
        )
        self.cache = cache

    def start(self, redis_url: str) -> None:
        self.process.start()
        enqueue(redis_url, self.run)
        enqueue_preview(redis_url, self.preview)
        wait_for(redis_url, self.run.run_id, "pushed", timeout=120)
        wait_until(
            f"the preview of {self.runner_id}",
            lambda: self.ready(redis_url) is not None,
            timeout=120,
        )

    def ready(self, redis_url: str) -> PreviewReady | None:
        for event in preview_events(redis_url):
            if isinstance(event, PreviewReady) and event.preview_id == self.preview.preview_id:
                return event
        return None

    @property
    def disk_root(self) -> Path:
        pipeline = PipelineDir.of(self.cache, self.run.repo.clone_url, self.run.pipeline)
        return pipeline.path / disk.ROOT_NAME

    @property
    def checkout(self) -> Path:
        return sandbox.checkouts(self.cache, self.runner_id) / self.preview.preview_id


def test_a_killed_runner_started_again_removes_its_leftovers_and_no_one_elses(
    tmp_path: Path,
    redis_url: str,
    docker_client: docker.DockerClient,
    test_image: str,
    sample_repo: Path,
    ids: tuple[str, str],
) -> None:
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(sample_repo), str(origin))
    cache = tmp_path / "cache"  # one cache directory and one Docker engine for both
    killed, other = (Busy(tmp_path, redis_url, cache, runner_id, origin) for runner_id in ids)
    processes = [killed.process, other.process]
    try:
        killed.start(redis_url)
        other.start(redis_url)
        # the run's agent, the preview, the egress proxy, the sandbox started ahead for the
        # next run; the proxy's way out, the run's, the preview's and the sandbox's
        # networks, and the one the runner makes ahead for its next run
        for runner_id in ids:
            wait_until(
                "the runner made a network and a sandbox ahead",
                lambda owner=runner_id: [len(c) for c in owned(docker_client, owner)] == [4, 5],
                timeout=120,
            )
        warm_tmpfs = warm_dir(cache, killed.runner_id)
        assert os.path.ismount(warm_tmpfs)
        left_containers, left_networks = owned(docker_client, killed.runner_id)
        theirs = owned(docker_client, other.runner_id)
        assert os.path.ismount(killed.disk_root) and killed.checkout.is_dir()

        killed.process.kill9()
        assert owned(docker_client, killed.runner_id) == (left_containers, left_networks)
        assert os.path.ismount(killed.disk_root)

        again = RunnerProcess(
            redis_url, cache, killed.runner_id, killed.runner_id, 1, **killed.env
        ).start()
        processes.append(again)
        finished = finished_of(wait_for(redis_url, killed.run.run_id, "finished", timeout=120))
        wait_until(
            "the App to be told the killed runner's preview stopped",
            lambda: any(
                isinstance(e, PreviewStopped) and e.preview_id == killed.preview.preview_id
                for e in preview_events(redis_url)
            ),
        )

        assert "runner stopped" in finished.reason
        assert owned(docker_client, killed.runner_id) == ([], [])
        assert not os.path.ismount(killed.disk_root)
        assert not os.path.ismount(warm_tmpfs)
        assert not killed.checkout.exists()
        assert "removed what an earlier process left: 4 container(s), 5 network(s)" in (
            again.output()
        )
        # The other runner's run, preview, proxy, networks, disk and checkout are untouched.
        assert owned(docker_client, other.runner_id) == theirs
        running = {c.name: c.status for c in docker_client.containers.list(
            all=True, filters={"label": f"{LABEL_RUNNER}={other.runner_id}"}
        )}  # fmt: skip
        assert set(running.values()) == {"running"} and len(running) == 3  # with its sandbox
        [proxy] = docker_client.containers.list(
            filters={"label": f"{LABEL_EGRESS}={other.runner_id}"}
        )
        assert proxy.status == "running"
        assert os.path.ismount(other.disk_root) and other.checkout.is_dir()
        assert not any(e.type == "finished" for e in events(redis_url, other.run.run_id))
        ready = other.ready(redis_url)
        assert ready is not None
        page = httpx.get(ready.url, follow_redirects=True, timeout=10)
        assert f"Served by {other.runner_id}" in page.text
    finally:
        with contextlib.suppress(Exception):
            abort(redis_url, other.run)
        for process in processes:
            if process.proc is not None and process.proc.poll() is None:
                process.terminate()
