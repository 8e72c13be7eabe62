"""The App worker end to end: real webhook payloads in, GitHub (the stand-in) and Redis out.

`handle_event` is called directly with an arq-like ctx; Redis is real, GitHub is
`tests.fakegithub`. Payloads come from the corpora, changed to point at the stand-in.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis, create_pool
from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix
from arq.jobs import deserialize_job
from arq.worker import Retry
from githubkit import GitHub
from pydantic import SecretStr

from app.conversation.commands import USAGE
from app.conversation.naming import pipeline_id
from app.conversation.policy import RunSettings
from app.conversation.repoconfig import ConfigError, parse_repo_config
from app.edge.web import HANDLER_FUNCTION, QUEUE_NAME
from app.github.client import RepoAPI
from app.github.installations import REPO_INSTALLATIONS, installation_for_repo
from app.ops.worker import (
    ARQ_MAX_TRIES,
    MAX_TRIES,
    SERVICES_KEY,
    build_services,
    handle_event,
    worker_settings,
)
from app.reporting import failures
from app.runs import previews
from app.runs.attempts import CLEAN_FUNCTION
from app.runs.pipelines import Pipeline, PipelineRun, Pipelines
from app.services import Delivery
from app.settings import AppSettings
from runner import contract, registry
from runner.contract import RUN_FUNCTION, run_queue
from runner.job import (
    CommitInfo,
    Outcome,
    RepoRef,
    Resources,
    ReviewContext,
    RunFinished,
    RunRequest,
)
from runner.previews.job import PreviewReady, PreviewRequest, PreviewStopped
from runner.redisurl import redis_settings
from tests.fakegithub import AppCredentials, FakeState, RunningFakeGitHub
from tests.fakegithub.gitserver import run_git
from tests.fakegithub.state import Issue

OWNER = "octo-org"
REPO = "widgets"
FULL = f"{OWNER}/{REPO}"
WRITER = "alice"
READER = "bob"
TITLE = "Fix the login page"
SCRIPT = "/trimo run --agent script echo hi"
STRICT_CONFIG = "# only admins\nmin_permission: admin\nagent: script\n"


@dataclass
class World:
    """The stand-in, the App's settings and a ctx for `handle_event`."""

    gh: RunningFakeGitHub
    state: FakeState
    creds: AppCredentials
    pool: ArqRedis
    ctx: dict[str, Any]
    corpora: Path

    @property
    def pipelines(self) -> Pipelines:
        services = self.ctx[SERVICES_KEY]
        assert isinstance(services.pipelines, Pipelines)
        return services.pipelines

    def head(self, branch: str = "main", repo: str = REPO) -> str:
        sha = self.gh.fake.branch_sha(OWNER, repo, branch)
        assert sha is not None
        return sha

    def corpus(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.corpora / "webhooks" / name).read_text())
        return data

    def point(self, payload: dict[str, Any], repo: str = REPO) -> dict[str, Any]:
        """Aim a corpus payload at repository `repo` of the stand-in and our installation."""
        repository = payload["repository"]
        repository.update(
            name=repo,
            full_name=f"{OWNER}/{repo}",
            clone_url=self.gh.clone_url(OWNER, repo),
            default_branch="main",
        )
        repository["owner"] = {**repository["owner"], "login": OWNER}
        payload["installation"] = {"id": self.creds.installation_id, "node_id": "MDIz"}
        return payload

    def issue_comment(
        self,
        body: str,
        *,
        number: int,
        title: str = TITLE,
        login: str = WRITER,
        user_type: str = "User",
        pull: bool = False,
        state: str = "open",
        via_app: bool = False,
        repo: str = REPO,
        association: str = "COLLABORATOR",
    ) -> dict[str, Any]:
        comment = self.state.add_comment(OWNER, repo, number, body, login)
        payload = self.point(self.corpus("issue_comment.created.1.json"), repo)
        user = {**payload["comment"]["user"], "login": login, "type": user_type}
        payload["issue"].update(number=number, title=title, body="details", state=state)
        if pull:
            payload["issue"]["pull_request"] = {"url": "https://example.invalid/pull"}
        else:
            payload["issue"].pop("pull_request", None)
        payload["comment"].update(
            id=comment.id, body=body, user=user, author_association=association
        )
        payload["comment"]["performed_via_github_app"] = {"id": 1} if via_app else None
        payload["sender"] = user
        return payload

    async def send(self, event: str, payload: dict[str, Any], delivery: str | None = None) -> str:
        delivery = delivery or str(uuid.uuid4())
        await handle_event(self.ctx, event, delivery, copy.deepcopy(payload))
        return delivery

    async def job(self, run_id: str) -> RunRequest | None:
        raw = await self.pool.get(job_key_prefix + run_id)
        if raw is None:
            return None
        job = deserialize_job(raw)
        assert job.function == RUN_FUNCTION
        return RunRequest.model_validate(job.args[0])

    async def queued(self, label: str = "default") -> list[str]:
        return [m.decode() for m in await self.pool.zrange(run_queue(label), 0, -1)]

    def bot_comments(self, number: int) -> list[str]:
        return [c.body for c in self.state.comments_on(number, OWNER, REPO) if c.via_app]

    def reactions(self, comment_id: int) -> list[str]:
        return [r.content for r in self.state.comments[comment_id].reactions]


def run_id_for(number: int, delivery: str) -> str:
    return f"{pipeline_id(FULL, number)}-{delivery[:12]}"


@pytest.fixture
def fake() -> Iterator[RunningFakeGitHub]:
    with RunningFakeGitHub() as gh:
        yield gh


def make_settings(gh: RunningFakeGitHub, creds: AppCredentials, redis_url: str) -> AppSettings:
    return AppSettings(
        github_app_id=creds.app_id,
        github_private_key=SecretStr(creds.private_key_pem),
        github_api_url=gh.api_url,
        redis_url=redis_url,
        app_slug="trimo",
        webhook_secret=SecretStr("secret"),
    )


@pytest.fixture
async def world(fake: RunningFakeGitHub, redis_url: str, corpora: Path) -> AsyncIterator[World]:
    creds = fake.install_app(OWNER)
    fake.create_repo(OWNER, REPO, {"README.md": "# widgets\n"})
    fake.create_repo(
        OWNER, "broken", {".github/trimo.yml": "agent: claude\ntimeout_minutes: lots\nfoo: 1\n"}
    )
    fake.state.set_role(OWNER, REPO, WRITER, "write")
    fake.state.set_role(OWNER, "broken", WRITER, "admin")
    fake.create_repo(OWNER, "strict", {".github/trimo.yml": STRICT_CONFIG})
    fake.state.set_role(OWNER, "strict", WRITER, "write")
    fake.state.set_role(OWNER, REPO, READER, "read")
    pool = await create_pool(redis_settings(redis_url))
    settings = make_settings(fake, creds, redis_url)
    services = build_services(settings, pool, github_retry=False)
    ctx = {"redis": pool, "job_try": 1, SERVICES_KEY: services}
    yield World(fake, fake.state, creds, pool, ctx, corpora)
    await pool.aclose()


def assert_no_violations(world: World) -> None:
    assert world.state.violations == []


# --- a run from an issue comment --------------------------------------------------------------


async def test_issue_comment_queues_a_run(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    payload = world.issue_comment(SCRIPT, number=issue.number)
    comment_id = payload["comment"]["id"]

    delivery = await world.send("issue_comment", payload)

    run_id = run_id_for(issue.number, delivery)
    assert world.reactions(comment_id) == ["eyes"]
    [check] = world.state.check_runs.values()
    assert (check.name, check.status, check.external_id) == ("Trimo", "queued", run_id)
    assert check.head_sha == world.head("main")  # the pipeline branch does not exist yet
    assert [a["identifier"] for a in check.actions] == ["stop"]
    [progress] = world.bot_comments(issue.number)
    assert run_id in progress and "queued" in progress
    assert "Waiting for a runner with label `default`" in progress
    assert "none is online" in progress

    request = await world.job(run_id)
    assert request is not None
    assert await world.queued() == [run_id]
    assert request.branch == "trimo/1-fix-the-login-page"
    assert request.base_branch == "main"
    assert request.prompt == "echo hi"
    assert request.agent == "script"
    assert request.repo.clone_url == world.gh.clone_url(OWNER, REPO)
    assert request.pipeline == pipeline_id(FULL, issue.number)
    assert request.history == []
    assert request.token is not None
    token = world.state.valid_token(request.token.get_secret_value())
    assert token is not None
    assert token.repositories == [REPO]
    assert token.permissions == {"contents": "write", "metadata": "read"}

    found = await world.pipelines.get_run(run_id)
    assert found is not None
    pipeline, run = found
    assert (pipeline.kind, pipeline.branch, pipeline.active_run) == (
        "issue",
        request.branch,
        run_id,
    )
    assert (run.status, run.check_run_id, run.requested_by) == ("queued", check.id, WRITER)
    assert run.progress_comment_id is not None
    assert_no_violations(world)


async def test_progress_comment_when_a_runner_is_online(world: World) -> None:
    now = datetime.now(UTC)
    info = registry.RunnerInfo(
        id="r1", host="h", labels=["default"], capacity=1, running=[], version="0",
        pid=1, started_at=now, seen_at=now,
    )  # fmt: skip
    await registry.announce(world.pool, info)
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    await world.send("issue_comment", world.issue_comment(SCRIPT, number=issue.number))
    [progress] = world.bot_comments(issue.number)
    assert "to pick it up" in progress and "none is online" not in progress


async def test_same_delivery_twice_queues_one_job_and_one_comment(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    payload = world.issue_comment(SCRIPT, number=issue.number)
    delivery = str(uuid.uuid4())
    await world.send("issue_comment", payload, delivery)
    await world.send("issue_comment", payload, delivery)
    assert await world.queued() == [run_id_for(issue.number, delivery)]
    assert len(world.bot_comments(issue.number)) == 1
    assert len(world.state.check_runs) == 1
    pipeline = await world.pipelines.get(pipeline_id(FULL, issue.number))
    assert pipeline is not None and len(pipeline.runs) == 1


async def test_a_retried_job_repeats_no_side_effect(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    payload = world.issue_comment(SCRIPT, number=issue.number)
    world.state.fail_next("POST", rf"/issues/{issue.number}/comments$", 502)
    delivery = str(uuid.uuid4())
    with pytest.raises(Retry):
        await world.send("issue_comment", payload, delivery)
    assert len(world.state.check_runs) == 1
    # queued beside its report objects: it goes ahead, and the retry queues it no more
    assert await world.queued() == [run_id_for(issue.number, delivery)]

    world.ctx["job_try"] = 2
    await world.send("issue_comment", payload, delivery)
    assert len(world.state.check_runs) == 1
    assert len(world.bot_comments(issue.number)) == 1
    assert world.reactions(payload["comment"]["id"]) == ["eyes"]
    assert await world.queued() == [run_id_for(issue.number, delivery)]


async def check_run_made_unanswered(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> tuple[Issue, dict[str, Any], str]:
    """A `/trimo run` delivery whose first try made its check run but got no answer (and
    so is to be tried again): its issue, payload and delivery id."""
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    payload = world.issue_comment(SCRIPT, number=issue.number)
    real = RepoAPI.create_check_run

    async def unanswered(self: RepoAPI, **fields: Any) -> int:
        await real(self, **fields)
        raise TimeoutError("no answer")

    monkeypatch.setattr(RepoAPI, "create_check_run", unanswered)
    delivery = str(uuid.uuid4())
    with pytest.raises(Retry):
        await world.send("issue_comment", payload, delivery)
    monkeypatch.setattr(RepoAPI, "create_check_run", real)
    return issue, payload, delivery


async def test_a_check_run_made_without_an_answer_is_not_made_twice(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GitHub may create a check run and its answer never come; the retry finds and uses
    that one, else it would stay queued on the commit for ever."""
    issue, payload, delivery = await check_run_made_unanswered(world, monkeypatch)
    world.ctx["job_try"] = 2
    await world.send("issue_comment", payload, delivery)

    run_id = run_id_for(issue.number, delivery)
    [check] = world.state.check_runs.values()
    assert check.external_id == run_id
    found = await world.pipelines.get_run(run_id)
    assert found is not None and found[1].check_run_id == check.id
    assert await world.queued() == [run_id]


async def test_the_retry_finds_its_check_run_on_the_commit_the_first_try_chose(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run is queued before its check run is made: by the retry, its runner may have
    pushed the pipeline branch, whose head is not where the first try made the check run."""
    issue, payload, delivery = await check_run_made_unanswered(world, monkeypatch)
    run_id = run_id_for(issue.number, delivery)
    request = await world.job(run_id)
    assert request is not None
    bare = world.gh.fake.bare_path(OWNER, REPO)
    tree = run_git(bare, "rev-parse", "main^{tree}").stdout.decode().strip()
    pushed = run_git(bare, "commit-tree", tree, "-p", "main", "-m", "the agent's work")
    run_git(bare, "update-ref", f"refs/heads/{request.branch}", pushed.stdout.decode().strip())
    world.ctx["job_try"] = 2
    await world.send("issue_comment", payload, delivery)

    [check] = world.state.check_runs.values()
    assert (check.external_id, check.head_sha) == (run_id, world.head("main"))
    found = await world.pipelines.get_run(run_id)
    assert found is not None and found[1].check_run_id == check.id


async def test_a_run_whose_issue_is_deleted_before_it_starts_completes_its_check_run(
    world: World,
) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    payload = world.issue_comment(SCRIPT, number=issue.number)
    world.state.fail_next("POST", rf"/issues/{issue.number}/comments$", 404, times=2)
    await world.send("issue_comment", payload)
    [check] = world.state.check_runs.values()
    assert (check.status, check.conclusion) == ("completed", "failure")
    assert await world.queued() == []


async def test_a_client_error_is_not_retried_and_is_told(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    payload = world.issue_comment(SCRIPT, number=issue.number)
    world.state.fail_next("GET", r"/collaborators/alice/permission$", 422)
    delivery = await world.send("issue_comment", payload)
    assert world.reactions(payload["comment"]["id"]) == ["eyes"]  # beside the permission read
    [reply] = world.bot_comments(issue.number)
    assert reply.startswith(f"@{WRITER} ") and "GitHub answered 422" in reply
    assert delivery in reply
    [parked] = await failures.parked(world.pool)
    assert (parked.delivery_id, parked.event, parked.tries) == (delivery, "issue_comment", 1)
    assert "422" in parked.error and "/permission" in parked.error


async def test_a_run_github_gives_no_token_for_ends_as_an_error(world: World) -> None:
    world.state.installations[world.creds.installation_id].permissions["contents"] = "read"
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    delivery = await world.send("issue_comment", world.issue_comment(SCRIPT, number=issue.number))
    run_id = run_id_for(issue.number, delivery)
    assert await world.job(run_id) is None
    found = await world.pipelines.get_run(run_id)
    assert found is not None
    pipeline, run = found
    assert (run.status, run.outcome, pipeline.active_run) == ("finished", Outcome.ERROR, None)
    assert "422" in run.reason
    [check] = world.state.check_runs.values()
    assert (check.status, check.conclusion) == ("completed", "failure")
    [progress] = world.bot_comments(issue.number)
    assert "could not start" in progress and "permissions requested" in progress


@pytest.mark.parametrize("granted", [False, True])
async def test_the_runs_token_may_push_workflows_only_when_the_app_may(
    world: World, granted: bool
) -> None:
    if granted:
        world.state.installations[world.creds.installation_id].permissions["workflows"] = "write"
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    delivery = await world.send("issue_comment", world.issue_comment(SCRIPT, number=issue.number))
    request = await world.job(run_id_for(issue.number, delivery))
    assert request is not None and request.token is not None
    token = world.state.tokens[request.token.get_secret_value()]
    assert token.permissions.get("workflows") == ("write" if granted else None)
    assert token.permissions["contents"] == "write" and "issues" not in token.permissions


async def test_without_checks_permission_the_run_still_goes(world: World) -> None:
    del world.state.installations[world.creds.installation_id].permissions["checks"]
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    delivery = await world.send("issue_comment", world.issue_comment(SCRIPT, number=issue.number))
    assert await world.job(run_id_for(issue.number, delivery)) is not None
    assert world.state.check_runs == {}
    assert len(world.bot_comments(issue.number)) == 1


# --- who may command -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("association", "reactions"),
    [("NONE", ["-1"]), ("COLLABORATOR", ["eyes", "-1"])],  # 👀 goes ahead for collaborators
)
async def test_a_reader_is_refused(world: World, association: str, reactions: list[str]) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    payload = world.issue_comment(
        SCRIPT, number=issue.number, login=READER, association=association
    )
    await world.send("issue_comment", payload)
    assert world.reactions(payload["comment"]["id"]) == reactions
    [reply] = world.bot_comments(issue.number)
    assert reply.startswith(f"@{READER} ") and "**write**" in reply and "**read**" in reply
    assert world.state.check_runs == {}
    assert await world.queued() == []
    assert await world.pipelines.get(pipeline_id(FULL, issue.number)) is None


async def test_the_config_can_ask_for_more_than_write(world: World) -> None:
    issue = world.state.add_issue(OWNER, "strict", TITLE, "details")
    payload = world.issue_comment(SCRIPT, number=issue.number, repo="strict")
    await world.send("issue_comment", payload)
    [reply] = [c.body for c in world.state.comments_on(issue.number, OWNER, "strict") if c.via_app]
    assert "**admin**" in reply and "**write**" in reply
    assert world.reactions(payload["comment"]["id"]) == ["eyes", "-1"]
    assert await world.queued() == []

    world.state.set_role(OWNER, "strict", WRITER, "admin")
    delivery = await world.send(
        "issue_comment", world.issue_comment("/trimo run go", number=issue.number, repo="strict")
    )
    request = await world.job(f"{pipeline_id(f'{OWNER}/strict', issue.number)}-{delivery[:12]}")
    assert request is not None and request.agent == "script"  # the config's agent


async def test_an_unchanged_config_file_is_read_from_the_cache(redis_url: str) -> None:
    """Conditional requests: GitHub's 304 (free of rate limit) serves the cached blob."""
    text = "agent: script\n"
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("if-none-match"))
        if request.headers.get("if-none-match") == '"v1"':
            return httpx.Response(304, headers={"etag": '"v1"'})
        content = {
            "type": "file", "encoding": "base64", "size": len(text), "name": "trimo.yml",
            "path": ".github/trimo.yml", "content": base64.b64encode(text.encode()).decode(),
            "sha": "b" * 40, "url": "https://gh.test/x", "git_url": "https://gh.test/x",
            "html_url": "https://gh.test/x", "download_url": "https://gh.test/x",
            "_links": {"self": "https://gh.test/x", "git": None, "html": None},
        }  # fmt: skip
        return httpx.Response(200, json=content, headers={"etag": '"v1"'})

    client = GitHub(
        "ghs_test",
        base_url="https://gh.test",
        async_transport=httpx.MockTransport(answer),
        http_cache=False,
    )
    pool = await create_pool(redis_settings(redis_url))
    try:
        api = RepoAPI(client, pool, OWNER, REPO)  # type: ignore[arg-type]
        assert await api.read_file(".github/trimo.yml", "main") == text
        assert await api.read_file(".github/trimo.yml", "main") == text
        assert seen == [None, '"v1"']
        await pool.delete("trimo:gh:blob:" + "b" * 40)  # evicted: fetched whole again
        assert await api.read_file(".github/trimo.yml", "main") == text
        assert seen == [None, '"v1"', '"v1"', None]
    finally:
        await pool.aclose()


async def test_the_config_file_is_cached_by_blob_sha(world: World) -> None:
    services = world.ctx[SERVICES_KEY]
    api = await services.github.repo(world.creds.installation_id, f"{OWNER}/strict")
    assert await api.read_file(".github/trimo.yml", "main") == STRICT_CONFIG
    cached = [k.decode() for k in await world.pool.keys("trimo:gh:blob:*")]
    assert len(cached) == 1
    assert await world.pool.get(cached[0]) == STRICT_CONFIG.encode()
    assert await api.read_file(".github/absent.yml", "main") is None


@pytest.mark.parametrize(
    ("login", "user_type", "via_app"),
    [("trimo[bot]", "Bot", False), ("helper[bot]", "User", False), (WRITER, "User", True)],
)
async def test_bots_are_never_commands(
    world: World, login: str, user_type: str, via_app: bool
) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    world.state.set_role(OWNER, REPO, login, "admin")
    payload = world.issue_comment(
        SCRIPT, number=issue.number, login=login, user_type=user_type, via_app=via_app
    )
    await world.send("issue_comment", payload)
    assert world.state.requests == []
    assert await world.pool.keys("trimo:pipeline*") == []
    assert await world.pool.keys("trimo:step:*") == []
    assert await world.queued() == []


async def test_a_comment_that_is_no_command_is_ignored_silently(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    await world.send("issue_comment", world.issue_comment("Looks good to me", number=issue.number))
    assert world.state.requests == []


# --- what gets said instead of running ----------------------------------------------------------


async def test_a_broken_config_is_explained_and_nothing_runs(world: World) -> None:
    text = "agent: claude\ntimeout_minutes: lots\nfoo: 1\n"
    with pytest.raises(ConfigError) as expected:
        parse_repo_config(text)
    issue = world.state.add_issue(OWNER, "broken", TITLE, "details")
    payload = world.issue_comment(SCRIPT, number=issue.number, repo="broken")
    await world.send("issue_comment", payload)
    [reply] = [c.body for c in world.state.comments_on(issue.number, OWNER, "broken") if c.via_app]
    assert expected.value.message in reply
    assert "Unknown setting `foo`" in reply
    assert world.state.check_runs == {}
    assert await world.queued() == []


async def test_a_mistyped_command_gets_usage(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    await world.send("issue_comment", world.issue_comment("/trimo rnu fix it", number=issue.number))
    [reply] = world.bot_comments(issue.number)
    assert reply.startswith(f"@{WRITER} Unknown command `rnu`. Did you mean `/trimo run`?")
    assert USAGE.strip() in reply
    assert await world.queued() == []


async def test_a_preview_without_a_preview_section_says_how_to_add_one(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    await world.send("issue_comment", world.issue_comment("/trimo preview", number=issue.number))
    [reply] = world.bot_comments(issue.number)
    assert reply.startswith(f"@{WRITER} this repository has no previews yet")
    assert "```yaml\npreview:\n" in reply and "--port $PORT" in reply
    assert await world.pool.zrange(contract.preview_queue("default"), 0, -1) == []


async def test_stopping_a_preview_when_none_runs(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    body = "/trimo preview stop"
    await world.send("issue_comment", world.issue_comment(body, number=issue.number))
    [reply] = world.bot_comments(issue.number)
    assert reply == f"@{WRITER} no preview is running here, so there is nothing to stop.\n"


async def test_a_push_to_a_pipeline_branch_refreshes_its_live_preview(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    first = await world.send("issue_comment", world.issue_comment(SCRIPT, number=issue.number))
    pid = pipeline_id(FULL, issue.number)
    pipeline = await world.pipelines.get(pid)
    assert pipeline is not None
    services = world.ctx[SERVICES_KEY]
    request = PreviewRequest(
        preview_id="pv-first", pipeline=pid, repo=RepoRef(full_name=FULL, clone_url="x"),
        branch=pipeline.branch, command="perl server.pl", port=8000,
    )  # fmt: skip
    shown = "a" * 40
    record = previews.PreviewRecord(
        pipeline=pid, repo=FULL, installation_id=world.creds.installation_id,
        number=issue.number, branch=pipeline.branch, request=request, status="ready",
        url="http://runner.example/p/tok/", sha=shown,
    )  # fmt: skip
    await previews.save_record(services.redis, record)

    def push(after: str) -> dict[str, Any]:
        payload = world.point(world.corpus("push.none.2.json"))
        payload.update(ref=f"refs/heads/{pipeline.branch}", after=after, deleted=False)
        return payload

    await world.send("push", push("b" * 40))  # a run is going: its end refreshes it
    during = await previews.load_record(services.redis, pid)
    assert during is not None and during.request.preview_id == "pv-first"
    await world.pipelines.finish(
        RunFinished(run_id=run_id_for(issue.number, first), outcome=Outcome.SUCCESS)
    )
    await world.send("push", push(shown))  # what it shows already
    await world.send("push", push("c" * 40))
    await world.send("push", push("c" * 40))  # the same commit again: asked once

    after = await previews.load_record(services.redis, pid)
    assert after is not None and after.status == "starting" and after.asked_sha == "c" * 40
    queued = await world.pool.zrange(contract.preview_queue("default"), 0, -1)
    assert [m.decode() for m in queued] == [after.request.preview_id]
    assert await world.pool.get(contract.preview_wanted(pid)) == after.request.preview_id.encode()
    [comment] = [b for b in world.bot_comments(issue.number) if "Preview starting" in b]
    assert "asked by" not in comment  # a push, not a person
    assert "No runner labelled `default` serves previews right now" in comment


async def test_a_ready_preview_gets_its_link_on_a_check_run_and_a_new_comment_if_deleted(
    world: World,
) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    services = world.ctx[SERVICES_KEY]
    pid = pipeline_id(FULL, issue.number)
    request = PreviewRequest(
        preview_id="pv-9", pipeline=pid, repo=RepoRef(full_name=FULL, clone_url="x"),
        branch="trimo/9-x", command="make serve", port=8000,
    )  # fmt: skip
    record = previews.PreviewRecord(
        pipeline=pid, repo=FULL, installation_id=world.creds.installation_id,
        number=issue.number, branch="trimo/9-x", request=request, comment_id=987654321,
    )  # fmt: skip
    await previews.save_record(services.redis, record)
    link = "https://previews.example.com/p/tok_en-1/"
    ready = PreviewReady(
        preview_id="pv-9", pipeline=pid, runner="r1", url=link, sha=world.head(),
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    stale = ready.model_copy(update={"preview_id": "pv-older"})

    await previews.apply_event(services, stale)  # not the current preview: nothing
    assert world.bot_comments(issue.number) == []
    await previews.apply_event(services, ready)

    [comment] = world.bot_comments(issue.number)
    assert f"[open the preview]({link})" in comment and "2030-01-01 00:00 UTC" in comment
    [check] = world.state.check_runs.values()
    assert check.name == "Trimo preview" and check.conclusion == "neutral"
    assert link in check.output["summary"] and check.external_id == "pv-9"
    after = await previews.load_record(services.redis, pid)
    assert after is not None and after.status == "ready" and after.comment_id != 987654321

    stopped = PreviewStopped(preview_id="pv-9", pipeline=pid, runner="r1", reason="idle")
    await previews.apply_event(services, stopped)
    [comment] = world.bot_comments(issue.number)
    assert "Preview stopped" in comment and "nobody used it for 30 minutes" in comment
    assert "stopped" in world.state.check_runs[check.id].output["title"].lower()


async def test_help_replies_with_usage_and_agents(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    await world.send("issue_comment", world.issue_comment("/trimo help", number=issue.number))
    [reply] = world.bot_comments(issue.number)
    assert USAGE.strip() in reply
    assert "`script`" in reply and "`claude`" in reply


async def test_an_unknown_agent_lists_the_agents(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    body = "/trimo run --agent gpt9 do it"
    await world.send("issue_comment", world.issue_comment(body, number=issue.number))
    [reply] = world.bot_comments(issue.number)
    assert "no agent called `gpt9`" in reply and "`script`" in reply and "`aider`" in reply
    assert await world.queued() == []


async def test_a_policy_refusal_is_explained(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    body = "/trimo run --agent script --timeout 600 echo slow"
    await world.send("issue_comment", world.issue_comment(body, number=issue.number))
    [reply] = world.bot_comments(issue.number)
    assert "at most 120 minutes" in reply
    assert await world.queued() == []


HOSTS_CONFIG = "agent: script\nallowed_hosts: [registry.example.com, Example.org]\n"


async def test_the_repositorys_hosts_reach_the_run_within_the_servers_cap(world: World) -> None:
    world.gh.create_repo(OWNER, "hosts", {".github/trimo.yml": HOSTS_CONFIG})
    world.state.set_role(OWNER, "hosts", WRITER, "write")
    first = world.state.add_issue(OWNER, "hosts", TITLE, "details")
    comment = world.issue_comment("/trimo run echo hi", number=first.number, repo="hosts")
    await world.send("issue_comment", comment)
    [run_id] = await world.queued()
    request = await world.job(run_id)
    assert request is not None
    assert (request.network, request.allowed_hosts) == (
        "allowlist",
        ["registry.example.com", "example.org"],
    )

    services = world.ctx[SERVICES_KEY]
    capped = services.settings.model_copy(update={"policy_allowed_hosts": "*.example.com"})
    world.ctx[SERVICES_KEY] = build_services(capped, world.pool, github_retry=False)
    second = world.state.add_issue(OWNER, "hosts", TITLE, "details")
    comment = world.issue_comment("/trimo run echo hi", number=second.number, repo="hosts")
    await world.send("issue_comment", comment)
    replies = [
        c.body.strip() for c in world.state.comments_on(second.number, OWNER, "hosts") if c.via_app
    ]
    assert replies == [
        f"@{WRITER} I can't start that run: This server does not allow the host `example.org` "
        "(`.github/trimo.yml` asks for it in `allowed_hosts`); allowed: `*.example.com`. "
        "Remove it from `allowed_hosts`, or ask whoever runs this Trimo server to add it to "
        "`TRIMO_POLICY_ALLOWED_HOSTS`."
    ]
    assert await world.queued() == [run_id]


async def test_a_closed_issue_runs_nothing(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    payload = world.issue_comment(SCRIPT, number=issue.number, state="closed")
    await world.send("issue_comment", payload)
    [reply] = world.bot_comments(issue.number)
    assert "closed" in reply
    assert await world.queued() == []


# --- pull requests ---------------------------------------------------------------------------


def add_branch(world: World, branch: str) -> str:
    bare = world.gh.fake.bare_path(OWNER, REPO)
    run_git(bare, "branch", branch, "main")
    return world.head(branch)


def review_comment_payload(
    world: World,
    *,
    number: int,
    head_ref: str,
    head_sha: str,
    head_repo: str = FULL,
    body: str = SCRIPT,
) -> dict[str, Any]:
    comment = world.state.add_review_comment(OWNER, REPO, number, body, WRITER)
    payload = world.point(world.corpus("pull_request_review_comment.created.1.json"))
    user = {**payload["comment"]["user"], "login": WRITER, "type": "User"}
    payload["comment"].update(
        id=comment.id,
        body=body,
        user=user,
        path="README.md",
        line=1,
        diff_hunk="@@ -1 +1 @@\n-# widgets\n+# Widgets",
    )
    pull = payload["pull_request"]
    pull.update(number=number, title="Tidy README", state="open")
    pull["head"].update(ref=head_ref, sha=head_sha)
    pull["head"]["repo"] = {**pull["head"]["repo"], "full_name": head_repo}
    pull["base"].update(ref="main", sha=world.head("main"))
    pull["base"]["repo"] = {**pull["base"]["repo"], "full_name": FULL}
    payload["sender"] = user
    return payload


@pytest.mark.parametrize(
    ("body", "prompt"),
    [("/trimo run --agent claude Use an emoji here", "Use an emoji here"), (SCRIPT, "echo hi")],
)
async def test_a_review_comment_runs_on_the_pull_request_branch(
    world: World, body: str, prompt: str
) -> None:
    head_sha = add_branch(world, "feature/readme")
    pull = world.state.add_pull(
        OWNER, REPO, title="Tidy README", body="", user=WRITER, head_ref="feature/readme",
        base_ref="main", head_sha=head_sha, base_sha=world.head("main"),
    )  # fmt: skip
    payload = review_comment_payload(
        world, number=pull.number, head_ref="feature/readme", head_sha=head_sha, body=body
    )
    delivery = await world.send("pull_request_review_comment", payload)

    run_id = run_id_for(pull.number, delivery)
    request = await world.job(run_id)
    assert request is not None
    assert (request.branch, request.base_branch) == ("feature/readme", "main")
    assert request.prompt == prompt  # where it was asked travels beside it, for the runner
    assert request.review == ReviewContext(
        path="README.md", line=1, diff_hunk="@@ -1 +1 @@\n-# widgets\n+# Widgets"
    )
    comment = world.state.review_comments[payload["comment"]["id"]]
    assert [r.content for r in comment.reactions] == ["eyes"]
    [check] = world.state.check_runs.values()
    assert check.head_sha == head_sha
    assert len(world.bot_comments(pull.number)) == 1
    assert_no_violations(world)


async def test_a_fork_pull_request_is_refused_with_a_way_forward(world: World) -> None:
    head_sha = add_branch(world, "patch-1")
    pull = world.state.add_pull(
        OWNER, REPO, title="Tidy README", body="", user="mallory", head_ref="patch-1",
        base_ref="main", head_sha=head_sha, base_sha=world.head("main"),
    )  # fmt: skip
    payload = review_comment_payload(
        world, number=pull.number, head_ref="patch-1", head_sha=head_sha,
        head_repo="mallory/widgets",
    )  # fmt: skip
    await world.send("pull_request_review_comment", payload)
    [reply] = world.bot_comments(pull.number)
    assert "fork" in reply and "`mallory/widgets`" in reply
    assert "pushes the fork's branch" in reply and "on an issue" in reply
    assert world.state.check_runs == {}
    assert await world.queued() == []


async def test_a_pull_request_branch_with_an_unsafe_name_is_refused(world: World) -> None:
    pull = world.state.add_pull(
        OWNER, REPO, title="Odd", body="", user=WRITER, head_ref="fix+plus",
        base_ref="main", head_sha=world.head("main"), base_sha=world.head("main"),
    )  # fmt: skip
    payload = review_comment_payload(
        world, number=pull.number, head_ref="fix+plus", head_sha=world.head("main")
    )
    await world.send("pull_request_review_comment", payload)
    [reply] = world.bot_comments(pull.number)
    assert "can't work on the branch `fix+plus`" in reply
    assert await world.queued() == []


async def test_an_issue_comment_on_a_pull_request_uses_its_head_branch(world: World) -> None:
    head_sha = add_branch(world, "feature/x")
    pull = world.state.add_pull(
        OWNER, REPO, title="X", body="", user=WRITER, head_ref="feature/x",
        base_ref="main", head_sha=head_sha, base_sha=world.head("main"),
    )  # fmt: skip
    payload = world.issue_comment(SCRIPT, number=pull.number, pull=True, title="X")
    delivery = await world.send("issue_comment", payload)
    request = await world.job(run_id_for(pull.number, delivery))
    assert request is not None
    assert request.branch == "feature/x"
    assert world.state.requests_to("GET", rf"/pulls/{pull.number}$")
    [check] = world.state.check_runs.values()
    assert check.head_sha == head_sha


# --- one run at a time ---------------------------------------------------------------------------


async def test_a_second_run_waits_for_the_first(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    first = await world.send("issue_comment", world.issue_comment(SCRIPT, number=issue.number))
    second_body = "/trimo run --agent script echo again"
    second = await world.send(
        "issue_comment", world.issue_comment(second_body, number=issue.number)
    )
    run1, run2 = run_id_for(issue.number, first), run_id_for(issue.number, second)
    assert await world.queued() == [run1]
    assert await world.job(run2) is None
    progress = world.bot_comments(issue.number)[1]
    assert f"Waiting for run `{run1}` to finish first" in progress
    pid = pipeline_id(FULL, issue.number)
    assert await world.pipelines.start_next_waiting(pid) is None  # run1 still active

    commit = CommitInfo(sha="a" * 40, subject="Say hi")
    await world.pipelines.finish(
        RunFinished(run_id=run1, outcome=Outcome.SUCCESS, commits=[commit])
    )
    started = await world.pipelines.start_next_waiting(pid)
    assert started is not None and started.run_id == run2
    request = await world.job(run2)
    assert request is not None and request.prompt == "echo again"
    assert [(h.run_id, h.outcome, h.commits) for h in request.history] == [
        (run1, Outcome.SUCCESS, [commit])
    ]
    pipeline = await world.pipelines.get(pid)
    assert pipeline is not None and pipeline.active_run == run2


async def test_a_pull_request_on_an_issue_branch_continues_its_pipeline(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    first = await world.send("issue_comment", world.issue_comment(SCRIPT, number=issue.number))
    run1 = run_id_for(issue.number, first)
    await world.pipelines.finish(RunFinished(run_id=run1, outcome=Outcome.SUCCESS))
    branch = "trimo/1-fix-the-login-page"
    head_sha = add_branch(world, branch)
    pull = world.state.add_pull(
        OWNER, REPO, title=TITLE, body="", user="trimo[bot]", head_ref=branch,
        base_ref="main", head_sha=head_sha, base_sha=world.head("main"),
    )  # fmt: skip
    body = "/trimo run --agent script echo more"
    second = await world.send(
        "issue_comment", world.issue_comment(body, number=pull.number, pull=True, title=TITLE)
    )
    run2 = run_id_for(issue.number, second)  # the issue's pipeline, not a new one
    request = await world.job(run2)
    assert request is not None
    assert request.branch == branch and request.pipeline == pipeline_id(FULL, issue.number)
    assert [h.run_id for h in request.history] == [run1]
    assert len(world.bot_comments(pull.number)) == 1  # reported where it was asked

    await world.send("issue_comment", world.issue_comment("/trimo status", number=pull.number))
    status = world.bot_comments(pull.number)[-1]
    assert f"`{run1}`" in status and f"`{run2}`" in status


async def test_stop_on_the_pull_request_of_an_issue_pipeline(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    first = await world.send("issue_comment", world.issue_comment(SCRIPT, number=issue.number))
    run1 = run_id_for(issue.number, first)
    branch = "trimo/1-fix-the-login-page"
    pull = world.state.add_pull(
        OWNER, REPO, title=TITLE, body="", user="trimo[bot]", head_ref=branch,
        base_ref="main", head_sha=add_branch(world, branch), base_sha=world.head("main"),
    )  # fmt: skip
    stop = world.issue_comment("/trimo stop", number=pull.number, pull=True, title=TITLE)
    await world.send("issue_comment", stop)
    assert await world.job(run1) is None
    assert f"stopped run `{run1}`" in world.bot_comments(pull.number)[-1]


async def test_retry_queues_the_last_prompt_again(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    first = await world.send("issue_comment", world.issue_comment(SCRIPT, number=issue.number))
    run1 = run_id_for(issue.number, first)
    await world.pipelines.finish(RunFinished(run_id=run1, outcome=Outcome.FAILURE))
    retry = await world.send(
        "issue_comment", world.issue_comment("/trimo retry", number=issue.number)
    )
    request = await world.job(run_id_for(issue.number, retry))
    assert request is not None
    assert (request.prompt, request.agent) == ("echo hi", "script")
    assert [h.run_id for h in request.history] == [run1]


async def test_retry_with_nothing_to_retry(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    await world.send("issue_comment", world.issue_comment("/trimo retry", number=issue.number))
    [reply] = world.bot_comments(issue.number)
    assert "nothing to retry" in reply


async def test_status_lists_the_runs(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    first = await world.send("issue_comment", world.issue_comment(SCRIPT, number=issue.number))
    await world.send("issue_comment", world.issue_comment("/trimo status", number=issue.number))
    reply = world.bot_comments(issue.number)[-1]
    assert f"`{run_id_for(issue.number, first)}`" in reply
    assert (
        "| queued |" in reply and "`echo hi`" in reply and "`trimo/1-fix-the-login-page`" in reply
    )


# --- stopping --------------------------------------------------------------------------------


async def test_stop_aborts_a_run_a_runner_has_started(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    first = await world.send("issue_comment", world.issue_comment(SCRIPT, number=issue.number))
    run1 = run_id_for(issue.number, first)
    await world.pool.set(in_progress_key_prefix + run1, b"1")  # as a runner's arq worker does
    await world.pipelines.mark_running(run1, runner="r1")

    await world.send("issue_comment", world.issue_comment("/trimo stop", number=issue.number))

    aborting = [m.decode() for m in await world.pool.zrange(abort_jobs_ss, 0, -1)]
    assert aborting == [run1]
    reply = world.bot_comments(issue.number)[-1]
    assert f"stopping run `{run1}`" in reply
    found = await world.pipelines.get_run(run1)
    assert found is not None and found[1].status == "running"  # until the runner reports


async def test_stop_before_a_runner_starts_drops_the_job_and_starts_the_next(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    first = await world.send("issue_comment", world.issue_comment(SCRIPT, number=issue.number))
    second = await world.send(
        "issue_comment",
        world.issue_comment("/trimo run --agent script echo two", number=issue.number),
    )
    run1, run2 = run_id_for(issue.number, first), run_id_for(issue.number, second)

    await world.send("issue_comment", world.issue_comment("/trimo stop", number=issue.number))

    assert await world.job(run1) is None
    assert await world.queued() == [run2]
    found = await world.pipelines.get_run(run1)
    assert found is not None
    pipeline, run = found
    assert (run.status, run.outcome, run.started) == ("finished", Outcome.CANCELLED, False)
    assert pipeline.active_run == run2
    check = world.state.check_runs[run.check_run_id or 0]
    assert (check.status, check.conclusion) == ("completed", "cancelled")
    assert run.progress_comment_id is not None
    note = world.state.comments[run.progress_comment_id].body
    assert "cancelled before it started" in note and f"@{WRITER}" in note
    reply = world.bot_comments(issue.number)[-1]
    assert f"stopped run `{run1}` before it started" in reply
    request = await world.job(run2)
    assert request is not None and request.history == []  # run1 never ran
    run2_entry = pipeline.find(run2)
    assert run2_entry is not None and run2_entry.progress_comment_id is not None
    progress2 = world.state.comments[run2_entry.progress_comment_id].body
    assert "Waiting for a runner with label `default`" in progress2
    assert "to finish first" not in progress2


async def test_stop_with_nothing_running(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    await world.send("issue_comment", world.issue_comment("/trimo stop", number=issue.number))
    [reply] = world.bot_comments(issue.number)
    assert "nothing is running" in reply


def check_run_payload(
    world: World, name: str, *, run_id: str, check_id: int, identifier: str | None
) -> dict[str, Any]:
    payload = world.point(world.corpus(name))
    check = payload["check_run"]
    check.update(id=check_id, external_id=run_id, head_sha=world.head("main"))
    check["app"] = {**check["app"], "id": world.creds.app_id}
    if identifier is not None:
        payload["requested_action"] = {"identifier": identifier}
    payload["sender"] = {**payload["sender"], "login": WRITER, "type": "User"}
    return payload


async def test_the_stop_button_stops_that_run(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    first = await world.send("issue_comment", world.issue_comment(SCRIPT, number=issue.number))
    run1 = run_id_for(issue.number, first)
    [check] = world.state.check_runs.values()
    payload = check_run_payload(
        world, "check_run.requested_action.1.json", run_id=run1, check_id=check.id,
        identifier="stop",
    )  # fmt: skip
    await world.send("check_run", payload)
    assert await world.job(run1) is None
    assert (check.status, check.conclusion) == ("completed", "cancelled")


async def test_the_stop_button_needs_permission(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    first = await world.send("issue_comment", world.issue_comment(SCRIPT, number=issue.number))
    run1 = run_id_for(issue.number, first)
    [check] = world.state.check_runs.values()
    payload = check_run_payload(
        world, "check_run.requested_action.1.json", run_id=run1, check_id=check.id,
        identifier="stop",
    )  # fmt: skip
    payload["sender"]["login"] = READER
    await world.send("check_run", payload)
    assert await world.queued() == [run1]
    assert check.status == "queued"
    assert f"@{READER} sorry" in world.bot_comments(issue.number)[-1]


async def test_rerequesting_a_check_run_retries_its_run(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    first = await world.send("issue_comment", world.issue_comment(SCRIPT, number=issue.number))
    run1 = run_id_for(issue.number, first)
    await world.pipelines.finish(RunFinished(run_id=run1, outcome=Outcome.ERROR))
    [check] = world.state.check_runs.values()
    payload = check_run_payload(
        world, "check_run.rerequested.1.json", run_id=run1, check_id=check.id, identifier=None
    )
    delivery = await world.send("check_run", payload)
    request = await world.job(run_id_for(issue.number, delivery))
    assert request is not None and request.prompt == "echo hi"
    assert len(world.state.check_runs) == 2


async def test_check_runs_of_other_apps_are_ignored(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    first = await world.send("issue_comment", world.issue_comment(SCRIPT, number=issue.number))
    run1 = run_id_for(issue.number, first)
    [check] = world.state.check_runs.values()
    payload = check_run_payload(
        world, "check_run.requested_action.1.json", run_id=run1, check_id=check.id,
        identifier="stop",
    )  # fmt: skip
    payload["check_run"]["app"]["id"] = world.creds.app_id + 1
    await world.send("check_run", payload)
    assert await world.queued() == [run1]


# --- labels, closing, installations ------------------------------------------------------------


def labeled_payload(world: World, *, number: int, label: str, body: str) -> dict[str, Any]:
    payload = world.point(world.corpus("issues.labeled.1.json"))
    payload["issue"].update(number=number, title=TITLE, body=body, state="open")
    payload["issue"].pop("pull_request", None)
    payload["label"] = {**payload["label"], "name": label}
    payload["sender"] = {**payload["sender"], "login": WRITER, "type": "User"}
    return payload


async def test_the_trigger_label_runs_the_issue(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "The button does nothing.")
    payload = labeled_payload(world, number=issue.number, label="trimo", body=issue.body or "")
    delivery = await world.send("issues", payload)
    request = await world.job(run_id_for(issue.number, delivery))
    assert request is not None
    assert request.prompt == f"{TITLE}\n\nThe button does nothing."
    assert request.agent == "claude"  # the repository's default
    assert [r.content for r in issue.reactions] == ["eyes"]
    assert len(world.bot_comments(issue.number)) == 1


async def test_other_labels_do_nothing(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    await world.send("issues", labeled_payload(world, number=issue.number, label="bug", body=""))
    assert await world.queued() == []
    assert world.bot_comments(issue.number) == []
    assert issue.reactions == []


async def test_closing_the_issue_closes_its_pipeline(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    first = await world.send("issue_comment", world.issue_comment(SCRIPT, number=issue.number))
    run1 = run_id_for(issue.number, first)
    payload = world.point(world.corpus("issues.closed.1.json"))
    payload["issue"].update(number=issue.number, state="closed")
    payload["issue"].pop("pull_request", None)
    await world.send("issues", payload)

    pipeline = await world.pipelines.get(pipeline_id(FULL, issue.number))
    assert pipeline is not None and pipeline.closed and pipeline.active_run is None
    assert await world.job(run1) is None
    [check] = world.state.check_runs.values()
    assert check.conclusion == "cancelled"
    [note] = world.bot_comments(issue.number)
    assert "this issue was closed" in note
    [(_, closed)] = await world.pool.xrange(contract.CLOSED_PIPELINES)
    assert closed[b"pipeline"].decode() == pipeline.id
    assert closed[b"clone_url"].decode() == pipeline.clone_url


async def test_closing_a_pull_request_aborts_its_running_run(world: World) -> None:
    head_sha = add_branch(world, "feature/y")
    pull = world.state.add_pull(
        OWNER, REPO, title="Y", body="", user=WRITER, head_ref="feature/y",
        base_ref="main", head_sha=head_sha, base_sha=world.head("main"),
    )  # fmt: skip
    delivery = await world.send(
        "issue_comment", world.issue_comment(SCRIPT, number=pull.number, pull=True, title="Y")
    )
    run1 = run_id_for(pull.number, delivery)
    await world.pool.set(in_progress_key_prefix + run1, b"1")
    payload = world.point(world.corpus("pull_request.closed.1.json"))
    payload["pull_request"].update(number=pull.number)
    payload["number"] = pull.number
    await world.send("pull_request", payload)
    assert [m.decode() for m in await world.pool.zrange(abort_jobs_ss, 0, -1)] == [run1]
    pipeline = await world.pipelines.get(pipeline_id(FULL, pull.number))
    assert pipeline is not None and pipeline.closed


async def test_installation_bookkeeping(world: World) -> None:
    added = world.corpus("installation_repositories.added.1.json")
    await world.send("installation_repositories", added)
    inst = added["installation"]["id"]
    names = [r["full_name"] for r in added["repositories_added"]]
    assert names
    for name in names:
        assert await installation_for_repo(world.pool, name) == inst
    removed = copy.deepcopy(added)
    removed.update(
        action="removed", repositories_added=[], repositories_removed=added["repositories_added"]
    )
    await world.send("installation_repositories", removed)
    assert await world.pool.hgetall(REPO_INSTALLATIONS) == {}

    created = world.corpus("installation.created.1.json")
    await world.send("installation", created)
    for repo in created["repositories"]:
        assert (
            await installation_for_repo(world.pool, repo["full_name"])
            == created["installation"]["id"]
        )
    deleted = copy.deepcopy(created)
    deleted["action"] = "deleted"
    await world.send("installation", deleted)
    assert await world.pool.hgetall(REPO_INSTALLATIONS) == {}


async def test_removing_a_repository_keeps_another_installations_claim(world: World) -> None:
    removed = world.corpus("installation_repositories.removed.1.json")
    names = [r["full_name"] for r in removed["repositories_removed"]]
    assert names
    await world.pool.hset(REPO_INSTALLATIONS, names[0].lower(), "999")
    await world.send("installation_repositories", removed)
    assert await installation_for_repo(world.pool, names[0]) == 999


async def test_an_event_without_installation_uses_the_bookkeeping(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    await world.pool.hset(REPO_INSTALLATIONS, FULL.lower(), str(world.creds.installation_id))
    payload = world.issue_comment(SCRIPT, number=issue.number)
    del payload["installation"]
    delivery = await world.send("issue_comment", payload)
    assert await world.job(run_id_for(issue.number, delivery)) is not None


# --- the worker's wiring ----------------------------------------------------------------------


async def test_unknown_events_are_ignored(world: World) -> None:
    payload = world.point(world.corpus("issues.opened.1.json"))
    result = await handle_event(world.ctx, "issues", str(uuid.uuid4()), payload)
    assert result == "ignored issues.opened"
    assert world.state.requests == []


async def test_a_malformed_payload_is_dropped(world: World) -> None:
    payload = world.point(world.corpus("issue_comment.created.1.json"))
    del payload["comment"]
    result = await handle_event(world.ctx, "issue_comment", str(uuid.uuid4()), payload)
    assert result == "malformed issue_comment.created"
    assert world.state.requests == []


def test_worker_settings(world: World) -> None:
    settings = worker_settings(world.ctx[SERVICES_KEY].settings)
    assert settings["queue_name"] == QUEUE_NAME
    function, cleaning = settings["functions"]
    assert function.name == HANDLER_FUNCTION
    assert function.max_tries == ARQ_MAX_TRIES > MAX_TRIES
    assert cleaning.name == CLEAN_FUNCTION


def _pipeline(active: str | None, statuses: dict[str, str]) -> Pipeline:
    settings = RunSettings(
        agent="script", image="i", label="default", timeout_minutes=1, network="none",
        resources=Resources(),
    )  # fmt: skip
    runs = [
        PipelineRun.model_validate(
            {
                "run_id": run_id,
                "prompt": run_id,
                "settings": settings,
                "requested_by": WRITER,
                "thread": 1,
                "status": status,
                "started": status in ("running", "finished"),
                "outcome": Outcome.SUCCESS if status == "finished" else None,
            }
        )
        for run_id, status in statuses.items()
    ]
    return Pipeline(
        id="p.1", repo=FULL, number=1, kind="issue", branch="b", base_branch="main",
        clone_url="x", installation_id=1, active_run=active, runs=runs,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("active", "statuses", "run_id", "ahead"),
    [
        (None, {"r1": "waiting"}, "r1", None),
        ("r1", {"r1": "queued", "r2": "waiting"}, "r2", "r1"),
        ("r1", {"r1": "queued", "r2": "waiting", "r3": "waiting"}, "r3", "r1"),
        ("r2", {"r1": "finished", "r2": "running", "r3": "waiting"}, "r2", None),
        (None, {"r1": "finished", "r2": "waiting", "r3": "waiting"}, "r2", None),
        (None, {"r1": "finished", "r2": "waiting", "r3": "waiting"}, "r3", "r2"),
    ],
)
def test_what_a_run_waits_for(
    active: str | None, statuses: dict[str, str], run_id: str, ahead: str | None
) -> None:
    found = _pipeline(active, statuses).ahead_of(run_id)
    assert (found.run_id if found else None) == ahead


def test_history_holds_only_runs_that_ran() -> None:
    pipeline = _pipeline("r3", {"r1": "finished", "r2": "waiting", "r3": "running"})
    pipeline.runs.append(
        pipeline.runs[0].model_copy(
            update={"run_id": "r0", "started": False, "outcome": Outcome.CANCELLED}
        )
    )
    assert [h.run_id for h in pipeline.history()] == ["r1"]
    assert [r.run_id for r in pipeline.waiting()] == ["r2"]


@pytest.mark.parametrize(
    ("pid", "delivery"),
    [
        ("octo-org.widgets.7", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        (pipeline_id("o" * 39 + "/" + "r" * 100, 123456), "a" * 36),
        ("octo-org.widgets.7", "../../etc/passwd"),
    ],
)
def test_run_ids_are_safe_and_deterministic(pid: str, delivery: str) -> None:
    services: Any = None
    first = Delivery("issues", "labeled", delivery, {}, services).run_id(pid)
    again = Delivery("issues", "labeled", delivery, {}, services).run_id(pid)
    assert first == again
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,100}", first)
    assert first.startswith(pid[:40])
    other = Delivery("issues", "labeled", "ffffffff-0000", {}, services).run_id(pid)
    assert other != first
