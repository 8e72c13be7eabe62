"""Attempts on the runner: each on a branch of its own, all from the pipeline branch's head."""

from __future__ import annotations

from pathlib import Path

from runner.job import Outcome
from tests.conftest import git
from tests.engine_helpers import make_request, run


def test_attempts_start_from_the_pipeline_branch_and_push_to_their_own(
    sample_repo: Path, cache: Path
) -> None:
    first, _ = run(
        cache,
        make_request(sample_repo, "echo base > base.txt && git add -A && git commit -qm Base"),
    )
    assert first.outcome is Outcome.SUCCESS, first.reason
    pipeline_head = git(sample_repo, "rev-parse", "trimo/p1")

    heads = []
    for number in (1, 2):
        request = make_request(
            sample_repo,
            f"test -f base.txt && echo {number} > mine.txt && git add -A "
            f"&& git commit -qm 'Attempt {number}' && echo 'attempt {number} is done'",
            pipeline=f"p1.a{number}",
            branch=f"trimo/p1-attempt-{number}",
            from_branch="trimo/p1",
        )
        finished, _ = run(cache, request)
        assert finished.outcome is Outcome.SUCCESS, finished.reason
        assert [c.subject for c in finished.commits] == [f"Attempt {number}"]
        assert finished.last_word == f"attempt {number} is done"
        branch = f"trimo/p1-attempt-{number}"
        assert git(sample_repo, "rev-parse", f"{branch}~1") == pipeline_head
        heads.append(git(sample_repo, "rev-parse", branch))

    assert heads[0] != heads[1]
    assert git(sample_repo, "rev-parse", "trimo/p1") == pipeline_head  # untouched


def test_an_attempt_of_a_pipeline_without_a_branch_starts_from_the_base(
    sample_repo: Path, cache: Path
) -> None:
    base = git(sample_repo, "rev-parse", "main")
    request = make_request(
        sample_repo,
        "echo x > x.txt && git add -A && git commit -qm X",
        pipeline="p2.a1",
        branch="trimo/p2-attempt-1",
        from_branch="trimo/p2",
    )
    finished, _ = run(cache, request)
    assert finished.outcome is Outcome.SUCCESS, finished.reason
    assert git(sample_repo, "rev-parse", "trimo/p2-attempt-1~1") == base
