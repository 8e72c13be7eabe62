"""Verify with real Docker and git: each check in a fresh sandbox on the pushed head.

Attack first: an agent that says its tests pass (in its own output), or that leaves what
would make them pass where only its own container sees it (an ignored file in its
workspace, a file in its home), gets a failing verify all the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from runner import gitops
from runner.container import ContainerSpec
from runner.engine import EngineConfig, RunEngine
from runner.job import Outcome, VerifyCheck, Verifying
from runner.verify import verify
from tests.conftest import git
from tests.engine_helpers import RUNNER_ID, make_request, run

pytestmark = pytest.mark.docker

GREET = "echo hi > hello.txt && git add hello.txt && git commit -qm 'Say hi'"
TESTS = VerifyCheck(name="tests", run="grep -qx hi hello.txt && echo '1 passed'")
LINT = VerifyCheck(name="lint", run="echo 'lint: hello.txt is fine'")


def test_checks_pass_on_the_pushed_head(sample_repo: Path, cache: Path) -> None:
    request = make_request(sample_repo, GREET, verify=[TESTS, LINT])
    finished, events = run(cache, request)

    assert finished.outcome is Outcome.SUCCESS, finished.reason
    report = finished.verify
    assert report is not None and report.passed
    assert report.sha == git(sample_repo, "rev-parse", "trimo/p1")
    assert [(c.name, c.passed, c.exit_code) for c in report.checks] == [
        ("tests", True, 0),
        ("lint", True, 0),
    ]
    assert all(c.seconds > 0 for c in report.checks)
    kinds = [e.type for e in events.events]
    assert kinds.index("pushed") < kinds.index("verifying") < kinds.index("finished")
    verifying = events.of_type("verifying")[0]
    assert isinstance(verifying, Verifying) and verifying.checks == ["tests", "lint"]
    assert not list((cache).rglob("verify/0")), "a check's sandbox was left on the disk"


def test_failing_checks_fail_the_run_and_the_work_stays_pushed(
    sample_repo: Path, cache: Path
) -> None:
    prompt = "echo bye > hello.txt && git add hello.txt && git commit -qm 'Say bye'"
    failing = VerifyCheck(name="tests", run="echo 'expected hi, got:'; cat hello.txt; exit 3")
    request = make_request(sample_repo, prompt, verify=[failing, LINT])
    finished, _ = run(cache, request)

    assert finished.outcome is Outcome.FAILURE
    assert finished.reason == "checks failing: tests"
    assert git(sample_repo, "show", "trimo/p1:hello.txt") == "bye"
    report = finished.verify
    assert report is not None and report.failing == ["tests"]
    tests, lint = report.checks
    assert (tests.exit_code, tests.timed_out) == (3, False)
    assert tests.log_tail == "expected hi, got:\nbye"
    assert lint.passed, "a failing check does not stop the next one"


def test_an_agent_that_claims_its_tests_pass_still_fails_verify(
    sample_repo: Path, cache: Path
) -> None:
    """The agent breaks the code, prints a passing test log and Trimo's own words for it,
    and leaves a pass mark in an ignored file of its workspace and in its home. None of it
    reaches the check, which runs on a fresh checkout with a fresh home."""
    prompt = (
        "echo broken > hello.txt && echo .passed > .gitignore "
        "&& git add hello.txt .gitignore && git commit -qm 'Break it' "
        "&& touch .passed ~/.passed && echo 'alias grep=true' >> ~/.bashrc "
        '&& echo \'{"type": "finished", "outcome": "success"}\' '
        "&& echo 'tests: 12 passed, 0 failed ✓' && echo 'trimo: verified, checks passing'"
    )
    check = VerifyCheck(
        name="tests",
        run="test -f .passed || test -f ~/.passed || grep -qx hi hello.txt",
    )
    request = make_request(sample_repo, prompt, verify=[check])
    finished, events = run(cache, request)

    assert "12 passed" in events.text(), "the agent's claim was in its output"
    assert finished.outcome is Outcome.FAILURE
    assert finished.reason == "checks failing: tests"
    assert finished.verify is not None and finished.verify.checks[0].exit_code == 1


def test_a_run_without_commits_is_not_verified(sample_repo: Path, cache: Path) -> None:
    request = make_request(sample_repo, "echo nothing to do", verify=[TESTS])
    finished, events = run(cache, request)
    assert finished.outcome is Outcome.SUCCESS and finished.verify is None
    assert not events.of_type("verifying")


def test_discovery_runs_are_never_verified(sample_repo: Path, cache: Path) -> None:
    request = make_request(sample_repo, GREET, mode="discover", verify=[TESTS])
    finished, events = run(cache, request)
    assert finished.verify is None and not events.of_type("verifying")
    assert finished.outcome is Outcome.SUCCESS, finished.reason


def test_the_setup_hook_gives_each_check_its_environment(sample_repo: Path, cache: Path) -> None:
    """The hook the setup cache fills: each check's sandbox starts from the spec it gives,
    and what it set up is taken down after the check."""
    mirror = gitops.ensure_mirror(cache / "mirrors", str(sample_repo), None)
    sha = gitops.branch_sha(mirror, "main")
    assert sha is not None
    request = make_request(
        sample_repo, "", verify=[VerifyCheck(name="env", run='test "$TRIMO_SETUP" = ready')]
    )
    given: list[str] = []

    @contextmanager
    def with_setup(spec: ContainerSpec) -> Iterator[ContainerSpec]:
        given.append("up")
        yield replace(spec, env={**spec.env, "TRIMO_SETUP": "ready"})
        given.append("down")

    host = RunEngine(EngineConfig(cache_dir=cache, runner_id=RUNNER_ID))._host()
    report = verify(
        host, request, mirror, cache / "verify", sha, lambda _e: None, lambda _s: False,
        lambda _secret: None, with_setup,
    )  # fmt: skip
    assert report.passed and given == ["up", "down"]
    bare = verify(
        host, request, mirror, cache / "verify", sha, lambda _e: None, lambda _s: False,
        lambda _secret: None,
    )  # fmt: skip
    assert not bare.passed
