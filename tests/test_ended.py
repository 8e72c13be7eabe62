"""Report objects that reach their run after it ended (`app.runs.ended`).

A delivery's first try makes the run's check run and progress comment, then fails before
it records them on the run (the pipeline lock could not be had: the fault is injected at
`Pipelines.attach`). The run is in line already, so it goes ahead without them: it starts,
ends, is dropped or cannot start. The retry then records them on a run that is over, and
nobody else will ever complete them. Each interleaving is made deterministic here by
running the retry at a chosen point; Redis is real, GitHub is the stand-in, and the run's
events go through the runner's own publisher and the App's reporter.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from arq.connections import ArqRedis, create_pool
from arq.worker import Retry
from pydantic import SecretStr
from redis.exceptions import LockError

from app.conversation.naming import pipeline_id
from app.ops.worker import SERVICES_KEY, build_services, handle_event
from app.reporting.reporter import Reporter
from app.runs.pipelines import Pipeline, PipelineRun, Pipelines
from app.services import Services
from app.settings import AppSettings
from runner.job import CommitInfo, Outcome, RunEvent, RunFinished, RunStarted
from runner.publisher import EventPublisher
from runner.redisurl import redis_settings
from tests.fakegithub import FakeState, RunningFakeGitHub

pytestmark = [pytest.mark.redis]

OWNER = "octo-org"
REPO = "widgets"
FULL = f"{OWNER}/{REPO}"
WRITER = "alice"
FIRST = "/trimo run echo one"
SECOND = "/trimo run echo two"
THIRD = "/trimo run echo three"


@dataclass
class World:
    gh: RunningFakeGitHub
    state: FakeState
    pool: ArqRedis
    services: Services
    reporter: Reporter
    publisher: EventPublisher
    corpora: Path
    installation_id: int
    number: int = 0

    def corpus(self, name: str) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads((self.corpora / "webhooks" / name).read_text())
        payload["repository"].update(
            name=REPO, full_name=FULL, clone_url=self.gh.clone_url(OWNER, REPO),
            default_branch="main",
        )  # fmt: skip
        payload["repository"]["owner"] = {**payload["repository"]["owner"], "login": OWNER}
        payload["installation"] = {"id": self.installation_id, "node_id": "MDIz"}
        return payload

    def comment(self, body: str) -> dict[str, Any]:
        """An `issue_comment.created` payload of `body` by the writer on the issue."""
        comment = self.state.add_comment(OWNER, REPO, self.number, body, WRITER)
        payload = self.corpus("issue_comment.created.1.json")
        user = {**payload["comment"]["user"], "login": WRITER, "type": "User"}
        payload["issue"].update(number=self.number, title="Fix it", body="details", state="open")
        payload["issue"].pop("pull_request", None)
        payload["comment"].update(id=comment.id, body=body, user=user)
        payload["comment"]["performed_via_github_app"] = None
        payload["sender"] = user
        return payload

    async def deliver(
        self, event: str, payload: dict[str, Any], delivery: str, job_try: int = 1
    ) -> None:
        ctx = {"redis": self.pool, "job_try": job_try, SERVICES_KEY: self.services}
        await handle_event(ctx, event, delivery, payload)

    async def ask(self, command: str) -> str:
        """A comment with `command`, handled at its first try: the run's id."""
        delivery = str(uuid.uuid4())
        await self.deliver("issue_comment", self.comment(command), delivery)
        return run_of(self.number, delivery)

    async def publish(self, run_id: str, *events: RunEvent) -> None:
        """The run's events, sent the way a runner sends them (its own stream first)."""
        for event in events:
            self.publisher.publish(run_id, event)
        assert await asyncio.to_thread(self.publisher.flush, 10.0)

    async def settle(self) -> None:
        """The reporter reports everything on the stream."""
        for _ in range(12):
            if await self.reporter.step() == 0:
                return
        raise AssertionError("the reporter did not settle")

    async def run(self, run_id: str) -> tuple[Pipeline, PipelineRun]:
        found = await self.services.pipelines.get_run(run_id)
        assert found is not None
        return found

    def check_of(self, run_id: str) -> Any:
        [check] = [c for c in self.state.check_runs.values() if c.external_id == run_id]
        return check

    def progress_of(self, run_id: str) -> str:
        [body] = [
            c.body
            for c in self.state.comments_on(self.number, OWNER, REPO)
            if c.via_app and run_id in c.body
        ]
        return body


def run_of(number: int, delivery: str) -> str:
    return f"{pipeline_id(FULL, number)}-{delivery[:12]}"


def started(run_id: str) -> RunStarted:
    return RunStarted(
        run_id=run_id, runner="r1", agent="script", image="img", branch="b", base_sha="0" * 40
    )


def finished(run_id: str, outcome: Outcome = Outcome.SUCCESS) -> RunFinished:
    commits = [CommitInfo(sha="c" * 40, subject="Say two")] if outcome is Outcome.SUCCESS else []
    reason = "" if outcome is Outcome.SUCCESS else "the agent said no"
    return RunFinished(run_id=run_id, outcome=outcome, reason=reason, commits=commits)


@pytest.fixture
def fake() -> Iterator[RunningFakeGitHub]:
    with RunningFakeGitHub() as gh:
        yield gh


@pytest.fixture
async def world(
    fake: RunningFakeGitHub, redis_url: str, corpora: Path, tmp_path: Path
) -> AsyncIterator[World]:
    creds = fake.install_app(OWNER)
    fake.create_repo(
        OWNER, REPO, {"README.md": "# widgets\n", ".github/trimo.yml": "agent: script\n"}
    )
    fake.state.set_role(OWNER, REPO, WRITER, "write")
    pool = await create_pool(redis_settings(redis_url))
    settings = AppSettings(
        github_app_id=creds.app_id,
        github_private_key=SecretStr(creds.private_key_pem),
        github_api_url=fake.api_url,
        redis_url=redis_url,
        app_slug="trimo",
        webhook_secret=SecretStr("secret"),
    )
    services = build_services(settings, pool, github_retry=False)
    reporter = Reporter(services, consumer="test")
    reporter.backoff = 0.0
    await reporter.ensure_group()
    client = redis.Redis.from_url(redis_url)
    publisher = EventPublisher(client, tmp_path / "spool")
    issue = fake.state.add_issue(OWNER, REPO, "Fix it", "details", WRITER)
    yield World(
        fake, fake.state, pool, services, reporter, publisher, corpora,
        creds.installation_id, issue.number,
    )  # fmt: skip
    publisher.close()
    client.close()
    await reporter.drain()
    await pool.aclose()


@contextmanager
def attach_fails(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """While inside: recording report objects on a run fails as when the pipeline lock
    cannot be had (another App worker holds it for longer than `LOCK_SECONDS`)."""
    real = Pipelines.attach

    async def no_lock(self: Pipelines, run_id: str, **objects: Any) -> Any:
        raise LockError("Unable to acquire lock within the time specified")

    monkeypatch.setattr(Pipelines, "attach", no_lock)
    try:
        yield
    finally:
        monkeypatch.setattr(Pipelines, "attach", real)


async def first_try_fails(world: World, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any]:
    """Ask for a second run whose first try makes its report objects and then fails to
    record them: (run id, a coroutine function delivering its retry)."""
    payload, delivery = world.comment(SECOND), str(uuid.uuid4())
    with attach_fails(monkeypatch), pytest.raises(Retry):
        await world.deliver("issue_comment", payload, delivery)
    run_id = run_of(world.number, delivery)
    _, run = await world.run(run_id)
    assert run.status == "waiting" and run.check_run_id is None
    assert run.progress_comment_id is None
    assert world.check_of(run_id).status == "queued"

    async def retry() -> None:
        await world.deliver("issue_comment", payload, delivery, job_try=2)

    return run_id, retry


async def first_run_ends(world: World, run1: str) -> None:
    """The active run ends; the reporter starts the next in line."""
    await world.publish(run1, started(run1), finished(run1))
    await world.settle()


# --- the race of issue 12: the retry finds its run over ----------------------------------------


@pytest.mark.parametrize(
    ("outcome", "conclusion", "words"),
    [
        (Outcome.SUCCESS, "success", "finished"),
        (Outcome.FAILURE, "failure", "failed"),
        (Outcome.TIMED_OUT, "timed_out", "timed out"),
    ],
)
async def test_a_check_run_recorded_after_its_run_ended_is_completed_with_its_outcome(
    world: World, monkeypatch: pytest.MonkeyPatch, outcome: Outcome, conclusion: str, words: str
) -> None:
    run1 = await world.ask(FIRST)
    run2, retry = await first_try_fails(world, monkeypatch)
    await first_run_ends(world, run1)
    assert (await world.run(run2))[1].status == "queued"  # it went ahead without them
    await world.publish(run2, started(run2), finished(run2, outcome))
    await world.settle()
    _, run = await world.run(run2)
    assert (run.status, run.outcome) == ("finished", outcome)
    assert world.check_of(run2).status == "queued"  # nobody could tell it

    await retry()

    check = world.check_of(run2)
    assert (check.status, check.conclusion) == ("completed", conclusion)
    assert words in check.output["title"]
    assert [a["identifier"] for a in check.actions] == ["retry"]
    progress = world.progress_of(run2)
    assert f"{words} after" in progress and "queued" not in progress
    if outcome is Outcome.SUCCESS:
        assert "Say two" in check.output["summary"] and "Say two" in progress
    else:
        assert "the agent said no" in check.output["summary"]
    _, run = await world.run(run2)
    assert run.check_run_id == check.id


async def test_a_check_run_recorded_after_its_run_was_dropped_is_cancelled(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await world.ask(FIRST)
    run2, retry = await first_try_fails(world, monkeypatch)
    closed = world.corpus("issues.closed.1.json")
    closed["issue"].update(number=world.number, state="closed")
    closed["issue"].pop("pull_request", None)
    await world.deliver("issues", closed, str(uuid.uuid4()))
    _, run = await world.run(run2)
    assert (run.status, run.outcome, run.started) == ("finished", Outcome.CANCELLED, False)
    assert world.check_of(run2).status == "queued"

    await retry()

    check = world.check_of(run2)
    assert (check.status, check.conclusion) == ("completed", "cancelled")
    assert "the issue was closed" in check.output["summary"]
    assert "cancelled before it started" in world.progress_of(run2)


async def test_a_check_run_recorded_after_its_run_could_not_start_is_a_failure(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    run1 = await world.ask(FIRST)
    run2, retry = await first_try_fails(world, monkeypatch)
    world.state.installations[world.installation_id].permissions["contents"] = "read"
    await first_run_ends(world, run1)  # the reporter's start of run 2 gets no token
    _, run = await world.run(run2)
    assert (run.status, run.outcome, run.started) == ("finished", Outcome.ERROR, False)

    await retry()

    check = world.check_of(run2)
    assert (check.status, check.conclusion) == ("completed", "failure")
    assert "422" in check.output["summary"]
    assert "could not start" in world.progress_of(run2)


async def test_a_retry_that_finds_a_newer_run_completes_only_its_own(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    run1 = await world.ask(FIRST)
    run2, retry = await first_try_fails(world, monkeypatch)
    await first_run_ends(world, run1)
    await world.publish(run2, started(run2), finished(run2))
    await world.settle()
    run3 = await world.ask(THIRD)
    await world.publish(run3, started(run3))
    await world.settle()

    await retry()

    assert (world.check_of(run2).status, world.check_of(run2).conclusion) == (
        "completed",
        "success",
    )
    assert world.check_of(run3).status == "in_progress"
    pipeline, run = await world.run(run3)
    assert (pipeline.active_run, run.status) == (run3, "running")


# --- two App workers: the retry on one, the run's end reported by the other --------------------


async def test_a_retry_while_another_worker_reports_the_runs_end(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reporter has read the run (no check run on it yet) and said its last word; the
    retry records the check run before the reporter records the run as over."""
    run1 = await world.ask(FIRST)
    run2, retry = await first_try_fails(world, monkeypatch)
    await first_run_ends(world, run1)
    real_finish = Pipelines.finish
    retried: list[str] = []

    async def finish_after_the_retry(self: Pipelines, event: RunFinished) -> Any:
        if event.run_id == run2 and not retried:
            retried.append(run2)
            await retry()
        return await real_finish(self, event)

    monkeypatch.setattr(Pipelines, "finish", finish_after_the_retry)
    await world.publish(run2, started(run2), finished(run2, Outcome.FAILURE))
    await world.settle()

    assert retried == [run2]
    _, run = await world.run(run2)
    assert (run.status, run.outcome) == ("finished", Outcome.FAILURE)
    check = world.check_of(run2)
    assert (check.status, check.conclusion) == ("completed", "failure")
    assert "failed after" in world.progress_of(run2)


async def test_a_retry_just_before_the_reporter_reads_the_runs_end(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's end is on the stream but not yet reported when the retry records the
    check run: both may complete it, and it ends completed with the run's outcome."""
    run1 = await world.ask(FIRST)
    run2, retry = await first_try_fails(world, monkeypatch)
    await first_run_ends(world, run1)
    await world.publish(run2, started(run2), finished(run2))

    await retry()
    await world.settle()

    check = world.check_of(run2)
    assert (check.status, check.conclusion) == ("completed", "success")
    assert "Say two" in check.output["summary"]


async def test_a_check_run_recorded_while_its_run_goes_is_left_to_the_reporter(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    run1 = await world.ask(FIRST)
    run2, retry = await first_try_fails(world, monkeypatch)
    await first_run_ends(world, run1)
    await world.publish(run2, started(run2))
    await world.settle()

    await retry()
    assert world.check_of(run2).status == "queued"  # not over: the reporter carries on

    await world.publish(run2, finished(run2))
    await world.settle()
    check = world.check_of(run2)
    assert (check.status, check.conclusion) == ("completed", "success")
