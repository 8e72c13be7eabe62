"""The pipeline state machine, without Redis: table tests of its transitions."""

from __future__ import annotations

import pytest

from app.conversation.policy import RunSettings
from app.runs.pipelines import AttemptSet, Pickup, Pipeline, PipelineRun
from runner.diffsummary import DiffSummary, FileChange
from runner.job import CommitInfo, Outcome, Resources, RunFinished

SETTINGS = RunSettings(
    agent="script", image="i", label="default", timeout_minutes=1, network="none",
    resources=Resources(),
)  # fmt: skip


def pipeline(active: str | None, statuses: dict[str, str], closed: bool = False) -> Pipeline:
    runs = [
        PipelineRun.model_validate(
            {"run_id": run_id, "prompt": run_id, "settings": SETTINGS, "requested_by": "a",
             "thread": 1, "status": status, "started": status in ("running", "finished")}
        )
        for run_id, status in statuses.items()
    ]  # fmt: skip
    return Pipeline(
        id="p.1", repo="o/r", number=1, kind="issue", branch="b", base_branch="main",
        clone_url="x", installation_id=1, active_run=active, runs=runs, closed=closed,
    )  # fmt: skip


def statuses(p: Pipeline) -> dict[str, str]:
    return {run.run_id: run.status for run in p.runs}


@pytest.mark.parametrize(
    ("active", "before", "closed", "started", "active_after"),
    [
        (None, {}, False, None, None),
        (None, {"r1": "waiting"}, False, "r1", "r1"),
        (None, {"r1": "waiting", "r2": "waiting"}, False, "r1", "r1"),
        ("r1", {"r1": "waiting"}, False, "r1", "r1"),  # queueing failed before: again
        ("r1", {"r1": "queued", "r2": "waiting"}, False, None, "r1"),
        ("r1", {"r1": "running", "r2": "waiting"}, False, None, "r1"),
        (None, {"r1": "finished", "r2": "waiting"}, False, "r2", "r2"),
        ("r1", {"r1": "finished"}, False, None, "r1"),  # finished active: nothing due
        (None, {"r1": "waiting"}, True, None, None),
    ],
)
def test_next_to_start(
    active: str | None,
    before: dict[str, str],
    closed: bool,
    started: str | None,
    active_after: str | None,
) -> None:
    p = pipeline(active, before, closed)
    runs = p.next_to_start()
    assert [run.run_id for run in runs] == ([started] if started else [])
    assert p.active_run == active_after
    assert statuses(p) == before  # choosing changes no run


def test_mark_queued_only_the_active_waiting_run() -> None:
    p = pipeline("r1", {"r1": "waiting", "r2": "waiting"})
    assert p.mark_queued("r2") is None
    queued = p.mark_queued("r1")
    assert queued is not None and queued.status == "queued" and queued.queued_at is not None
    assert p.mark_queued("r1") is None


@pytest.mark.parametrize(
    ("status", "pickup", "how", "after"),
    [
        ("waiting", "absent", "dropped", "finished"),
        ("waiting", "taken_back", "dropped", "finished"),
        ("waiting", "started", "aborting", "waiting"),
        ("queued", "taken_back", "dropped", "finished"),
        ("queued", "started", "aborting", "queued"),
        ("running", "started", "aborting", "running"),
        ("finished", "absent", None, "finished"),
    ],
)
def test_stop_run(status: str, pickup: Pickup, how: str | None, after: str) -> None:
    p = pipeline("r1", {"r1": status, "r2": "waiting"})
    stopped = p.stop_run("r1", "stopped by @a", pickup)
    assert (stopped.how if stopped else None) == how
    run = p.find("r1")
    assert run is not None and run.status == after
    if how == "dropped":
        assert (run.outcome, run.reason, p.active_run) == (Outcome.CANCELLED, "stopped by @a", None)
        assert not run.started
    else:
        assert p.active_run == "r1"


def test_close_drops_the_line_and_aborts_the_running_run() -> None:
    p = pipeline("r1", {"r0": "finished", "r1": "running", "r2": "waiting", "r3": "queued"})
    stopped = p.close("closed", {"r1": "started", "r3": "taken_back"})
    assert p.closed
    assert {s.run.run_id: s.how for s in stopped} == {
        "r1": "aborting", "r2": "dropped", "r3": "dropped",
    }  # fmt: skip
    assert p.next_to_start() == []


def test_record_finish_frees_the_pipeline() -> None:
    p = pipeline("r1", {"r1": "running", "r2": "waiting"})
    run = p.record_finish(RunFinished(run_id="r1", outcome=Outcome.SUCCESS, head_sha="abc"))
    assert run is not None and (run.status, run.outcome, run.head_sha) == (
        "finished", Outcome.SUCCESS, "abc",
    )  # fmt: skip
    assert p.active_run is None
    assert [run.run_id for run in p.next_to_start()] == ["r2"]
    assert p.record_finish(RunFinished(run_id="nope", outcome=Outcome.SUCCESS)) is None


def test_fail_start_ends_only_a_waiting_run() -> None:
    p = pipeline("r1", {"r1": "waiting", "r2": "queued"})
    assert p.fail_start("r2", "x") is None
    failed = p.fail_start("r1", "GitHub answered 422")
    assert failed is not None and failed.outcome == Outcome.ERROR and p.active_run is None
    taken_back = p.fail_start("r2", "the issue is gone", taken_back=True)
    assert taken_back is not None and taken_back.outcome == Outcome.ERROR


def test_add_is_idempotent_and_reopens() -> None:
    p = pipeline(None, {"r1": "finished"}, closed=True)
    run = PipelineRun(run_id="r2", prompt="p", settings=SETTINGS, requested_by="a", thread=1)
    p.add(run)
    p.add(run)
    assert [r.run_id for r in p.runs] == ["r1", "r2"] and not p.closed


def attempts(p: Pipeline, set_id: str, *run_ids: str) -> None:
    """Make `run_ids` (already in `p`) one set of attempts, numbered from 1."""
    for number, run_id in enumerate(run_ids, 1):
        run = p.find(run_id)
        assert run is not None
        run.attempt, run.attempt_set = number, set_id
    p.attempt_sets.append(AttemptSet(id=set_id, runs=list(run_ids)))


def test_a_set_of_attempts_starts_together_and_frees_the_pipeline_only_when_all_end() -> None:
    p = pipeline(None, {"a1": "waiting", "a2": "waiting", "a3": "waiting", "r4": "waiting"})
    attempts(p, "a1", "a1", "a2", "a3")
    assert [run.run_id for run in p.next_to_start()] == ["a1", "a2", "a3"]
    assert p.active_run == "a1"
    assert [run.run_id for run in p.waiting()] == ["r4"]
    assert p.ahead_of("a3") is None and p.ahead_of("r4") is not None
    for run_id in ("a1", "a2", "a3"):
        assert p.mark_queued(run_id) is not None
    assert p.mark_queued("r4") is None  # not its turn
    p.record_finish(RunFinished(run_id="a2", outcome=Outcome.SUCCESS))
    assert p.fail_start("a3", "no token", taken_back=True) is not None
    assert p.active_run == "a1" and p.next_to_start() == []  # a1 still going
    p.record_finish(RunFinished(run_id="a1", outcome=Outcome.FAILURE))
    assert p.active_run is None
    assert [run.run_id for run in p.next_to_start()] == ["r4"]


def test_only_the_picked_attempt_is_history_and_it_says_how_the_set_ranked() -> None:
    p = pipeline(None, {"a1": "waiting", "a2": "waiting"})
    attempts(p, "a1", "a1", "a2")
    p.next_to_start()
    for run_id, lines in (("a1", 40), ("a2", 4)):
        finished = RunFinished(
            run_id=run_id,
            outcome=Outcome.SUCCESS,
            commits=[CommitInfo(sha="f" * 40, subject=f"from {run_id}")],
            diff=DiffSummary(files=[FileChange(path="x", added=lines, removed=0)]),
        )
        p.record_finish(finished)
    assert p.history() == []  # nothing picked yet: no attempt's commits are on the branch
    p.attempt_sets[0].picked, p.attempt_sets[0].picked_by = 2, "octocat"
    (record,) = p.history()
    assert record.run_id == "a2"
    assert "attempt #2 of 2" in record.attempts
    assert "#2 script (done), #1 script (done)" in record.attempts
    assert "kept by @octocat" in record.attempts
