"""What the thread and the dashboard's log say about kept commits (`Kept` events). Pure."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.dashboard.logview import log_line
from app.reporting import runview
from runner.job import Kept, KeptAction, Outcome, RunFinished, RunStarted

RUN = "acme.widgets.7-3"
KEPT_BY = "acme.widgets.7-2"
HOSTILE = "`x` @octocat **bold** [link](http://example.com)"


def view_with(*notes: Kept, finished: bool = False) -> runview.RunView:
    view = runview.RunView(run_id=RUN)
    started = RunStarted(
        run_id=RUN, runner="b", agent="script", image="i", branch="trimo/7", base_sha="a" * 40
    )
    for event in (started, *notes):
        view = view.apply(event)
    if finished:
        view = view.apply(RunFinished(run_id=RUN, outcome=Outcome.SUCCESS, at=datetime.now(UTC)))
    return view


def note(action: KeptAction, **fields: object) -> Kept:
    values: dict[str, object] = {"kept_by": KEPT_BY, "commits": 2, "sha": "b" * 40}
    return Kept(action=action, **(values | fields))


WORDS: list[tuple[Kept, str]] = [
    (note("continued"), "This run continues from 2 commits that run `acme.widgets.7-2` kept"),
    (note("replayed"), "so they were replayed on its new head"),
    (note("replayed", commits=0), "it already has their changes"),
    (
        note("branch", branch="trimo/acme.widgets.7-kept-1", why="conflict"),
        "set aside on branch `trimo/acme.widgets.7-kept-1`: the branch moved on since, and "
        "they conflict with its new head.",
    ),
    (
        note("bundle", entry="kept-1", why="conflict", refused="could not push"),
        "as `kept-1`: the branch moved on since, and they conflict with its new head, and "
        "GitHub did not take them as a branch (`could not push`). Download them as a git bundle",
    ),
    (
        note("bundle", entry="kept-2", why="unverified", problem="damaged"),
        "their bundle in Trimo's store could not be verified (`damaged`), so no runner takes it.",
    ),
    (
        note("branch", branch="b", why="replay_failed", problem="no docker"),
        "replaying them on its new head failed (`no docker`)",
    ),
    (
        note("runner", kept_by="", why="beside_newer", ref="refs/trimo/kept/p-1", unstored="x"),
        "that an earlier run kept (`bbbbbbb`) are set aside on one runner only, as "
        "`refs/trimo/kept/p-1`: they were kept on one runner only, beside newer kept commits",
    ),
]


@pytest.mark.parametrize(("kept", "words"), WORDS)
def test_each_outcome_is_a_line_on_the_thread_and_the_check_run(kept: Kept, words: str) -> None:
    running = view_with(kept)
    assert words in runview.progress_running(running, "trimo/7", "")
    assert words in runview.check_running(running, "trimo/7", datetime.now(UTC))[1]
    done = view_with(kept, finished=True)
    assert words in runview.progress_finished(done, "trimo/7", "", None)
    assert words in runview.check_finished(done, "trimo/7")[1]


def test_words_from_elsewhere_stay_inert() -> None:
    text = runview.progress_running(
        view_with(note("bundle", entry="kept-1", why="conflict", refused=HOSTILE)), "trimo/7", ""
    )
    assert "(`` `x` @octocat **bold** [link](http://example.com) ``" in text


def test_no_kept_commits_no_words() -> None:
    assert "kept" not in runview.progress_running(view_with(), "trimo/7", "")


def test_the_dashboard_log_shows_them() -> None:
    line = log_line(note("branch", branch="trimo/acme.widgets.7-kept-1").model_dump_json())
    assert line.title == "kept commits set aside on a branch"
    assert "trimo/acme.widgets.7-kept-1" in line.body and not line.failed
    assert log_line(note("bundle", entry="kept-1").model_dump_json()).failed
