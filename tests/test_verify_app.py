"""Failing checks of `verify:` on the App side: the reporter asks, the worker starts at most
`verify_fix_attempts` fixing runs in a row, each announced; a person's request resets.

Redis is real, GitHub is the stand-in; the reporter's queued delivery is taken from arq's
queue and handled as the App worker does.
"""

from __future__ import annotations

from typing import Any

from arq.jobs import JobDef as Job
from arq.jobs import deserialize_job

from app.conversation.naming import pipeline_id
from app.edge.events import VERIFY_EVENT
from app.edge.web import QUEUE_NAME
from app.ops.worker import SERVICES_KEY
from app.reporting.reporter import Reporter
from runner.job import CheckResult, CommitInfo, Outcome, RunFinished, VerifyReport
from tests import test_app_worker
from tests.test_app_worker import FULL, OWNER, REPO, TITLE, World, run_id_for
from tests.test_discover_app import advance, set_config

fake = test_app_worker.fake
world = test_app_worker.world

CONFIG = (
    "agent: script\nverify:\n  - {name: tests, run: npm test}\n  - {name: lint, run: 'true'}\n"
    "verify_fix_attempts: 2\n"
)


def failed(run_id: str, sha: str) -> RunFinished:
    report = VerifyReport(
        sha=sha,
        checks=[
            CheckResult(name="tests", passed=False, exit_code=1, log_tail="x" * 5000 + "\nboom"),
            CheckResult(name="lint", passed=True, exit_code=0),
        ],
    )
    return RunFinished(
        run_id=run_id,
        outcome=Outcome.FAILURE,
        reason="checks failing: tests",
        head_sha=sha,
        commits=[CommitInfo(sha=sha, subject="work")],
        verify=report,
    )


async def finish_failing(world: World, run_id: str, branch: str, asks: int = 1) -> None:
    """The run ends with failing checks; the reporter asks for a fix (`asks` times: once, or
    never when the run's repository only reports), the worker answers."""
    for job in await ask_for_fix(world, run_id, branch, asks):
        await answer(world, job)


async def ask_for_fix(world: World, run_id: str, branch: str, asks: int = 1) -> list[Job]:
    """The run ends with failing checks: what the reporter queued for the App worker."""
    sha = advance(world, branch)
    event = failed(run_id, sha)
    pipeline = await world.pipelines.finish(event)
    assert pipeline is not None
    run = pipeline.find(run_id)
    assert run is not None
    reporter = Reporter(world.ctx[SERVICES_KEY], "test")
    await reporter._fix_if_failing(pipeline, run, event)
    await reporter._fix_if_failing(pipeline, run, event)  # a retried event asks once
    queued = await world.pool.zrange(QUEUE_NAME, 0, -1)
    jobs = [deserialize_job(await world.pool.get(f"arq:job:{_text(j)}")) for j in queued]
    asked = [job for job in jobs if job.args[0] == VERIFY_EVENT and job.args[2]["run_id"] == run_id]
    assert len(asked) == asks
    if queued:
        await world.pool.zrem(QUEUE_NAME, *queued)
    return asked


async def answer(world: World, job: Job) -> None:
    _event, delivery, payload = job.args
    await world.send(VERIFY_EVENT, payload, delivery)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def automatic(world: World, number: int) -> list[Any]:
    found = await world.pipelines.get(pipeline_id(FULL, number))
    assert found is not None
    return [run for run in found.runs if run.automatic]


async def test_failing_checks_start_fixing_runs_at_most_n_in_a_row(world: World) -> None:
    set_config(world, CONFIG)
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    delivery = await world.send(
        "issue_comment", world.issue_comment("/trimo run --agent script echo", number=1)
    )
    first = await world.job(run_id_for(issue.number, delivery))
    assert first is not None and [c.name for c in first.verify] == ["tests", "lint"]

    await finish_failing(world, first.run_id, first.branch)
    [fix] = await automatic(world, 1)
    request = await world.job(fix.run_id)
    assert request is not None and request.mode == "code" and request.agent == "script"
    [check] = request.failing_checks
    assert (check.name, check.conclusion, check.title, check.verify) == (
        "tests", "failed", "exit code 1", True,
    )  # fmt: skip
    assert check.summary.endswith("\nboom") and len(check.summary) == 4000
    assert "checks failed on branch" in request.prompt and "tests" in request.prompt
    said = [c for c in world.bot_comments(1) if "So Trimo starts a run to fix them" in c]
    assert len(said) == 1 and "automatic attempt 1 of 2" in said[0] and "`tests`" in said[0]

    await finish_failing(world, fix.run_id, first.branch)
    runs = await automatic(world, 1)
    assert len(runs) == 2
    assert any("last automatic attempt" in c for c in world.bot_comments(1))

    await finish_failing(world, runs[1].run_id, first.branch)
    assert len(await automatic(world, 1)) == 2, "a third automatic run in a row started"

    # A person's request starts the count again: its failing checks are answered again.
    delivery = await world.send(
        "issue_comment", world.issue_comment("/trimo run --agent script echo", number=1)
    )
    person = run_id_for(issue.number, delivery)
    pipeline = await world.pipelines.get(pipeline_id(FULL, 1))
    assert pipeline is not None and pipeline.automatic_runs == 0
    await finish_failing(world, person, first.branch)
    assert len(await automatic(world, 1)) == 3


async def test_no_fixing_run_without_attempts(
    world: World,
) -> None:
    set_config(world, CONFIG.replace("verify_fix_attempts: 2", "verify_fix_attempts: 0"))
    world.state.add_issue(OWNER, REPO, TITLE, "details")
    delivery = await world.send(
        "issue_comment", world.issue_comment("/trimo run --agent script echo", number=1)
    )
    request = await world.job(run_id_for(1, delivery))
    assert request is not None
    await finish_failing(world, request.run_id, request.branch, asks=0)
    assert await automatic(world, 1) == []
    assert not [c for c in world.bot_comments(1) if "to fix them" in c]


async def test_a_person_who_asked_meanwhile_goes_instead(world: World) -> None:
    set_config(world, CONFIG)
    world.state.add_issue(OWNER, REPO, TITLE, "details")
    delivery = await world.send(
        "issue_comment", world.issue_comment("/trimo run --agent script echo", number=1)
    )
    request = await world.job(run_id_for(1, delivery))
    assert request is not None
    [asked] = await ask_for_fix(world, request.run_id, request.branch)
    await world.send(
        "issue_comment", world.issue_comment("/trimo run --agent script echo again", number=1)
    )
    await answer(world, asked)
    assert await automatic(world, 1) == []
