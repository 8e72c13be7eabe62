"""The setup cache for real: a package installed through the allowlist proxy by setup alone
(the agent has no network), restored for the next pipeline without installing again, and
shared with a preview of the same key."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import docker
import pytest

from runner import contract, figures
from runner.engine import EngineConfig, RunEngine
from runner.job import Outcome, Resources
from runner.previews import sandbox
from runner.previews.job import PreviewFailed, PreviewRequest
from runner.setup.build import Builder
from runner.setup.cache import SetupCache
from runner.setup.spec import SetupSpec
from runner.setup.store import Store
from tests.engine_helpers import RUNNER_ID, Recorder, make_request
from tests.outside import registry_host
from tests.test_agent_clis import agent_image  # noqa: F401  (a fixture)
from tests.test_preview_runner import Setup, containers, make_remote, serving
from tests.test_setup_cache import SETUP, SHOW, lines, with_lock

pytestmark = [pytest.mark.docker, pytest.mark.slow]

INSTALL = "npm install --no-audit --no-fund --no-save --no-package-lock is-number@7.0.0"
USE = "node -e \"console.log('is-number', require('is-number')(7))\""


def engine(cache: Path) -> RunEngine:
    return RunEngine(EngineConfig(cache_dir=cache, runner_id=RUNNER_ID, push_interval_seconds=0.5))


def test_a_package_installed_through_the_proxy_is_there_for_an_agent_without_network(
    sample_repo: Path,
    cache: Path,
    agent_image: str,  # noqa: F811
) -> None:
    repo = with_lock(sample_repo, "v1")
    spec = SetupSpec(
        run=INSTALL, cache_key=["lock.txt"], paths=["node_modules", "~/.npm"],
        allowed_hosts=[registry_host()], timeout_s=120,
    )  # fmt: skip
    runner = engine(cache)
    resources = Resources(memory="1g", cpus=1.0, pids=256)
    for number, pipeline in enumerate(("p1", "p2")):
        recorder = Recorder()
        request = make_request(
            repo, USE, pipeline, setup=spec, image=agent_image, network="none",
            resources=resources, timeout_s=120,
        )  # fmt: skip
        finished = runner.execute(request, recorder)
        assert finished.outcome is Outcome.SUCCESS, (finished.reason, recorder.text())
        assert "is-number true" in recorder.text()
        assert runner.setup_cache.tally.take() == (number, 1 - number, 0)  # a miss, then a hit
    # Without setup, the same agent on the same network has nothing to require.
    bare, recorder = Recorder(), None
    finished = runner.execute(
        make_request(repo, USE, "p3", image=agent_image, network="none", timeout_s=120), bare
    )
    assert finished.outcome is Outcome.FAILURE and "Cannot find module" in bare.text()
    assert recorder is None


def test_a_preview_uses_the_entry_its_runs_made(
    sample_repo: Path, cache: Path, docker_client: docker.DockerClient
) -> None:
    repo = with_lock(sample_repo, "v1")
    runner = engine(cache)
    recorder = Recorder()
    commit = "git commit -q --allow-empty -m preview-me; " + SHOW
    finished = runner.execute(make_request(repo, commit, "p1", setup=SETUP), recorder)
    assert finished.outcome is Outcome.SUCCESS and finished.commits, finished.reason
    stamp = lines(recorder.text())[1]
    runner.setup_cache.tally.take()
    host = sandbox.Host.of_this_process(
        docker_client, RUNNER_ID, cache, 1000, disk_bytes=runner.config.disk_bytes,
        setup=runner.setup_cache,
    )  # fmt: skip
    request = PreviewRequest(
        preview_id=f"pv-{stamp}", pipeline="p1", repo=make_request(repo, "x").repo,
        branch="trimo/p1", image="trimo-agent:base", command="cat deps/pkg/made; sleep 120",
        port=3000, network="none", cached_setup=SETUP,
        resources=Resources(memory="256m", cpus=1.0, pids=128),
    )  # fmt: skip
    launched = sandbox.launch(host, request)
    try:
        container = docker_client.containers.get(launched.container_id)
        deadline = time.monotonic() + 60
        output = ""
        while time.monotonic() < deadline and stamp not in output:
            output = container.logs().decode(errors="replace")
            time.sleep(0.1)
        assert stamp in output, output
        assert runner.setup_cache.tally.take() == (1, 0, 0)
    finally:
        launched.teardown()


@pytest.fixture
async def previews(
    tmp_path: Path, redis_url: str, docker_client: docker.DockerClient, test_image: str
) -> AsyncIterator[Setup]:
    async for found in serving(tmp_path, redis_url, docker_client, "http://127.0.0.1:{port}"):
        host = found.manager.host
        builder = Builder(docker_client, host.runner_id, host.user, host.owner, host.disk_bytes)
        cache = SetupCache(builder, Store(host.cache_dir / "setup", host.runner_id))
        found.manager.host = dataclasses.replace(host, setup=cache)
        yield found


@pytest.mark.redis
async def test_a_preview_whose_setup_fails_is_reported_with_setups_last_lines(
    previews: Setup, docker_client: docker.DockerClient
) -> None:
    remote = make_remote(previews.tmp_path, "app", "Never shown")
    failing = SetupSpec(run="echo fetching deps; exit 4", paths=["~/.deps"])
    request = previews.request(remote, cached_setup=failing)

    assert await previews.start(request) == "failed"

    [failed] = await previews.events()
    assert isinstance(failed, PreviewFailed)
    assert failed.reason == "the setup exited with code 4"
    assert "fetching deps" in failed.log_tail
    assert containers(docker_client, request.preview_id) == []


@pytest.mark.redis
async def test_a_previews_cache_lookups_reach_the_figures_when_it_starts(previews: Setup) -> None:
    remote = make_remote(previews.tmp_path, "app", "Cached")
    cached = SetupSpec(run="mkdir -p ~/.deps", paths=["~/.deps"])
    key = contract.runner_figures(previews.manager.host.runner_id)
    for number in range(2):  # a miss, then (refreshed: the same pipeline's entry) a hit
        request = previews.request(remote, cached_setup=cached)
        assert await previews.start(request) == "ready", await previews.events()
        counted = await previews.redis.hgetall(key)  # no run has finished on this runner
        assert counted[f"{figures.SETUP_CACHE_PREFIX}miss".encode()] == b"1", counted
        assert (
            counted.get(f"{figures.SETUP_CACHE_PREFIX}hit".encode(), b"0") == str(number).encode()
        )
        assert int(counted[figures.SETUP_CACHE_BYTES.encode()]) > 0
