"""The board's pure logic: columns, the words on a card, filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.dashboard.board import (
    Filters,
    Usage,
    ago,
    build_board,
    card_of,
    column_of,
    place,
    state_words,
    total_usage,
)
from app.dashboard.pages import render_card
from app.runs.pipelines import Pipeline, PipelineRun
from app.runs.summary import summarise
from runner.contract import RUNNER_LOST
from runner.job import CommitInfo, Outcome
from tests.dashboard_helpers import make_pipeline, make_run

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def pipeline_with(
    status: str, outcome: Outcome | None = None, reason: str = "", commits: int = 0,
    closed: bool = False, kind: str = "issue",
) -> Pipeline:  # fmt: skip
    pipeline = make_pipeline("o/r", 7, "Fix login", kind=kind)
    run: PipelineRun = make_run("r1")
    run.status = status  # type: ignore[assignment]
    run.outcome = outcome
    run.reason = reason
    run.started_at = NOW - timedelta(minutes=3)
    run.commits = [CommitInfo(sha="a" * 40, subject="s")] * commits
    pipeline.runs.append(run)
    pipeline.active_run = "r1" if status != "finished" else None
    pipeline.closed = closed
    return pipeline


@pytest.mark.parametrize(
    ("status", "outcome", "reason", "commits", "closed", "pull", "column", "words"),
    [
        ("waiting", None, "", 0, False, None, "queued", "waiting for a runner"),
        ("queued", None, "", 0, False, None, "queued", "waiting for a runner"),
        ("running", None, "", 0, False, None, "running", "running"),
        ("finished", Outcome.SUCCESS, "", 2, False, 9, "review", "ready for review"),
        ("finished", Outcome.SUCCESS, "", 2, False, None, "needs_you", "finished with no changes"),
        ("finished", Outcome.SUCCESS, "", 0, False, 9, "needs_you", "finished with no changes"),
        ("finished", Outcome.FAILURE, "exit 1", 0, False, None, "needs_you", "failed"),
        ("finished", Outcome.TIMED_OUT, "", 0, False, None, "needs_you", "timed out"),
        ("finished", Outcome.CANCELLED, "stopped by @a", 0, False, None, "needs_you", "cancelled"),
        (
            "finished",
            Outcome.ERROR,
            f"runner x {RUNNER_LOST}",
            0,
            False,
            None,
            "needs_you",
            "runner lost",
        ),
        (
            "finished",
            Outcome.ERROR,
            "refused by runner x: image",
            0,
            False,
            None,
            "needs_you",
            "refused",
        ),
        ("finished", Outcome.ERROR, "Docker down", 0, False, None, "needs_you", "could not run"),
        ("finished", Outcome.SUCCESS, "", 2, True, 9, "done", "closed"),
        ("waiting", None, "", 0, True, None, "done", "closed"),
    ],
)
def test_columns(
    status: str, outcome: Outcome | None, reason: str, commits: int, closed: bool,
    pull: int | None, column: str, words: str,
) -> None:  # fmt: skip
    summary = summarise(pipeline_with(status, outcome, reason, commits, closed))
    assert column_of(summary, pull) == column
    assert state_words(summary, column_of(summary, pull)) == words


def test_a_running_run_wins_over_one_waiting_behind_it() -> None:
    pipeline = pipeline_with("running")
    pipeline.runs.append(make_run("r2"))
    summary = summarise(pipeline)
    assert summary.activity == "running" and summary.run and summary.run.run_id == "r1"


def test_card_shows_elapsed_while_running_and_age_after() -> None:
    running = card_of(
        summarise(pipeline_with("running")), None, {"r1": Usage(1500, 500, 0.25)}, NOW
    )
    assert running.elapsed == "3m 00s"
    assert running.tokens == "2.0k tokens" and running.cost == "$0.25"
    assert running.title == "Fix login" and running.number == 7 and running.runner == ""
    finished = pipeline_with("finished", Outcome.FAILURE)
    finished.updated_at = NOW - timedelta(hours=5)
    assert card_of(summarise(finished), None, {}, NOW).elapsed == "5h ago"


def test_a_card_adds_up_every_run_and_says_what_now() -> None:
    pipeline = pipeline_with("finished", Outcome.SUCCESS, commits=1)
    pipeline.runs.append(make_run("r2"))
    pipeline.runs[1].status = "running"
    views = {
        "r1": Usage(1000, 200, 0.87),
        "r2": Usage(300, 0, None, step="Bash pytest -q"),  # a follow-up without a cost yet
    }
    card = card_of(summarise(pipeline), None, views, NOW)
    assert card.column == "running" and card.cost == "$0.87" and card.tokens == "1.5k tokens"
    assert card.step == "Bash pytest -q" and card.error == "" and not card.retry
    assert total_usage([]) == Usage()


def test_a_failed_card_says_why_and_offers_retry() -> None:
    failed = card_of(
        summarise(pipeline_with("finished", Outcome.FAILURE, "tests failed:\n  3 errors")),
        None, {}, NOW,
    )  # fmt: skip
    assert failed.error == "tests failed: 3 errors" and failed.retry
    cancelled = card_of(
        summarise(pipeline_with("finished", Outcome.CANCELLED, "stopped by @a")), None, {}, NOW
    )
    assert cancelled.error == "stopped by @a" and not cancelled.retry
    quiet = card_of(summarise(pipeline_with("finished", Outcome.SUCCESS)), None, {}, NOW)
    assert quiet.error == "" and not quiet.retry
    html = render_card(failed)
    assert "card-error" in html and 'class="card-retry"' in html and "csrf" not in html


def test_a_dashboard_pipeline_is_named_by_its_pull_request_once_there_is_one() -> None:
    pipeline = pipeline_with("finished", Outcome.SUCCESS, commits=1)
    pipeline.number = 0
    assert ">new<" in render_card(card_of(summarise(pipeline), None, {}, NOW))
    assert ">PR #12<" in render_card(card_of(summarise(pipeline), 12, {}, NOW))


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "just now"), (90, "2m ago"), (7200, "2h ago"), (3 * 86400, "3d ago")]
)
def test_ago(seconds: int, text: str) -> None:
    assert ago(seconds) == text


def test_filters_from_the_url_are_cleaned_and_narrow_the_board() -> None:
    filters = Filters.from_query({"repo": " O/R ", "person": "@alice", "state": "bogus"})
    assert filters == Filters(repo="O/R", person="alice", agent="", state="")
    assert filters.query(state="running") == "repo=O%2FR&person=alice&state=running"
    other = make_pipeline("x/y", 1)
    other.runs.append(make_run("x1", by="bob"))
    summaries = [summarise(pipeline_with("running")), summarise(other)]
    board = build_board(place(summaries, {}, filters), {}, {}, {}, NOW)
    assert [c.id for c in board.columns["running"]] == ["o.r.7"]
    assert board.counts["queued"] == 0
    assert board.people == ["alice", "bob"] and board.repos == ["o/r", "x/y"]
    by_state = build_board(place(summaries, {}, Filters(state="queued")), {}, {}, {}, NOW)
    assert [c.repo for c in by_state.columns["queued"]] == ["x/y"]
    assert not by_state.columns["running"]
