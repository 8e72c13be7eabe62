"""The reporter against GitHub as it really is: real Redis, the stand-in's targeted faults.

Runs are accepted through the App worker (`handle_event`), their events are put on the
real stream, and `Reporter.step` reports them. Each test breaks one thing on GitHub's
side and checks that the run's trouble stays that run's, and that people see the rest.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis, create_pool
from pydantic import SecretStr

from app.conversation.naming import pipeline_id
from app.github.client import RepoAPI
from app.ops.worker import SERVICES_KEY, build_services, handle_event
from app.redisio import hget
from app.reporting import owed, runview
from app.reporting import reporter as reporter_module
from app.reporting.budget import Limits, WriteBudget
from app.reporting.channels import steps as steps_module
from app.reporting.channels.steps import STEPS_PREFIX, off_flag
from app.reporting.reporter import DEAD_LETTERS, Reporter
from app.runs.pipelines import PipelineRun
from app.services import Services
from app.settings import AppSettings
from runner import contract as keys
from runner.contract import RunMode, run_queue
from runner.job import (
    CommitInfo,
    EgressBlocked,
    Outcome,
    Pushed,
    PushRefused,
    RunEvent,
    RunFinished,
    RunStarted,
)
from runner.redisurl import redis_settings
from tests.fakegithub import FakeState, Rounds, RunningFakeGitHub

pytestmark = [pytest.mark.redis]

OWNER = "octo-org"
REPO = "widgets"
FULL = f"{OWNER}/{REPO}"
WRITER = "alice"


@dataclass
class World:
    gh: RunningFakeGitHub
    state: FakeState
    pool: ArqRedis
    services: Services
    reporter: Reporter
    corpora: Path
    installation_id: int

    async def accept(
        self, title: str = "Fix the login page", command: str = "/trimo run echo hi"
    ) -> tuple[int, str]:
        """A new issue with `command`, accepted by the App worker: (number, run id)."""
        issue = self.state.add_issue(OWNER, REPO, title, "details", WRITER)
        comment = self.state.add_comment(OWNER, REPO, issue.number, command, WRITER)
        payload = json.loads(
            (self.corpora / "webhooks" / "issue_comment.created.1.json").read_text()
        )
        payload["repository"].update(
            name=REPO, full_name=FULL, clone_url=self.gh.clone_url(OWNER, REPO),
            default_branch="main",
        )  # fmt: skip
        payload["repository"]["owner"] = {**payload["repository"]["owner"], "login": OWNER}
        payload["installation"] = {"id": self.installation_id, "node_id": "MDIz"}
        user = {**payload["comment"]["user"], "login": WRITER, "type": "User"}
        payload["issue"].update(number=issue.number, title=title, body="details", state="open")
        payload["issue"].pop("pull_request", None)
        payload["comment"].update(id=comment.id, body=command, user=user)
        payload["comment"]["performed_via_github_app"] = None
        payload["sender"] = user
        delivery = str(uuid.uuid4())
        ctx = {"redis": self.pool, "job_try": 1, SERVICES_KEY: self.services}
        await handle_event(ctx, "issue_comment", delivery, payload)
        return issue.number, f"{pipeline_id(FULL, issue.number)}-{delivery[:12]}"

    async def emit(self, run_id: str, event: RunEvent) -> None:
        await self.pool.xadd(
            keys.ALL_RUN_EVENTS, {"run_id": run_id, "event": event.model_dump_json()}
        )

    async def started(self, run_id: str, mode: RunMode = "code") -> None:
        base = self.gh.fake.branch_sha(OWNER, REPO, "main")
        assert base is not None
        await self.emit(
            run_id,
            RunStarted(
                run_id=run_id, runner="r1", agent="script", image="img",
                branch="b", base_sha=base, mode=mode,
            ),
        )  # fmt: skip

    async def run(self, run_id: str) -> PipelineRun:
        found = await self.services.pipelines.get_run(run_id)
        assert found is not None
        return found[1]

    async def branch(self, number: int) -> str:
        pipeline = await self.services.pipelines.get(pipeline_id(FULL, number))
        assert pipeline is not None
        return pipeline.branch

    def branch_from_main(self, branch: str) -> None:
        """The pipeline branch exists on GitHub (the runner pushed it)."""
        bare = self.gh.fake.bare_path(OWNER, REPO)
        subprocess.run(["git", "-C", str(bare), "branch", branch, "main"], check=True)

    def check_of(self, run_id: str) -> Any:
        matches = [c for c in self.state.check_runs.values() if c.external_id == run_id]
        return max(matches, key=lambda c: c.id) if matches else None

    def bot_comments(self, number: int) -> list[str]:
        return [c.body for c in self.state.comments_on(number, OWNER, REPO) if c.via_app]

    async def pending(self) -> int:
        info = await self.pool.xpending(keys.ALL_RUN_EVENTS, reporter_module.GROUP)
        return int(info["pending"])

    async def owed(self) -> int:
        """Channel updates runs still owe (see `app.reporting.owed`)."""
        return int(await self.pool.zcard(owed.OWED))

    async def settle(self, steps: int = 12) -> None:
        """Step until nothing is pending or owed (or `steps` ran out)."""
        for _ in range(steps):
            await self.reporter.step()
            if await self.pending() == 0 and await self.owed() == 0:
                return


@pytest.fixture
def fake() -> Iterator[RunningFakeGitHub]:
    with RunningFakeGitHub() as gh:
        yield gh


@pytest.fixture
async def world(fake: RunningFakeGitHub, redis_url: str, corpora: Path) -> AsyncIterator[World]:
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
    yield World(fake, fake.state, pool, services, reporter, corpora, creds.installation_id)
    await reporter.drain()
    await pool.aclose()


CALL_TIMEOUT = 5.0
"""The reporter's wait for GitHub in the tests that make one call go unanswered: every
other call of the step must answer within it, and on a busy machine the stand-in's
answers can take over a second (10 s in production)."""


async def settled_within(world: World, seconds: float) -> None:
    """Step the reporter until nothing is pending or owed; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    await world.reporter.step()
    while await world.pending() or await world.owed():
        assert time.monotonic() < deadline, f"still pending or owed after {seconds:.0f}s"
        await asyncio.sleep(0.05)
        await world.reporter.step()


def finished(run_id: str, outcome: Outcome = Outcome.SUCCESS, commits: int = 0) -> RunFinished:
    return RunFinished(
        run_id=run_id,
        outcome=outcome,
        commits=[CommitInfo(sha=f"{i:040x}", subject=f"change {i}") for i in range(commits)],
    )


# --- the happy path, concurrent first word ------------------------------------------------


async def test_started_shows_in_progress_rocket_and_progress(world: World) -> None:
    number, run_id = await world.accept()
    await world.started(run_id)
    await world.settle()
    check = world.check_of(run_id)
    assert check.status == "in_progress"
    assert any("is running" in body for body in world.bot_comments(number))
    comment_id = (await world.run(run_id)).comment_id
    assert comment_id is not None
    assert "rocket" in [r.content for r in world.state.comments[comment_id].reactions]
    assert await world.pending() == 0


async def test_a_start_reported_before_its_check_run_exists_still_shows_in_progress(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run is queued beside making its check run: its runner may start it first."""
    real = RepoAPI.create_check_run
    taken: list[int] = []

    async def behind_the_runner(self: RepoAPI, **kwargs: Any) -> int:
        await world.started(kwargs["external_id"])
        taken.append(await world.reporter.step())  # the start, before the check run exists
        return await real(self, **kwargs)

    monkeypatch.setattr(RepoAPI, "create_check_run", behind_the_runner)
    number, run_id = await world.accept()
    assert taken == [1]
    await settled_within(world, 30)
    assert world.check_of(run_id).status == "in_progress"
    assert any("is running" in body for body in world.bot_comments(number))


def calls(round_trip: list[str]) -> list[str]:
    """A round trip's calls, ids as N, in a fixed order (those of one round come in any)."""
    return sorted(re.sub(r"/\d+(?=/|$)", "/N", call) for call in round_trip)


async def test_a_run_is_queued_after_one_round_trip_and_shows_in_progress_first(
    world: World,
) -> None:
    """Comment → check run in progress, each GitHub round trip let go by the test: 👀 and the
    queued run come after one (the asker's role, the config, the run's token and 👀 for an
    owner's comment, at once); the branch lookups and the progress comment go while its
    runner starts, then the check run on the commit found; the runner's start is shown in
    progress before 🚀 and the comment."""
    await world.accept("warm up")  # the App's own token, the installation's permissions
    world.state.rounds = rounds = Rounds()
    queue = run_queue("default")
    accepting = asyncio.create_task(world.accept())
    try:
        assert calls(await rounds.take(4)) == [
            "GET /repos/octo-org/widgets/collaborators/alice/permission",
            "GET /repos/octo-org/widgets/contents/.github/trimo.yml",
            "POST /app/installations/N/access_tokens",
            "POST /repos/octo-org/widgets/issues/comments/N/reactions",
        ]
        deadline = time.monotonic() + 30
        while await world.pool.zcard(queue) < 2:  # queued while the next round is held
            assert time.monotonic() < deadline, f"not queued; held: {rounds.held()}"
            await asyncio.sleep(0.01)
        assert calls(await rounds.take(3)) == [
            "GET /repos/octo-org/widgets/git/ref/heads/main",
            "GET /repos/octo-org/widgets/git/ref/heads/trimo/2-fix-the-login-page",
            "POST /repos/octo-org/widgets/issues/N/comments",
        ]
        assert calls(await rounds.take(1)) == ["POST /repos/octo-org/widgets/check-runs"]
        _number, run_id = await accepting
        await world.started(run_id)
        reporting = asyncio.create_task(world.reporter.step())
        assert calls(await rounds.take(1)) == ["PATCH /repos/octo-org/widgets/check-runs/N"]
        assert calls(await rounds.take(2)) == [
            "PATCH /repos/octo-org/widgets/issues/comments/N",
            "POST /repos/octo-org/widgets/issues/comments/N/reactions",
        ]
        await reporting
        assert rounds.held() == []
    finally:
        rounds.open()
        await asyncio.gather(accepting, return_exceptions=True)
    assert world.check_of(run_id).status == "in_progress"


# --- report objects gone ---------------------------------------------------------------------


async def test_a_deleted_progress_comment_is_posted_again(world: World) -> None:
    _number, run_id = await world.accept()
    old = (await world.run(run_id)).progress_comment_id
    assert old is not None
    world.state.delete_comment(old)

    await world.started(run_id)
    await world.settle()

    new = (await world.run(run_id)).progress_comment_id
    assert new is not None and new != old
    assert "is running" in world.state.comments[new].body
    assert world.check_of(run_id).status == "in_progress"
    assert await world.pending() == 0

    await world.emit(run_id, finished(run_id))
    await world.settle()
    assert "finished after" in world.state.comments[new].body


async def test_a_404_on_a_note_and_a_check_run_that_are_there_makes_no_second_one(
    world: World,
) -> None:
    """GitHub's 404 may be a hiccup: a second note or check run would leave the first one
    saying "running" for ever, so Trimo looks before it makes another."""
    _number, run_id = await world.accept()
    run = await world.run(run_id)
    world.state.fail_next("PATCH", rf"/issues/comments/{run.progress_comment_id}$", 404)
    world.state.fail_next("PATCH", rf"/check-runs/{run.check_run_id}$", 404)

    await world.started(run_id)
    await world.emit(run_id, finished(run_id))
    await world.settle()

    after = await world.run(run_id)
    assert (after.progress_comment_id, after.check_run_id) == (
        run.progress_comment_id,
        run.check_run_id,
    )
    assert [c.id for c in world.state.check_runs.values() if c.external_id == run_id] == [
        run.check_run_id
    ]
    assert run.progress_comment_id is not None
    assert "finished after" in world.state.comments[run.progress_comment_id].body
    assert world.check_of(run_id).status == "completed"
    assert await world.pending() == 0


async def test_a_running_note_that_lands_late_never_undoes_the_last_word(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GitHub may carry out a write after Trimo stopped waiting for its answer; a late
    "running" must not land after "finished", so the last word waits it out."""
    _number, run_id = await world.accept()
    note = (await world.run(run_id)).progress_comment_id
    assert note is not None
    monkeypatch.setattr(steps_module, "CALL_TIMEOUT_SECONDS", CALL_TIMEOUT)
    monkeypatch.setattr(steps_module, "LATE_WRITE_SECONDS", 3.0)
    real = RepoAPI.update_comment
    landing: list[asyncio.Task[None]] = []

    async def answered_late(self: RepoAPI, comment_id: int, body: str) -> None:
        if comment_id == note and not landing:
            try:
                await asyncio.Event().wait()  # no answer, until Trimo stops waiting
            except asyncio.CancelledError:

                async def land() -> None:  # yet GitHub does it, a while after
                    await asyncio.sleep(1.0)
                    world.state.edit_comment(comment_id, body)

                landing.append(asyncio.create_task(land()))
                raise
        await real(self, comment_id, body)

    monkeypatch.setattr(RepoAPI, "update_comment", answered_late)
    await world.started(run_id)
    await world.emit(run_id, finished(run_id))
    await settled_within(world, 120)
    await asyncio.gather(*landing)

    assert landing, "the running note was never written"
    assert "finished after" in world.state.comments[note].body
    assert world.check_of(run_id).status == "completed"


async def test_a_deleted_check_run_is_made_again(world: World) -> None:
    _number, run_id = await world.accept()
    old = world.check_of(run_id)
    world.state.delete_check_run(old.id)

    await world.started(run_id)
    await world.emit(run_id, finished(run_id))
    await world.settle()

    new = world.check_of(run_id)
    assert new is not None and new.id != old.id
    assert (new.status, new.conclusion) == ("completed", "success")
    assert (await world.run(run_id)).check_run_id == new.id


@pytest.mark.parametrize("reason", ["no_diff", "base_deleted"])
async def test_a_pull_request_github_refuses_is_explained_not_retried(
    world: World, reason: str
) -> None:
    number, run_id = await world.accept()
    world.branch_from_main(await world.branch(number))
    world.state.refuse_pull(reason)  # type: ignore[arg-type]

    await world.started(run_id)
    await world.emit(run_id, finished(run_id, commits=1))
    await world.settle()

    assert await world.pending() == 0
    final = [b for b in world.bot_comments(number) if "finished after" in b]
    assert final and "GitHub would not open a pull request" in final[0]
    assert world.check_of(run_id).conclusion == "success"
    assert (await world.run(run_id)).status == "finished"


async def test_a_pull_request_opened_meanwhile_is_used(world: World) -> None:
    number, run_id = await world.accept()
    branch = await world.branch(number)
    world.branch_from_main(branch)
    world.state.refuse_pull("exists")

    await world.started(run_id)
    await world.emit(run_id, finished(run_id, commits=1))
    await world.settle()

    [pull] = world.state.pulls_for(branch)
    assert pull.title == "Opened by hand"
    final = [b for b in world.bot_comments(number) if "finished after" in b]
    assert final and f"pull request #{pull.number}" in final[0]
    assert await world.pending() == 0


# --- one run's trouble is that run's alone -----------------------------------------------------


async def test_github_failing_one_run_holds_back_no_other(world: World) -> None:
    number_a, run_a = await world.accept("first")
    number_b, run_b = await world.accept("second")
    comment_a = (await world.run(run_a)).progress_comment_id
    world.state.fail_next("PATCH", rf"/issues/comments/{comment_a}$", 502, times=100)

    await world.started(run_a)
    await world.started(run_b)
    await world.emit(run_b, finished(run_b))
    await world.reporter.step()

    assert world.check_of(run_b).conclusion == "success"
    assert any("finished after" in b for b in world.bot_comments(number_b))
    assert (await world.run(run_b)).status == "finished"
    assert world.check_of(run_a).status == "in_progress"  # A's comment holds not even A's check
    assert await world.pending() == 0
    assert await world.owed() == 1  # run A's comment waits its turn

    # A's comment keeps failing: after a bounded number of tries it is parked.
    await world.settle(steps=reporter_module.TRANSIENT_TRIES + 2)
    assert await world.owed() == 0
    [parked] = await world.reporter.parked()
    assert (parked["run_id"], parked["channel"]) == (run_a, "comment")
    assert "502" in parked["error"]
    assert (await world.run(run_a)).status == "running"  # its bookkeeping went on
    assert not any("is running" in b for b in world.bot_comments(number_a))

    # GitHub is back; the operator replays it, and the comment says what the run is now.
    world.state.faults.clear()
    assert await world.reporter.replay(parked["id"])
    await world.settle()
    assert any("is running" in b for b in world.bot_comments(number_a))
    assert await world.reporter.parked() == []


async def test_a_comment_owed_anew_while_it_is_written_is_written_again_at_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's end came while its comment was being written: the comment's lane goes again
    in the same step (it used to wait for the next, up to a second later in the App)."""
    number, run_id = await world.accept("racing")
    await world.started(run_id)
    comment = world.reporter.comment
    real = comment.catch_up
    passes = 0

    async def racing(target: Any) -> None:
        nonlocal passes
        passes += 1
        await real(target)
        if passes == 1:  # the run's end arrives while this write is under way
            await world.reporter.handle(run_id, finished(run_id))

    monkeypatch.setattr(comment, "catch_up", racing)
    await world.reporter.step()
    assert passes == 2
    assert any("finished after" in body for body in world.bot_comments(number))
    assert await world.owed() == 0


async def test_a_slow_answer_holds_back_only_its_run(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    _number_a, run_a = await world.accept("slow")
    _number_b, run_b = await world.accept("quick")
    slow_comment = (await world.run(run_a)).progress_comment_id
    monkeypatch.setattr(steps_module, "CALL_TIMEOUT_SECONDS", CALL_TIMEOUT)
    real = RepoAPI.update_comment

    async def sluggish(self: RepoAPI, comment_id: int, body: str) -> None:
        if comment_id == slow_comment:
            await asyncio.Event().wait()  # no answer, until Trimo stops waiting
        await real(self, comment_id, body)

    monkeypatch.setattr(RepoAPI, "update_comment", sluggish)
    await world.started(run_a)
    await world.started(run_b)
    await world.reporter.step()
    assert world.check_of(run_b).status == "in_progress"
    assert world.check_of(run_a).status == "in_progress"  # not held by its own comment
    assert await world.pending() == 0
    tries = await hget(world.pool, owed.LANE_TRIES, owed.lane(run_a, "comment"))
    assert tries == "1"  # counted as one failed try, retried later


async def test_a_deleted_issue_gives_up_that_runs_output_and_the_pipeline_goes_on(
    world: World,
) -> None:
    number, run_id = await world.accept()
    world.state.delete_issue(OWNER, REPO, number)

    await world.started(run_id)
    await world.emit(run_id, finished(run_id))
    await world.settle(steps=reporter_module.GONE_TRIES + 3)

    assert await world.pending() == 0
    assert await hget(world.pool, STEPS_PREFIX + run_id, off_flag("comment")) is not None
    assert (await world.run(run_id)).status == "finished"
    assert await world.pool.xlen(DEAD_LETTERS) == 0  # given up, not parked
    assert world.check_of(run_id).status == "completed"  # it is on the commit, not the issue


async def test_a_suspended_installation_never_stops_the_reporter(world: World) -> None:
    number, run_id = await world.accept()
    world.state.suspend_installation(OWNER)

    await world.started(run_id)
    await world.emit(run_id, finished(run_id))
    await world.settle(steps=reporter_module.GONE_TRIES + 3)

    assert await world.pending() == 0
    assert (await world.run(run_id)).status == "finished"
    assert not any("finished after" in b for b in world.bot_comments(number))


async def test_a_bug_parks_the_event_and_it_can_be_replayed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    _number, run_id = await world.accept()
    await world.started(run_id)
    await world.settle()

    def broken(*_args: object) -> tuple[str, str]:
        raise KeyError("a bug")

    monkeypatch.setattr(runview, "check_finished", broken)
    await world.emit(run_id, finished(run_id))
    await world.settle(steps=reporter_module.BUG_TRIES + 2)
    assert await world.pending() == 0
    [parked] = await world.reporter.parked()
    assert parked["run_id"] == run_id and "KeyError" in parked["error"]
    assert (await world.run(run_id)).status == "finished"  # the pipeline is not stuck

    monkeypatch.undo()
    assert await world.reporter.replay(parked["id"])
    assert await world.reporter.parked() == []


async def test_a_malformed_event_is_parked(world: World) -> None:
    await world.pool.xadd(keys.ALL_RUN_EVENTS, {"run_id": "x", "event": "{not json"})
    await world.settle()
    assert await world.pending() == 0
    [parked] = await world.reporter.parked()
    assert parked["run_id"] == "x" and "malformed" in parked["error"]


# --- the write budget ----------------------------------------------------------------------


async def test_live_updates_are_merged_and_paced_by_the_budget(world: World) -> None:
    clock = [1_000_000.0]
    world.reporter.budget = WriteBudget(world.pool, Limits(), clock=lambda: clock[0])
    _number, run_id = await world.accept()
    await world.started(run_id)
    await world.settle()

    def patches() -> int:
        return len(world.state.requests_to("PATCH", r"/check-runs/\d+$"))

    after_start = patches()

    for _ in range(5):  # news, but within the interval: nothing goes out
        await world.emit(run_id, Pushed(branch="b", sha="a" * 40, commits=1))
    await world.settle()
    await world.reporter.flush_due()
    assert patches() == after_start

    clock[0] += 5  # one merged update with the latest state
    await world.reporter.flush_due()
    await world.reporter.flush_due()
    assert patches() == after_start + 1
    assert "Commits pushed | 5" in world.check_of(run_id).output["summary"]

    clock[0] += 30  # nothing new: no update before the minute is up
    await world.reporter.flush_due()
    assert patches() == after_start + 1
    clock[0] += 31
    await world.reporter.flush_due()
    assert patches() == after_start + 2


async def test_a_live_update_that_lands_after_the_last_word_never_undoes_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a starved App process the run's report lock can expire while a live update is on
    its way: another process reports the run's end meanwhile, and the live update (in
    progress) lands after it. The check run must still end completed."""
    clock = [1_000_000.0]
    world.reporter.budget = WriteBudget(world.pool, Limits(), clock=lambda: clock[0])
    _number, run_id = await world.accept()
    await world.started(run_id)
    await world.settle()
    other = Reporter(world.services, consumer="other")  # the second App process
    real = RepoAPI.update_check_run
    overtaken: list[str] = []

    async def overtaken_live(self: RepoAPI, check_run_id: int, **fields: Any) -> None:
        if fields.get("conclusion") is None and not overtaken:
            overtaken.append("live")
            await world.pool.delete(reporter_module.RUN_LOCK_PREFIX + run_id)  # expired
            await world.emit(run_id, finished(run_id))
            for _ in range(20):
                await other.step()
                if world.check_of(run_id).status == "completed":
                    break
            overtaken.append(world.check_of(run_id).status)
        await real(self, check_run_id, **fields)

    monkeypatch.setattr(RepoAPI, "update_check_run", overtaken_live)
    await world.emit(run_id, Pushed(branch="b", sha="a" * 40, commits=1))
    await world.settle()
    clock[0] += 5
    await world.reporter.flush_due()
    await other.drain()

    assert overtaken == ["live", "completed"]  # the end was shown before the live update
    check = world.check_of(run_id)
    assert (check.status, check.conclusion) == ("completed", "success")


async def test_a_full_budget_holds_the_last_word_until_there_is_room(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check run's end goes first; the comment waits for room, not the check run."""
    monkeypatch.setattr(reporter_module, "OVER_BUDGET_WAIT_SECONDS", 0.0)
    clock = [2_000_000.0]
    limits = Limits(per_minute=4, live_per_minute=1)
    world.reporter.budget = WriteBudget(world.pool, limits, clock=lambda: clock[0])
    number, run_id = await world.accept()
    await world.started(run_id)  # three writes
    await world.settle()
    await world.emit(run_id, finished(run_id))  # two more: one must wait
    await world.settle(steps=3)
    assert world.check_of(run_id).conclusion == "success"
    assert not any("finished after" in b for b in world.bot_comments(number))
    assert await world.pending() == 0 and await world.owed() == 1
    clock[0] += 61
    await world.settle()
    assert await world.owed() == 0
    assert any("finished after" in b for b in world.bot_comments(number))


# --- a push GitHub refused -------------------------------------------------------------------

REFUSAL = PushRefused(
    branch="trimo/1-fix",
    sha="c0ffee" + "0" * 34,
    reason="refusing to allow a GitHub App to create or update workflow `.github/workflows/ci.yml`"
    " without `workflows` permission\nmore detail GitHub gave",
    paths=[".github/workflows/ci.yml"],
    kept_ref="refs/trimo/kept/run-1",
)


async def test_a_refused_push_is_shown_at_once_and_in_the_last_word(world: World) -> None:
    clock = [3_000_000.0]
    world.reporter.budget = WriteBudget(world.pool, Limits(), clock=lambda: clock[0])
    number, run_id = await world.accept()
    await world.started(run_id)
    await world.emit(run_id, Pushed(branch="b", sha="a" * 40, commits=1))
    await world.emit(run_id, REFUSAL)
    await world.settle()
    await world.reporter.flush_due()  # no waiting for the interval
    live = world.check_of(run_id).output["summary"]
    assert "GitHub refused commit `c0ffee0`" in live and "more detail" not in live

    await world.emit(
        run_id, finished(run_id, Outcome.FAILURE, commits=1).model_copy(update={"refused": REFUSAL})
    )
    await world.settle()
    [final] = [b for b in world.bot_comments(number) if "failed after" in b]
    check = world.check_of(run_id)
    for text in (final, check.output["summary"]):
        assert "`c0ffee0`" in text and "`.github/workflows/ci.yml`" in text
        assert "without `workflows` permission" in text.replace("\\", "")
        assert "kept for this pipeline" in text and "/trimo retry" in text
        assert "more detail GitHub gave" not in text
    assert "nothing was left to save" not in final


async def test_hosts_the_network_blocked_are_shown_in_the_check_run(world: World) -> None:
    _, run_id = await world.accept()
    await world.started(run_id)
    await world.emit(run_id, EgressBlocked(hosts={"example.org": 2, "evil.test": 1}))
    await world.emit(run_id, EgressBlocked(hosts={"example.org": 1, "`x`.test": 1}))
    await world.emit(run_id, finished(run_id, Outcome.FAILURE))
    await world.settle()
    summary = world.check_of(run_id).output["summary"]
    blocked = [line for line in summary.splitlines() if line.startswith("- blocked:")]
    assert blocked == [
        "- blocked: `example.org` ×3 — add it to `allowed_hosts` in `.github/trimo.yml`",
        "- blocked: `` `x`.test `` ×1 — add it to `allowed_hosts` in `.github/trimo.yml`",
        "- blocked: `evil.test` ×1 — add it to `allowed_hosts` in `.github/trimo.yml`",
    ]


def test_a_run_that_blocked_nothing_says_nothing_of_it() -> None:
    view = runview.RunView(run_id="r1").apply(finished("r1"))
    _, summary = runview.check_finished(view, "trimo/1-fix")
    assert "blocked" not in summary and "refused these hosts" not in summary


async def test_a_finished_runs_log_stays_for_the_retention_days(world: World) -> None:
    _number, run_id = await world.accept()
    await world.started(run_id)
    await world.pool.xadd(keys.run_events(run_id), {"event": "{}"})
    await world.settle()
    assert await world.pool.ttl(keys.run_events(run_id)) == -1  # kept while the run goes
    await world.emit(run_id, finished(run_id))
    await world.settle()
    days = world.services.settings.log_retention_days
    assert days == 14
    assert days * 86400 - 60 < await world.pool.ttl(keys.run_events(run_id)) <= days * 86400
