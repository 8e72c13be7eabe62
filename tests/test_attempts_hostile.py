"""Attempts against hostile agents and people (real Redis, the App worker and reporter,
GitHub's stand-in with a real git server): what an agent reports, a person's pushes and
closing the thread never lose work, hang a table or move a branch unexpectedly."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

from app.conversation.naming import pipeline_id
from app.ops.worker import SERVICES_KEY, handle_event
from app.runs.pipelines import Pipeline
from runner.agents.script import ScriptAdapter
from runner.events import Usage
from runner.job import CommitInfo, Outcome, RunFinished
from tests import test_reporter
from tests.test_reporter import FULL, OWNER, REPO, WRITER, World

fake = test_reporter.fake
world = test_reporter.world


def _payload(world: World, event: str, number: int, title: str) -> dict[str, object]:
    payload: dict[str, object] = json.loads((world.corpora / "webhooks" / event).read_text())
    repository = payload["repository"]
    assert isinstance(repository, dict)
    repository.update(
        name=REPO, full_name=FULL, clone_url=world.gh.clone_url(OWNER, REPO),
        default_branch="main", owner={**repository["owner"], "login": OWNER},
    )  # fmt: skip
    payload["installation"] = {"id": world.installation_id, "node_id": "MDIz"}
    issue = payload["issue"]
    assert isinstance(issue, dict)
    issue.update(number=number, title=title, body="details", state="open")
    issue.pop("pull_request", None)
    return payload


async def say(
    world: World, number: int, command: str, delivery: str | None = None, title: str = "Fix it"
) -> str:
    """`command` commented on issue `number` by the writer; the delivery id."""
    comment = world.state.add_comment(OWNER, REPO, number, command, WRITER)
    payload = _payload(world, "issue_comment.created.1.json", number, title)
    user = {"login": WRITER, "type": "User", "id": 1}
    payload["comment"] = {
        **payload["comment"],  # type: ignore[dict-item]
        "id": comment.id, "body": command, "user": user, "performed_via_github_app": None,
    }  # fmt: skip
    payload["sender"] = user
    delivery = delivery or str(uuid.uuid4())
    ctx = {"redis": world.pool, "job_try": 1, SERVICES_KEY: world.services}
    await handle_event(ctx, "issue_comment", delivery, payload)
    return delivery


async def close_issue(world: World, number: int) -> None:
    payload = _payload(world, "issues.closed.1.json", number, "Fix it")
    payload["issue"]["state"] = "closed"  # type: ignore[index]
    payload["sender"] = {"login": WRITER, "type": "User", "id": 1}
    ctx = {"redis": world.pool, "job_try": 1, SERVICES_KEY: world.services}
    await handle_event(ctx, "issues", str(uuid.uuid4()), payload)


async def pipeline_of(world: World, number: int) -> Pipeline:
    found = await world.services.pipelines.get(pipeline_id(FULL, number))
    assert found is not None
    return found


def table_of(world: World, number: int) -> str:
    (body,) = [b for b in world.bot_comments(number) if "attempts" in b and "| Attempt |" in b]
    return body


def commit_on(world: World, tmp: Path, branch: str, start: str, text: str) -> str:
    """A commit on `branch` of the stand-in's repository, made from `start`; its sha."""
    work = tmp / uuid.uuid4().hex
    bare = world.gh.fake.bare_path(OWNER, REPO)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(work), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True)
    git("checkout", "-q", "-B", branch, f"origin/{start}")
    (work / f"{uuid.uuid4().hex}.txt").write_text(text)
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", text)
    git("push", "-q", "origin", f"HEAD:refs/heads/{branch}")
    return git("rev-parse", "HEAD")


async def attempt_set_of(world: World, count: int = 2) -> tuple[Pipeline, list[str]]:
    """A new issue whose first request is `count` attempts: the pipeline and run ids."""
    issue = world.state.add_issue(OWNER, REPO, "Fix it", "details", WRITER)
    await say(world, issue.number, f"/trimo run --attempts {count} echo hi")
    pipeline = await pipeline_of(world, issue.number)
    (attempt_set,) = pipeline.attempt_sets
    return pipeline, list(attempt_set.runs)


async def finish_attempt(
    world: World, run_id: str, head: str | None = None, **fields: object
) -> None:
    await world.started(run_id)
    commits = [CommitInfo(sha=head, subject="work")] if head else []
    event = RunFinished(
        run_id=run_id, outcome=Outcome.SUCCESS, head_sha=head, commits=commits, **fields
    )  # type: ignore[arg-type]
    await world.emit(run_id, event)
    await world.settle()


# --- an agent's word ------------------------------------------------------------------------


async def test_an_agent_claiming_absurd_usage_cannot_break_its_sets_table(world: World) -> None:
    pipeline, (first, second) = await attempt_set_of(world)
    # What a hostile script prints as its usage: the adapter takes the line as it is.
    line = json.dumps({"type": "usage", "input_tokens": 10**400, "cost_usd": 1e308})
    (usage,) = ScriptAdapter().parse_line(line)
    assert isinstance(usage, Usage)
    await finish_attempt(world, first, usage=usage, last_word="I was cheap")
    await finish_attempt(world, second)
    text = table_of(world, pipeline.number)
    assert "### 🏁 2 attempts ranked" in text and "I was cheap" in text
    assert all(len(line) < 1000 for line in text.splitlines())
    after = await pipeline_of(world, pipeline.number)
    assert after.active_run is None  # the set ended: the pipeline is free for the next run


# --- closing, stopping ----------------------------------------------------------------------


async def test_closing_the_issue_while_a_set_waits_ends_its_table(world: World) -> None:
    number, first = await world.accept(command="/trimo run echo first")
    await world.started(first)
    await say(world, number, "/trimo run --attempts 2 echo then")
    assert "### ⏳ 2 attempts running" in table_of(world, number)
    await close_issue(world, number)
    await world.emit(first, test_reporter.finished(first, Outcome.CANCELLED))
    await world.settle()
    text = table_of(world, number)
    assert "⏳" not in text and text.count("⏹️ stopped") == 2, text
    pipeline = await pipeline_of(world, number)
    assert pipeline.active_run is None and all(r.status == "finished" for r in pipeline.runs)
