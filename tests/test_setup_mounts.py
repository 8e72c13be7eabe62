"""The sandbox's mount table names no host path: an agent (or a preview) that reads
/proc/self/mountinfo or /proc/mounts learns nothing of the runner's cache directory,
runner id or repository key, with a cached setup restored or without one."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import docker
import pytest

from runner import gitops
from runner.engine import EngineConfig, RunEngine
from runner.job import Outcome, Resources
from runner.previews import sandbox
from runner.previews.job import PreviewRequest
from tests.engine_helpers import RUNNER_ID, Recorder, make_request, run
from tests.test_setup_cache import SETUP, with_lock

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TABLES = "cat /proc/self/mountinfo /proc/mounts"


def leaks(text: str, cache: Path, repo: Path) -> list[str]:
    """The lines of `text` that name a host path of the runner's."""
    names = [str(cache.parent), cache.name, "pipelines", "setup-layers", RUNNER_ID,
             gitops.repo_key(str(repo))]  # fmt: skip
    return [line for line in text.splitlines() if any(name in line for name in names)]


def overlays(text: str) -> list[str]:
    return [line for line in text.splitlines() if " overlay " in line and "/workspace" in line]


@pytest.mark.parametrize("with_setup", [True, False], ids=["setup", "no-setup"])
def test_a_runs_mount_table_names_no_host_path(
    sample_repo: Path, cache: Path, with_setup: bool
) -> None:
    repo = with_lock(sample_repo, "v1")
    setup = {"setup": SETUP} if with_setup else {}
    for pipeline in ("p1", "p2"):  # a miss, then a hit
        finished, recorder = run(cache, make_request(repo, TABLES, pipeline, **setup))
        assert finished.outcome is Outcome.SUCCESS, (finished.reason, recorder.text())
        assert "/workspace" in recorder.text()
        assert bool(overlays(recorder.text())) is with_setup, recorder.text()
        assert leaks(recorder.text(), cache, repo) == []


def test_without_disks_the_setups_overlays_name_no_host_path(
    sample_repo: Path, cache: Path
) -> None:
    repo = with_lock(sample_repo, "v1")
    finished, recorder = run(cache, make_request(repo, TABLES, "p1", setup=SETUP), disk_bytes=0)
    assert finished.outcome is Outcome.SUCCESS, (finished.reason, recorder.text())
    restored = overlays(recorder.text())
    assert restored and leaks("\n".join(restored), cache, repo) == [], restored


def test_a_previews_mount_table_names_no_host_path(
    sample_repo: Path, cache: Path, docker_client: docker.DockerClient
) -> None:
    repo = with_lock(sample_repo, "v1")
    runner = RunEngine(
        EngineConfig(cache_dir=cache, runner_id=RUNNER_ID, push_interval_seconds=0.5)
    )
    recorder = Recorder()
    commit = "git commit -q --allow-empty -m preview-me"
    finished = runner.execute(make_request(repo, commit, "p1", setup=SETUP), recorder)
    assert finished.outcome is Outcome.SUCCESS and finished.commits, finished.reason
    host = sandbox.Host.of_this_process(
        docker_client, RUNNER_ID, cache, 1000, disk_bytes=runner.config.disk_bytes,
        setup=runner.setup_cache,
    )  # fmt: skip
    request = PreviewRequest(
        preview_id=f"pv-{uuid.uuid4().hex[:12]}", pipeline="p1",
        repo=make_request(repo, "x").repo, branch="trimo/p1", image="trimo-agent:base",
        command=f"{TABLES}; echo tables-done; sleep 120", port=3000, network="none",
        cached_setup=SETUP, resources=Resources(memory="256m", cpus=1.0, pids=128),
    )  # fmt: skip
    launched = sandbox.launch(host, request)
    try:
        container = docker_client.containers.get(launched.container_id)
        deadline = time.monotonic() + 60
        output = ""
        while time.monotonic() < deadline and "tables-done" not in output:
            output = container.logs().decode(errors="replace")
            time.sleep(0.1)
        assert "tables-done" in output and overlays(output), output
        assert leaks(output, cache, repo) == []
    finally:
        launched.teardown()
