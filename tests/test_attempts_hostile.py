"""Attempts against hostile agents and people (real Redis, the App worker and reporter,
GitHub's stand-in with a real git server): what an agent reports, a person's pushes and
closing the thread never lose work, hang a table or move a branch unexpectedly."""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from pathlib import Path

import pytest
from arq.constants import job_key_prefix
from arq.jobs import deserialize_job
from arq.worker import Retry

from app.conversation.naming import pipeline_id
from app.ops.worker import SERVICES_KEY, handle_event
from app.runs import attempts
from app.runs.pipelines import Pipeline
from runner.agents.script import ScriptAdapter
from runner.contract import attempt_pipeline
from runner.events import Usage
from runner.job import (
    CheckResult,
    CommitInfo,
    Outcome,
    RunFinished,
    RunRequest,
    VerifyReport,
    is_valid_name,
)
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


async def say(world: World, number: int, command: str) -> str:
    """`command` commented on issue `number` by the writer; the delivery id."""
    delivery = str(uuid.uuid4())
    await deliver(world, delivery, commented(world, number, command))
    return delivery


async def deliver(world: World, delivery: str, payload: dict[str, object]) -> None:
    ctx = {"redis": world.pool, "job_try": 1, SERVICES_KEY: world.services}
    await handle_event(ctx, "issue_comment", delivery, payload)


def commented(world: World, number: int, command: str, title: str = "Fix it") -> dict[str, object]:
    """The webhook of `command`, commented on issue `number` by the writer."""
    comment = world.state.add_comment(OWNER, REPO, number, command, WRITER)
    payload = _payload(world, "issue_comment.created.1.json", number, title)
    user = {"login": WRITER, "type": "User", "id": 1}
    payload["comment"] = {
        **payload["comment"],  # type: ignore[dict-item]
        "id": comment.id, "body": command, "user": user, "performed_via_github_app": None,
    }  # fmt: skip
    payload["sender"] = user
    return payload


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


def commit_on(world: World, tmp: Path, branch: str, start: str, text: str, path: str = "") -> str:
    """A commit on `branch` of the stand-in's repository, made from `start` (writing `text`
    to `path`, else to a new file); its sha."""
    work = tmp / uuid.uuid4().hex
    bare = world.gh.fake.bare_path(OWNER, REPO)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(work), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True)
    git("checkout", "-q", "-B", branch, f"origin/{start}")
    (work / (path or f"{uuid.uuid4().hex}.txt")).write_text(text)
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", text)
    # As a person with admin rights would: past the server's rules for the default branch.
    subprocess.run(
        ["git", "-C", str(bare), "fetch", "-q", str(work), f"HEAD:refs/heads/{branch}"],
        check=True,
    )
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


# --- picking --------------------------------------------------------------------------------


async def finished_set(world: World, tmp: Path) -> tuple[Pipeline, list[str]]:
    """Two attempts that ended with a commit each on their own branches."""
    pipeline, runs = await attempt_set_of(world)
    for run_id in runs:
        run = (await pipeline_of(world, pipeline.number)).find(run_id)
        assert run is not None and run.branch
        await finish_attempt(world, run_id, commit_on(world, tmp, run.branch, "main", run_id))
    return await pipeline_of(world, pipeline.number), runs


async def test_no_pick_moves_the_branch_while_a_run_of_the_pipeline_goes(
    world: World, tmp_path: Path
) -> None:
    pipeline, _ = await finished_set(world, tmp_path)
    await say(world, pipeline.number, "/trimo pick 1")
    kept = world.gh.fake.branch_sha(OWNER, REPO, pipeline.branch)
    assert kept == pipeline.attempts_of(pipeline.attempt_sets[0])[0].head_sha
    # A follow-up starts from attempt 1's head; a switch now would pull the branch from
    # under it (its commits would be refused, then replayed onto attempt 2).
    await say(world, pipeline.number, "/trimo run echo more")
    follow_up = (await pipeline_of(world, pipeline.number)).runs[-1]
    await world.started(follow_up.run_id)
    await say(world, pipeline.number, "/trimo pick 2")
    assert world.gh.fake.branch_sha(OWNER, REPO, pipeline.branch) == kept
    assert any("once it has ended" in body for body in world.bot_comments(pipeline.number))
    after = await pipeline_of(world, pipeline.number)
    assert after.attempt_sets[0].picked == 1


def picking_automatically(world: World, tmp: Path) -> None:
    text = "agent: script\npick: auto\n"
    commit_on(world, tmp, "main", "main", text, ".github/trimo.yml")


def passed(sha: str) -> VerifyReport:
    return VerifyReport(sha=sha, checks=[CheckResult(name="tests", passed=True)])


async def test_a_follow_up_waiting_behind_an_automatic_pick_builds_on_it(
    world: World, tmp_path: Path
) -> None:
    picking_automatically(world, tmp_path)
    pipeline, (first, second) = await attempt_set_of(world)
    await say(world, pipeline.number, "/trimo run echo more")
    follow_up = (await pipeline_of(world, pipeline.number)).runs[-1]
    assert follow_up.status == "waiting"
    branch = f"{pipeline.branch}-attempt-1"
    head = commit_on(world, tmp_path, branch, "main", "one")
    await finish_attempt(world, first, head, verify=passed(head))
    await finish_attempt(world, second)
    assert world.gh.fake.branch_sha(OWNER, REPO, pipeline.branch) == head
    raw = await world.pool.get(job_key_prefix + follow_up.run_id)
    assert raw is not None
    request = RunRequest.model_validate(deserialize_job(raw).args[0])
    assert request.history and "This was attempt #1 of 2" in request.history[-1].attempts


async def test_an_automatic_pick_that_cannot_be_made_still_ranks_the_table_and_says_why(
    world: World, tmp_path: Path
) -> None:
    picking_automatically(world, tmp_path)
    pipeline, (first, second) = await attempt_set_of(world)
    pushed = commit_on(world, tmp_path, pipeline.branch, "main", "a person's work")
    head = commit_on(world, tmp_path, f"{pipeline.branch}-attempt-1", "main", "one")
    await finish_attempt(world, first, head, verify=passed(head))
    await finish_attempt(world, second)
    assert world.gh.fake.branch_sha(OWNER, REPO, pipeline.branch) == pushed
    text = table_of(world, pipeline.number)
    assert "### 🏁 2 attempts ranked" in text
    assert "Attempt #1 passed, yet was not kept" in text and "someone pushed to it" in text
    assert "No attempt passed verification" not in text


async def test_a_pick_tried_again_after_github_failed_still_opens_the_pull_request(
    world: World, tmp_path: Path
) -> None:
    pipeline, _ = await finished_set(world, tmp_path)
    world.state.fail_next("POST", f"/repos/{OWNER}/{REPO}/pulls$", 502)
    payload = commented(world, pipeline.number, "/trimo pick 1")
    delivery = str(uuid.uuid4())
    with pytest.raises(Retry):
        await deliver(world, delivery, payload)  # arq tries the delivery again
    assert world.state.pulls_for(pipeline.branch) == []
    await deliver(world, delivery, payload)
    (pull,) = world.state.pulls_for(pipeline.branch)
    assert f"in #{pull.number}" in table_of(world, pipeline.number)


async def test_cleaning_keeps_an_attempts_branch_someone_pushed_to_since(
    world: World, tmp_path: Path
) -> None:
    pipeline, (first, _) = await finished_set(world, tmp_path)
    await say(world, pipeline.number, "/trimo pick 1")
    second = f"{pipeline.branch}-attempt-2"
    mine = commit_on(world, tmp_path, second, second, "a person's fix on top of attempt 2")
    deleted = await attempts.clean_attempts(world.services, pipeline.id, first)
    assert deleted == 1
    assert world.gh.fake.branch_sha(OWNER, REPO, f"{pipeline.branch}-attempt-1") is None
    assert world.gh.fake.branch_sha(OWNER, REPO, second) == mine
    assert "except any pushed to since" in table_of(world, pipeline.number)


# --- on the runner --------------------------------------------------------------------------


def test_attempts_of_different_pipelines_never_share_a_runner_side_pipeline() -> None:
    # A long repository name: each pipeline id fills most of the 100 characters, and the
    # attempt's `.aN` must not cut into what tells the issues (or repositories) apart.
    owner = "octo-org"
    repos = [f"{owner}/{'r' * 84}", f"{owner}/{'r' * 84}.1", f"{owner}/{'w' * 95}"]
    ids = {pipeline_id(repo, n) for repo in repos for n in (1, 5, 7, 8, 12, 13, 123, 124)}
    for number in (1, 2, 16):
        names = {attempt_pipeline(pid, number) for pid in ids}
        assert len(names) == len(ids)
        assert all(is_valid_name(name) and name.endswith(f".a{number}") for name in names)
        assert not names & ids


async def test_no_pick_moves_the_branch_an_attempt_of_its_set_has_yet_to_start_from(
    world: World, tmp_path: Path
) -> None:
    pipeline, (first, second) = await attempt_set_of(world)
    branch = f"{pipeline.branch}-attempt-1"
    await finish_attempt(world, first, commit_on(world, tmp_path, branch, "main", "one"))
    assert (await pipeline_of(world, pipeline.number)).find(second).status == "queued"  # type: ignore[union-attr]
    # Attempt 2 waits for a runner: it starts from the branch as it is then, so a pick now
    # would have it build on attempt 1 instead of from the same commit.
    await say(world, pipeline.number, "/trimo pick 1")
    assert world.gh.fake.branch_sha(OWNER, REPO, pipeline.branch) is None
    assert any("once it has started" in body for body in world.bot_comments(pipeline.number))


async def test_a_branch_too_long_for_its_attempts_names_is_refused_not_a_hang(
    world: World, tmp_path: Path
) -> None:
    head_ref = "feature/" + "x" * 190  # a name Trimo works on: its attempts' would be over 200
    head = commit_on(world, tmp_path, head_ref, "main", "a person's start")
    pull = world.state.add_pull(
        OWNER, REPO, title="Long", body="", user=WRITER, head_ref=head_ref, base_ref="main",
        head_sha=head, base_sha=world.gh.fake.branch_sha(OWNER, REPO, "main") or "",
    )  # fmt: skip
    payload = commented(world, pull.number, "/trimo run --attempts 2 echo hi", title="Long")
    payload["issue"]["pull_request"] = {"url": "https://example.invalid/pull"}  # type: ignore[index]
    with contextlib.suppress(Retry):  # whatever went wrong, the pipeline must go on
        await deliver(world, str(uuid.uuid4()), payload)
    assert any("too long" in body for body in world.bot_comments(pull.number))
    found = await world.services.pipelines.get(pipeline_id(FULL, pull.number))
    assert found is None or found.active_run is None


async def test_closing_the_issue_keeps_nothing_automatically(world: World, tmp_path: Path) -> None:
    picking_automatically(world, tmp_path)
    pipeline, (first, _) = await attempt_set_of(world)
    head = commit_on(world, tmp_path, f"{pipeline.branch}-attempt-1", "main", "one")
    await finish_attempt(world, first, head, verify=passed(head))
    await close_issue(world, pipeline.number)  # attempt 2 never started: it is dropped
    await world.settle()
    assert world.gh.fake.branch_sha(OWNER, REPO, pipeline.branch) is None
    assert world.state.pulls_for(pipeline.branch) == []
    text = table_of(world, pipeline.number)
    assert "### 🏁 2 attempts ranked" in text and "so none was kept automatically" in text


async def test_an_attempt_never_gets_a_branch_someone_made_however_many_they_made(
    world: World,
) -> None:
    issue = world.state.add_issue(OWNER, REPO, "Fix it", "details", WRITER)
    branch = f"trimo/{issue.number}-fix-it"
    made = range(1, 10)  # more than the attempts asked for and the spare numbers looked up
    for number in made:
        world.branch_from_main(f"{branch}-attempt-{number}")
    await say(world, issue.number, "/trimo run --attempts 2 echo hi")
    pipeline = await pipeline_of(world, issue.number)
    numbers = [run.attempt for run in pipeline.attempts_of(pipeline.attempt_sets[0])]
    assert len(numbers) == 2 and not set(numbers) & set(made), numbers


async def test_too_many_branches_named_like_attempts_are_a_refusal(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, "Fix it", "details", WRITER)
    branch = f"trimo/{issue.number}-fix-it"
    bare = world.gh.fake.bare_path(OWNER, REPO)
    refs = "".join(f"create refs/heads/{branch}-attempt-{n} main\n" for n in range(1, 80))
    subprocess.run(["git", "-C", str(bare), "update-ref", "--stdin"], input=refs.encode(),
                   check=True)  # fmt: skip
    await say(world, issue.number, "/trimo run --attempts 2 echo hi")
    assert any("none is free" in body for body in world.bot_comments(issue.number))
    found = await world.services.pipelines.get(pipeline_id(FULL, issue.number))
    assert found is None or not found.runs
    assert len(world.state.requests_to("GET", "/git/ref/heads/")) <= 64 + 6


async def test_a_waiting_attempt_whose_branch_someone_made_meanwhile_never_continues_it(
    world: World, tmp_path: Path
) -> None:
    number, first = await world.accept(command="/trimo run echo first")
    await world.started(first)
    await say(world, number, "/trimo run --attempts 2 echo then")
    pipeline = await pipeline_of(world, number)
    one, two = pipeline.attempts_of(pipeline.attempt_sets[0])
    assert two.branch and two.branch in table_of(world, number)  # named on the thread
    # Someone reads the name and makes the branch, with a commit the attempt would hide.
    planted = commit_on(world, tmp_path, two.branch, "main", "planted")
    await world.emit(first, test_reporter.finished(first))
    await world.settle()
    after = await pipeline_of(world, number)
    found_one, found_two = after.find(one.run_id), after.find(two.run_id)
    assert found_one is not None and found_one.status == "queued"
    assert found_two is not None and found_two.status == "finished"
    assert "someone else" in found_two.reason
    assert world.gh.fake.branch_sha(OWNER, REPO, two.branch) == planted
