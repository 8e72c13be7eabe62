"""When saving fails (GitHub takes no push, Docker goes away), the work waits for the next run.

Real Docker, real git, and the stand-in's git server. Before this, a run whose final push
failed deleted the only ref to its commits, and a run whose save could not start a sandbox
left its files for the next run's sync to throw away.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from pydantic import SecretStr

from runner.engine import EngineConfig, RunEngine
from runner.job import Outcome, RunFinished, RunRequest
from tests.conftest import unique
from tests.engine_helpers import RUNNER_ID, Recorder, remote_request, run
from tests.fakegithub.runner import RunningFakeGitHub

pytestmark = pytest.mark.docker

OWNER, REPO = "acme", "widgets"
BRANCH = "trimo/7-save"
COMMIT_AND_LEAVE = (
    "echo one > one.txt && git add one.txt && git commit -qm 'First step' && echo left > left.txt"
)


@pytest.fixture
def gh() -> Iterator[RunningFakeGitHub]:
    with RunningFakeGitHub() as running:
        running.install_app(OWNER)
        running.create_repo(OWNER, REPO, {"README.md": "# widgets\n"})
        yield running


def request_for(gh: RunningFakeGitHub, prompt: str, n: int, image: str) -> RunRequest:
    return remote_request(
        gh, OWNER, REPO, prompt, n, issue=7, branch=BRANCH,
        token=SecretStr(gh.token_for(OWNER)), image=image,
    )  # fmt: skip


def pushed_files(gh: RunningFakeGitHub) -> set[str]:
    sha = gh.fake.branch_sha(OWNER, REPO, BRANCH)
    assert sha is not None, "nothing was pushed to the pipeline branch"
    return {
        path
        for path in ("one.txt", "left.txt", "two.txt")
        if gh.fake.has_file(OWNER, REPO, sha, path)
    }


def test_work_github_would_not_take_is_pushed_by_the_next_run(
    gh: RunningFakeGitHub, cache: Path, test_image: str
) -> None:
    gh.state.git_push_outage = True
    first, _ = run(cache, request_for(gh, COMMIT_AND_LEAVE, 1, test_image))

    assert first.outcome is Outcome.FAILURE
    assert gh.fake.branch_sha(OWNER, REPO, BRANCH) is None

    gh.state.git_push_outage = False
    second, _ = run(cache, request_for(gh, "echo two > two.txt", 2, test_image))

    assert second.outcome is Outcome.SUCCESS, second.reason
    assert pushed_files(gh) == {"one.txt", "left.txt", "two.txt"}
    assert [c.subject for c in second.commits][:1] == ["First step"]
    assert "could not push" in first.reason and "next run" in first.reason


def test_leftovers_docker_could_not_save_are_saved_before_the_next_run(
    gh: RunningFakeGitHub, cache: Path, test_image: str, docker_client: docker.DockerClient
) -> None:
    doomed = unique("trimo-test-doomed") + ":save"
    docker_client.images.get(test_image).tag(doomed)
    engine = RunEngine(
        EngineConfig(
            cache_dir=cache, runner_id=RUNNER_ID, push_interval_seconds=0.5, keep_ledger=True
        )
    )
    recorder = Recorder()
    results: list[RunFinished] = []
    # The agent commits, leaves a file, and the image goes away before the run is saved.
    prompt = f"{COMMIT_AND_LEAVE} && sleep 4"
    worker = threading.Thread(
        target=lambda: results.append(engine.execute(request_for(gh, prompt, 1, doomed), recorder))
    )
    worker.start()
    deadline = time.monotonic() + 60
    while not recorder.of_type("pushed") and time.monotonic() < deadline:
        time.sleep(0.1)
    docker_client.images.remove(doomed, force=True)
    worker.join(120)
    (first,) = results

    assert first.outcome is Outcome.ERROR
    assert "saved before" in first.reason, first.reason
    assert pushed_files(gh) == {"one.txt"}
    assert list(engine.config.ledger_dir.glob("*.json")), "the unsaved run was forgotten"

    # Docker is back; the pipeline's next run first saves what the first one left.
    docker_client.images.get(test_image).tag(doomed)
    try:
        second = engine.execute(request_for(gh, "echo two > two.txt", 2, doomed), Recorder())
    finally:
        docker_client.images.remove(doomed, force=True)

    assert second.outcome is Outcome.SUCCESS, second.reason
    assert pushed_files(gh) == {"one.txt", "left.txt", "two.txt"}
    assert not list(engine.config.ledger_dir.glob("*.json"))
