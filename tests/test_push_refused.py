"""GitHub refuses some of a run's commits: what it accepts is pushed, the rest is kept and said.

Real Docker, real git, and the stand-in's git server, which refuses workflow files
without the `workflows` permission in GitHub's own words.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from runner.job import Outcome, RunRequest
from tests.engine_helpers import remote_request, run
from tests.fakegithub.runner import RunningFakeGitHub

pytestmark = pytest.mark.docker

OWNER, REPO = "acme", "widgets"
TWO_COMMITS = (
    "echo hi > notes.txt && git add notes.txt && git commit -qm Harmless && "
    "mkdir -p .github/workflows && echo 'on: push' > .github/workflows/ci.yml && "
    "git add -A && git commit -qm 'Add CI'"
)


@pytest.fixture
def gh() -> Iterator[RunningFakeGitHub]:
    with RunningFakeGitHub() as running:
        running.install_app(OWNER)
        running.create_repo(OWNER, REPO, {"README.md": "# widgets\n"})
        yield running


def request_for(gh: RunningFakeGitHub, prompt: str, token: str, n: int) -> RunRequest:
    return remote_request(gh, OWNER, REPO, prompt, n, branch="trimo/1-ci", token=SecretStr(token))


def test_a_refused_workflow_file_keeps_the_work_and_says_why(
    gh: RunningFakeGitHub, tmp_path: Path, test_image: str
) -> None:
    cache = tmp_path / "cache"
    finished, events = run(cache, request_for(gh, TWO_COMMITS, gh.token_for(OWNER), 1))

    assert finished.outcome is Outcome.FAILURE
    harmless = finished.commits[0]
    assert harmless.subject == "Harmless" and len(finished.commits) == 1
    assert gh.fake.branch_sha(OWNER, REPO, "trimo/1-ci") == harmless.sha
    refused = finished.refused
    assert refused is not None and refused.paths == [".github/workflows/ci.yml"]
    assert "without `workflows` permission" in refused.reason
    assert "kept for this pipeline" in finished.reason and refused.sha[:7] in finished.reason
    assert [e for e in events.events if e.type == "push_refused"] == [refused]

    # The App is given the permission; the next run continues from the kept commits.
    inst = gh.state.installation_for(OWNER)
    assert inst is not None
    inst.permissions["workflows"] = "write"
    allowed = gh.state.issue_token(
        inst.id, permissions={"contents": "write", "workflows": "write"}
    ).token
    second, _ = run(cache, request_for(gh, "echo more > more.txt", allowed, 2))
    assert second.outcome is Outcome.SUCCESS, second.reason
    subjects = [c.subject for c in second.commits]
    assert subjects[:1] == ["Add CI"] and len(subjects) == 2
    assert gh.fake.branch_sha(OWNER, REPO, "trimo/1-ci") == second.head_sha
