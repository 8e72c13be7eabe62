"""What GitHub and the next run are told of a diff too large to list."""

from __future__ import annotations

from app.reporting import runview
from runner.diffsummary import DiffSummary, FileChange
from runner.job import CommitInfo, Outcome, RunFinished, RunRecord
from runner.templating import render


def finished_with(diff: DiffSummary) -> RunFinished:
    commit = CommitInfo(sha="b" * 40, subject="bomb")
    return RunFinished(run_id="r1", outcome=Outcome.SUCCESS, commits=[commit], diff=diff)


def test_a_diff_too_large_to_list_is_counted_in_the_check_run() -> None:
    view = runview.RunView(run_id="r1").apply(finished_with(DiffSummary(unlisted=10**7)))
    _, summary = runview.check_finished(view, "trimo/1-fix")
    assert "10,000,000 files changed (too large to list)." in summary
    assert "| File |" not in summary


def test_a_diff_past_its_size_is_listed_in_part_and_counted() -> None:
    files = [FileChange(path=f"f{i}", added=1) for i in range(30)]
    diff = DiffSummary(files=files, unlisted=70, at_least=True, truncated="too large")
    view = runview.RunView(run_id="r1").apply(finished_with(diff))
    _, summary = runview.check_finished(view, "trimo/1-fix")
    assert "| …and 75 more | | |" in summary
    assert "more than 100 files changed (too many to list them all); 30 lines added" in summary


def test_the_next_run_is_told_how_many_files_an_unlisted_diff_changed() -> None:
    record = RunRecord(
        run_id="r1", prompt="go", agent="script", outcome=Outcome.SUCCESS,
        diff=DiffSummary(unlisted=1_234),
    )  # fmt: skip
    context = render(
        "agent_context.md.j2", branch="trimo/x", history=[record], plan="", failing_checks=[]
    )
    assert "1,234 files changed (too large to list)" in context
