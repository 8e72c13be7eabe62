"""Checks run with the cached `setup:` of the commit they check (real Docker and git): its
own lockfile's entry, never the agent's writes into the cached paths."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import docker
import docker.errors

from runner.container import LABEL_RUNNER
from runner.engine import StopSignal
from runner.job import Outcome, VerifyCheck
from runner.setup.build import LABEL_SETUP
from runner.setup.spec import SetupSpec
from tests.engine_helpers import RUNNER_ID, make_request, run
from tests.test_setup_cache import with_lock

SETUP = SetupSpec(
    run="grep -qv broken lock.txt && mkdir -p deps && cat lock.txt > deps/version",
    cache_key=["lock.txt"],
    paths=["deps"],
)
MATCHES = VerifyCheck(name="deps", run='test "$(cat deps/version)" = "$(cat lock.txt)"')


def test_an_agents_writes_into_the_cached_paths_never_reach_the_checks(
    sample_repo: Path, cache: Path
) -> None:
    repo = with_lock(sample_repo, "v1")
    prompt = (
        "echo hacked > deps/version && echo hi > hello.txt && git add hello.txt "
        "&& git commit -qm Hi && cat deps/version"
    )
    finished, events = run(cache, make_request(repo, prompt, setup=SETUP, verify=[MATCHES]))
    assert "hacked" in events.text(), "the agent did write into its own layer"
    assert finished.outcome is Outcome.SUCCESS, finished.reason
    assert finished.verify is not None and finished.verify.passed


def test_checks_get_the_setup_of_the_lockfile_they_check(sample_repo: Path, cache: Path) -> None:
    repo = with_lock(sample_repo, "v1")
    prompt = "echo v2 > lock.txt && git commit -qam 'Lock v2'"
    finished, _ = run(cache, make_request(repo, prompt, setup=SETUP, verify=[MATCHES]))
    assert finished.outcome is Outcome.SUCCESS, finished.reason
    assert finished.verify is not None and finished.verify.passed


def test_a_setup_that_fails_on_the_pushed_head_fails_the_checks(
    sample_repo: Path, cache: Path
) -> None:
    repo = with_lock(sample_repo, "v1")
    prompt = "echo broken > lock.txt && git commit -qam 'Break the lockfile'"
    finished, _ = run(cache, make_request(repo, prompt, setup=SETUP, verify=[MATCHES]))
    assert finished.outcome is Outcome.FAILURE
    assert finished.reason == "checks failing: deps"
    assert finished.verify is not None
    assert finished.verify.checks[0].problem.startswith("its setup failed")


def test_a_run_stopped_while_a_checks_setup_runs_ends_at_once(
    sample_repo: Path, cache: Path, docker_client: docker.DockerClient
) -> None:
    repo = with_lock(sample_repo, "v1")
    slow = SETUP.model_copy(
        update={"run": "mkdir -p deps; if grep -q slow lock.txt; then echo waiting; sleep 90; fi"}
    )
    stop = StopSignal()
    stopped_at: list[float] = []

    def stop_once_the_checks_setup_waits() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for found in docker_client.containers.list(
                filters={"label": [LABEL_SETUP, f"{LABEL_RUNNER}={RUNNER_ID}"]}
            ):
                with contextlib.suppress(docker.errors.NotFound):
                    if b"waiting" in found.logs():
                        stopped_at.append(time.monotonic())
                        stop.stop("stopped by a test")
                        return
            time.sleep(0.1)

    stopper = threading.Thread(target=stop_once_the_checks_setup_waits)
    stopper.start()
    prompt = "echo slow > lock.txt && git commit -qam 'A slow lockfile'"
    finished, _ = run(cache, make_request(repo, prompt, setup=slow, verify=[MATCHES]), stop)
    ended_at = time.monotonic()
    stopper.join(120)
    assert stopped_at, "the check's setup never ran"
    assert finished.outcome is Outcome.CANCELLED, finished.reason
    assert ended_at - stopped_at[0] < 45  # not the setup's 90 s
    assert not docker_client.containers.list(
        filters={"label": [LABEL_SETUP, f"{LABEL_RUNNER}={RUNNER_ID}"]}
    )
