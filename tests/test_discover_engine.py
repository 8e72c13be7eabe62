"""Discovery runs on the real engine (real Docker, real git): read-only, they answer a plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.job import FailingCheck, Outcome
from tests.conftest import git
from tests.engine_helpers import make_request, record_of, run

pytestmark = pytest.mark.docker

VANDAL = (
    "echo vandal > src.txt && echo new > new.txt && mkdir -p build && echo junk > build/x "
    "&& git add -A && git commit -qm 'Discovery edits' && echo dirty >> README.md; "
)
PLAN = (
    "echo 'looking around'; "
    'echo \'{"type": "tool_call", "name": "Read", "summary": "src.txt"}\'; '
    "printf '## Findings\\nsrc.txt is fine\\n## Plan\\n1. Add docs\\n2. Test\\n'"
)


def refs(repo: Path) -> str:
    return git(repo, "for-each-ref", "--format=%(refname) %(objectname)")


def test_a_discovery_run_pushes_nothing_and_answers_its_final_message(
    sample_repo: Path, cache: Path
) -> None:
    first = make_request(sample_repo, "echo one > one.txt && git add -A && git commit -qm One")
    finished1, _ = run(cache, first)
    assert finished1.outcome is Outcome.SUCCESS, finished1.reason
    branch_before, refs_before = git(sample_repo, "rev-parse", "trimo/p1"), refs(sample_repo)
    status_before = git(sample_repo, "status", "--porcelain")

    discover = make_request(
        sample_repo, VANDAL + PLAN, mode="discover", history=[record_of(first, finished1)]
    )
    finished, events = run(cache, discover)

    assert finished.outcome is Outcome.SUCCESS, finished.reason
    assert finished.plan == "## Findings\nsrc.txt is fine\n## Plan\n1. Add docs\n2. Test"
    assert finished.commits == [] and finished.diff.is_empty
    assert finished.head_sha == branch_before
    assert not events.of_type("pushed") and not events.of_type("salvaged")
    assert refs(sample_repo) == refs_before  # no branch moved, no ref kept
    assert git(sample_repo, "status", "--porcelain") == status_before

    # The next coding run starts from the branch as it was, and is told the plan.
    record = record_of(discover, finished).model_copy(
        update={"mode": "discover", "plan": finished.plan}
    )
    follow = make_request(
        sample_repo,
        's=$(git status --porcelain); ls -A > seen.txt; printf %s "$s" > status.txt; '
        "cat /trimo/context.md > ctx.md; git add -A && git commit -qm 'Implement the plan'",
        history=[record_of(first, finished1), record],
    )
    finished3, _ = run(cache, follow)
    assert finished3.outcome is Outcome.SUCCESS, finished3.reason
    assert git(sample_repo, "rev-parse", "trimo/p1~1") == branch_before
    seen = git(sample_repo, "show", "trimo/p1:seen.txt").split()
    assert "new.txt" not in seen and "build" not in seen and "one.txt" in seen
    assert git(sample_repo, "show", "trimo/p1:src.txt") == git(sample_repo, "show", "main:src.txt")
    assert git(sample_repo, "show", "trimo/p1:status.txt") == ""
    context = git(sample_repo, "show", "trimo/p1:ctx.md")
    assert "# The plan" in context and "1. Add docs" in context
    assert context.index("# The plan") > context.index("Run 2 (discovery")


def test_a_stopped_or_failing_discovery_run_keeps_nothing_either(
    sample_repo: Path, cache: Path
) -> None:
    refs_before = refs(sample_repo)
    discover = make_request(sample_repo, VANDAL + "echo 'half a plan'; exit 3", mode="discover")
    finished, events = run(cache, discover)

    assert finished.outcome is Outcome.FAILURE
    assert finished.plan == "half a plan"
    assert refs(sample_repo) == refs_before  # not even a pipeline branch was made
    assert not events.of_type("pushed")


def test_a_run_started_by_failing_checks_is_told_them(sample_repo: Path, cache: Path) -> None:
    checks = [
        FailingCheck(name="tests", conclusion="failure", title="2 failed", summary="test_a: 1 2"),
        FailingCheck(name="lint", conclusion="timed_out"),
    ]
    request = make_request(
        sample_repo,
        "cat /trimo/context.md > ctx.md && git add ctx.md && git commit -qm Context",
        failing_checks=checks,
    )
    finished, _ = run(cache, request)
    assert finished.outcome is Outcome.SUCCESS, finished.reason
    context = git(sample_repo, "show", "trimo/p1:ctx.md")
    assert "# Failing checks on branch `trimo/p1`" in context
    assert "## tests: failure" in context and "2 failed" in context
    assert "test_a: 1 2" in context and "## lint: timed_out" in context
