"""Nothing fails silently: events that keep failing are retried, then told and parked.

The App worker against the GitHub stand-in and a real Redis (fixtures of test_app_worker).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from arq.jobs import Job
from arq.worker import Retry
from typer.testing import CliRunner

from app.edge.web import HANDLER_FUNCTION, QUEUE_NAME
from app.ops.cli import cli
from app.ops.worker import MAX_TRIES, handle_event
from app.reporting import failures
from app.runs import service as runs
from runner.job import Outcome
from tests import test_app_worker as base
from tests.test_app_worker import OWNER, REPO, SCRIPT, TITLE, WRITER, World, run_id_for

fake = base.fake
world = base.world


async def send_every_try(world: World, payload: dict[str, Any], delivery: str) -> str:
    """Send one delivery as arq would: again after each Retry, up to MAX_TRIES; the result."""
    for job_try in range(1, MAX_TRIES + 1):
        world.ctx["job_try"] = job_try
        try:
            result = await handle_event(world.ctx, "issue_comment", delivery, payload)
        except Retry:
            assert job_try < MAX_TRIES, "the last try must not ask for another"
            continue
        return result
    raise AssertionError("never gave up")


async def test_a_bug_after_the_run_was_created_is_retried_then_told_and_parked(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0

    async def broken_start_next(*args: object) -> None:
        nonlocal calls
        calls += 1
        raise KeyError("boom")

    monkeypatch.setattr(runs, "start_next", broken_start_next)
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    delivery = str(uuid.uuid4())
    result = await send_every_try(world, world.issue_comment(SCRIPT, number=issue.number), delivery)

    assert result == "failed issue_comment.created"
    assert calls == MAX_TRIES
    run_id = run_id_for(issue.number, delivery)
    found = await world.pipelines.get_run(run_id)
    assert found is not None
    pipeline, run = found
    assert (run.status, run.outcome, pipeline.active_run) == ("finished", Outcome.ERROR, None)
    assert run.reason == "an unexpected error in Trimo"
    [check] = world.state.check_runs.values()
    assert (check.status, check.conclusion) == ("completed", "failure")
    progress, reply = world.bot_comments(issue.number)
    assert "failed before it started" in progress
    assert reply.startswith(f"@{WRITER} ") and delivery in reply and run_id in reply
    [parked] = await failures.parked(world.pool)
    assert parked.tries == MAX_TRIES and "KeyError" in parked.error


async def test_a_worker_that_died_on_an_event_parks_it_without_handling(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    world.ctx["job_try"] = MAX_TRIES + 1
    delivery = await world.send("issue_comment", world.issue_comment(SCRIPT, number=issue.number))
    [parked] = await failures.parked(world.pool)
    assert parked.delivery_id == delivery and "never ended" in parked.error
    assert world.state.check_runs == {}
    assert world.bot_comments(issue.number) == []


@pytest.mark.parametrize("gone", ["deleted", "transferred", "issues_disabled", "revoked"])
async def test_a_thread_gone_mid_request_is_parked_without_crashing(
    world: World, gone: str
) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    payload = world.issue_comment(SCRIPT, number=issue.number)
    if gone == "deleted":
        world.state.delete_issue(OWNER, REPO, issue.number)
    elif gone == "transferred":
        world.state.transfer_issue(OWNER, REPO, issue.number, (OWNER, "elsewhere", 7))
    elif gone == "issues_disabled":
        world.state.disable_issues(OWNER, REPO)
    else:
        world.state.revoke_permission(OWNER, "issues")
        world.state.revoke_permission(OWNER, "pull_requests")
    delivery = str(uuid.uuid4())
    result = await send_every_try(world, payload, delivery)
    assert result == "failed issue_comment.created"
    [parked] = await failures.parked(world.pool)
    assert parked.delivery_id == delivery
    # A transferred issue answers 301; githubkit follows it to a repository it cannot see.
    status = {"deleted": "404", "transferred": "404", "issues_disabled": "410", "revoked": "403"}
    assert f"GitHub answered {status[gone]}" in parked.error
    found = await world.pipelines.get_run(run_id_for(issue.number, delivery))
    if found is not None:  # the run was created before GitHub refused: it is not left open
        assert found[1].outcome == Outcome.ERROR and found[0].active_run is None


async def test_events_failed_and_retry_from_the_cli(
    world: World, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    payload = world.issue_comment(SCRIPT, number=issue.number)
    world.state.fail_next("GET", r"/collaborators/alice/permission$", 422)
    delivery = await world.send("issue_comment", payload)
    monkeypatch.setenv("TRIMO_REDIS_URL", redis_url)
    runner = CliRunner()

    listed = await asyncio.to_thread(runner.invoke, cli, ["events", "failed"])
    assert listed.exit_code == 0, listed.output
    assert delivery in listed.output and "issue_comment" in listed.output and "422" in listed.output

    missing = await asyncio.to_thread(runner.invoke, cli, ["events", "retry", "no-such-delivery"])
    assert missing.exit_code == 1 and "no parked event" in missing.output

    again = await asyncio.to_thread(runner.invoke, cli, ["events", "retry", delivery])
    assert again.exit_code == 0, again.output
    assert await failures.parked(world.pool) == []
    [job_id] = [m.decode() for m in await world.pool.zrange(QUEUE_NAME, 0, -1)]
    assert job_id.startswith(f"gh-{delivery}:replay:")

    # The replayed job handles the event now that GitHub answers: the run is queued.
    info = await Job(job_id, world.pool, _queue_name=QUEUE_NAME).info()
    assert info is not None and info.function == HANDLER_FUNCTION
    world.ctx["job_try"] = 1
    assert await handle_event(world.ctx, *info.args) == "handled issue_comment.created"
    assert run_id_for(issue.number, delivery) in await world.queued()
