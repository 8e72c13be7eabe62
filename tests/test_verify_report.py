"""What people read of verify: the check run's table and tails, the comment, the live title."""

from __future__ import annotations

from datetime import UTC, datetime

from app.reporting import runview
from runner.job import (
    CheckResult,
    CommitInfo,
    Outcome,
    RunFinished,
    RunStarted,
    Verifying,
    VerifyReport,
)

SHA = "c0ffee" + "0" * 34
HOSTILE_TAIL = "```\n</details>\n@octocat <!-- trimo:marker -->\nFAILED test_a"


def view_of(report: VerifyReport, outcome: Outcome = Outcome.FAILURE) -> runview.RunView:
    view = runview.RunView(run_id="o-r-1-a").apply(
        RunStarted(
            run_id="o-r-1-a", runner="r1", agent="script", image="i", branch="b", base_sha="a" * 40
        )
    )
    view = view.apply(Verifying(sha=SHA, checks=[c.name for c in report.checks]))
    return view.apply(
        RunFinished(
            run_id="o-r-1-a",
            outcome=outcome,
            reason="" if report.passed else "checks failing: tests",
            commits=[CommitInfo(sha=SHA, subject="Fix it")],
            verify=report,
        )
    )


FAILING = VerifyReport(
    sha=SHA,
    checks=[
        CheckResult(name="tests", passed=False, exit_code=1, seconds=12.5, log_tail=HOSTILE_TAIL),
        CheckResult(name="lint", passed=True, exit_code=0, seconds=3.0),
        CheckResult(
            name="types",
            passed=False,
            timed_out=True,
            seconds=600,
            problem="ran longer than its 10-minute limit",
        ),
    ],
)


def test_the_check_run_lists_each_check_with_the_end_of_each_failure() -> None:
    title, summary = runview.check_finished(view_of(FAILING), "trimo/1-x")
    assert title.endswith("· checks failing")
    assert "**Checks on `c0ffee0`**: failing: `tests`, `types`" in summary
    assert "| ❌ | `tests` | 12s | exit code 1 |" in summary
    assert "| ✅ | `lint` | 3s | passed |" in summary
    assert "| ❌ | `types` | 10m 00s | `ran longer than its 10-minute limit` |" in summary
    # The hostile tail stays inside a fence it cannot close, so its `</details>`, mention
    # and comment marker are text.
    assert "````text\n```\n</details>\n@octocat <!-- trimo:marker -->\nFAILED test_a\n````" in (
        summary
    )
    assert summary.count("<details>") == 1


def test_the_comment_shows_the_table_and_points_to_the_tails() -> None:
    comment = runview.progress_finished(view_of(FAILING), "trimo/1-x", "https://example.com/c", 7)
    assert "| ❌ | `tests` | 12s | exit code 1 |" in comment
    assert "FAILED test_a" not in comment
    assert "failing check's output is in the [details](https://example.com/c)" in comment


def test_a_verified_run_says_so() -> None:
    passed = VerifyReport(sha=SHA, checks=[CheckResult(name="tests", passed=True, exit_code=0)])
    title, summary = runview.check_finished(view_of(passed, Outcome.SUCCESS), "trimo/1-x")
    assert title.startswith("✅") and title.endswith("· verified")
    assert "**Checks on `c0ffee0`**: all passed" in summary and "<details>" not in summary


def test_the_tails_share_a_cap() -> None:
    many = VerifyReport(
        sha=SHA,
        checks=[
            CheckResult(name=f"c{n}", passed=False, exit_code=1, log_tail="x" * 4000)
            for n in range(10)
        ],
    )
    _, summary = runview.check_finished(view_of(many), "trimo/1-x")
    assert len(summary) < runview.CHECK_TAILS_CHARS + 5000


def test_the_live_check_run_says_the_checks_are_running() -> None:
    view = runview.RunView(run_id="o-r-1-a").apply(Verifying(sha=SHA, checks=["tests", "lint"]))
    title, summary = runview.check_running(view, "trimo/1-x", datetime.now(UTC))
    assert title.startswith("Checking `agent`'s work: `tests`, `lint`")
    assert "Its checks run on `c0ffee0`, each in a fresh sandbox" in summary
