"""Discovery on the App side: the command, the label, and failing checks on Trimo's branches.

`handle_event` is called directly (see tests/test_app_worker.py); Redis is real, GitHub is
the stand-in, payloads come from the corpora.
"""

from __future__ import annotations

from typing import Any

from app.conversation.naming import branch_pipeline_id, pipeline_id
from app.conversation.policy import RunSettings
from app.reporting.channels.pullrequest import PULL_OF_PIPELINE
from app.runs.pipelines import Pipeline, PipelineRun
from runner.job import Outcome, Resources, RunFinished
from tests import test_app_worker
from tests.fakegithub.gitserver import run_git
from tests.test_app_worker import (
    FULL,
    OWNER,
    REPO,
    TITLE,
    WRITER,
    World,
    labeled_payload,
    run_id_for,
)

fake = test_app_worker.fake
world = test_app_worker.world

CI_APP = {"id": 29310, "slug": "github-actions", "name": "GitHub Actions"}


def set_config(world: World, text: str) -> None:
    """Commit `.github/trimo.yml` to main of the stand-in's repository."""
    bare = world.gh.fake.bare_path(OWNER, REPO)
    blob = run_git(bare, "hash-object", "-w", "--stdin", input=text.encode()).stdout.decode()
    tree = run_git(
        bare, "mktree", input=f"100644 blob {blob.strip()}\ttrimo.yml\n".encode()
    ).stdout.decode()
    root = run_git(bare, "ls-tree", "main").stdout.decode()
    root += f"040000 tree {tree.strip()}\t.github\n"
    new_root = run_git(bare, "mktree", input=root.encode()).stdout.decode().strip()
    commit = run_git(bare, "commit-tree", new_root, "-p", "main", "-m", "config").stdout
    run_git(bare, "update-ref", "refs/heads/main", commit.decode().strip())


def advance(world: World, branch: str, start: str = "main") -> str:
    """A new commit on `branch` (made from `start` if new), as a run's push would; its sha."""
    bare = world.gh.fake.bare_path(OWNER, REPO)
    parent = world.gh.fake.branch_sha(OWNER, REPO, branch) or world.head(start)
    tree = run_git(bare, "rev-parse", f"{parent}^{{tree}}").stdout.decode().strip()
    commit = run_git(bare, "commit-tree", tree, "-p", parent, "-m", "work").stdout
    sha = commit.decode().strip()
    run_git(bare, "update-ref", f"refs/heads/{branch}", sha)
    return sha


async def finished_pipeline(world: World, number: int) -> tuple[str, str]:
    """Issue `number` with one finished run whose commit is on its branch: (branch, sha)."""
    delivery = await world.send(
        "issue_comment", world.issue_comment("/trimo run --agent script echo", number=number)
    )
    run_id = run_id_for(number, delivery)
    request = await world.job(run_id)
    assert request is not None
    sha = advance(world, request.branch)
    await world.pipelines.finish(RunFinished(run_id=run_id, outcome=Outcome.SUCCESS, head_sha=sha))
    return request.branch, sha


def failing_suite(world: World, branch: str, sha: str, *names: str) -> dict[str, Any]:
    """A completed, failed check suite of another App on `sha`, with failed check runs."""
    suite_id = world.state.next_id()
    for name in names:
        run = world.state.add_check_run(OWNER, REPO, name, sha, suite_id=suite_id, app=CI_APP)
        run.status, run.conclusion = "completed", "failure"
        run.output = {"title": f"{name} failed", "summary": f"{name}: 2 errors\n@octocat look"}
    passing = world.state.add_check_run(OWNER, REPO, "docs", sha, suite_id=suite_id, app=CI_APP)
    passing.status, passing.conclusion = "completed", "success"
    payload = world.point(world.corpus("check_suite.completed.1.json"))
    payload["check_suite"].update(
        id=suite_id, head_branch=branch, head_sha=sha, conclusion="failure", app=CI_APP
    )
    return payload


async def automatic_runs(world: World, number: int) -> list[Any]:
    return await automatic_runs_of(world, pipeline_id(FULL, number))


async def automatic_runs_of(world: World, pipeline: str) -> list[PipelineRun]:
    found = await world.pipelines.get(pipeline)
    assert found is not None
    return [run for run in found.runs if run.automatic]


# --- asking for a discovery run -----------------------------------------------------------


async def test_the_discover_command_queues_a_read_only_run_on_the_issue(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    payload = world.issue_comment("/trimo discover --agent script the login form", number=1)
    delivery = await world.send("issue_comment", payload)

    request = await world.job(run_id_for(issue.number, delivery))
    assert request is not None and request.mode == "discover"
    assert request.prompt == f"{TITLE}\n\ndetails\n\nFocus on: the login form"
    assert request.agent == "script"
    [progress] = world.bot_comments(issue.number)
    assert "discovery run" in progress and "nothing is pushed" in progress
    [check] = world.state.check_runs.values()
    assert check.output["title"] == "Queued (discovery)"


async def test_the_discover_label_queues_a_discovery_of_the_issue(world: World) -> None:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "The button does nothing.")
    payload = labeled_payload(
        world, number=issue.number, label="trimo:discover", body=issue.body or ""
    )
    delivery = await world.send("issues", payload)

    request = await world.job(run_id_for(issue.number, delivery))
    assert request is not None and request.mode == "discover"
    assert request.prompt == f"{TITLE}\n\nThe button does nothing."


async def test_help_names_the_discover_command_and_label(world: World) -> None:
    world.state.add_issue(OWNER, REPO, TITLE, "details")
    await world.send("issue_comment", world.issue_comment("/trimo help", number=1))
    [usage] = world.bot_comments(1)
    assert "/trimo discover" in usage and "`trimo:discover`" in usage


# --- failing checks -----------------------------------------------------------------------------


async def test_failing_checks_start_a_run_then_a_second_and_no_third(world: World) -> None:
    set_config(world, "agent: script\nci_failure: discover\n")
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    branch, sha = await finished_pipeline(world, issue.number)

    await world.send("check_suite", failing_suite(world, branch, sha, "lint", "tests"))
    [first] = await automatic_runs(world, issue.number)
    request = await world.job(first.run_id)
    assert request is not None and request.mode == "discover"
    assert [(c.name, c.conclusion) for c in request.failing_checks] == [
        ("tests", "failure"),
        ("lint", "failure"),
    ]
    assert request.failing_checks[0].summary == "tests: 2 errors\n@octocat look"
    why = [c for c in world.bot_comments(issue.number) if "Checks failed on" in c]
    assert len(why) == 1 and "attempt 1 of 2" in why[0] and "`tests: failure`" in why[0]
    assert "`docs" not in why[0]

    # The same commit failing again starts nothing; a new failing commit, a second run.
    await world.send("check_suite", failing_suite(world, branch, sha, "lint"))
    await world.pipelines.finish(RunFinished(run_id=first.run_id, outcome=Outcome.SUCCESS))
    await world.send("check_suite", failing_suite(world, branch, sha, "lint"))
    assert len(await automatic_runs(world, issue.number)) == 1

    second_sha = advance(world, branch)
    await world.send("check_suite", failing_suite(world, branch, second_sha, "lint"))
    runs = await automatic_runs(world, issue.number)
    assert len(runs) == 2 and runs[1].ci_sha == second_sha
    assert any("last automatic attempt" in c for c in world.bot_comments(issue.number))
    await world.pipelines.finish(RunFinished(run_id=runs[1].run_id, outcome=Outcome.SUCCESS))

    third_sha = advance(world, branch)
    await world.send("check_suite", failing_suite(world, branch, third_sha, "lint"))
    assert len(await automatic_runs(world, issue.number)) == 2

    # A person's request starts the count again.
    await world.send(
        "issue_comment", world.issue_comment("/trimo run --agent script echo", number=1)
    )
    pipeline = await world.pipelines.get(pipeline_id(FULL, issue.number))
    assert pipeline is not None and pipeline.automatic_runs == 0


async def test_fix_mode_starts_a_coding_run(world: World) -> None:
    set_config(world, "agent: script\nci_failure: fix\n")
    world.state.add_issue(OWNER, REPO, TITLE, "details")
    branch, sha = await finished_pipeline(world, 1)
    await world.send("check_suite", failing_suite(world, branch, sha, "tests"))
    [run] = await automatic_runs(world, 1)
    request = await world.job(run.run_id)
    assert request is not None and request.mode == "code"
    assert "fix it" in request.prompt


async def test_checks_failing_elsewhere_start_nothing(world: World) -> None:
    set_config(world, "agent: script\nci_failure: fix\n")
    world.state.add_issue(OWNER, REPO, TITLE, "details")
    branch, sha = await finished_pipeline(world, 1)
    before = list(world.bot_comments(1))

    other = advance(world, "feature/login")
    await world.send("check_suite", failing_suite(world, "feature/login", other, "tests"))
    not_trimos = failing_suite(world, "trimo/99-not-a-pipeline", sha, "tests")
    await world.send("check_suite", not_trimos)
    own = failing_suite(world, branch, sha, "Trimo")
    own["check_suite"]["app"] = {"id": world.creds.app_id}
    await world.send("check_suite", own)
    await world.send("check_suite", failing_suite(world, branch, sha, "Trimo"))  # its name
    passed = failing_suite(world, branch, sha, "tests")
    passed["check_suite"]["conclusion"] = "success"
    await world.send("check_suite", passed)

    assert await automatic_runs(world, 1) == []
    assert world.bot_comments(1) == before


async def test_ci_failure_off_starts_nothing(world: World) -> None:
    set_config(world, "agent: script\n")  # `ci_failure` defaults to off
    world.state.add_issue(OWNER, REPO, TITLE, "details")
    branch, sha = await finished_pipeline(world, 1)
    await world.send("check_suite", failing_suite(world, branch, sha, "tests"))
    set_config(world, "agent: script\nci_failure: off\n")
    await world.send("check_suite", failing_suite(world, branch, sha, "lint"))
    assert await automatic_runs(world, 1) == []
    assert not any("Checks failed" in c for c in world.bot_comments(1))


async def test_a_suite_gone_from_the_checks_api_starts_nothing(world: World) -> None:
    set_config(world, "agent: script\nci_failure: fix\n")
    world.state.add_issue(OWNER, REPO, TITLE, "details")
    branch, sha = await finished_pipeline(world, 1)
    payload = failing_suite(world, branch, sha)
    payload["check_suite"]["id"] = 424242  # GitHub answers 404 for it
    await world.send("check_suite", payload)
    assert await automatic_runs(world, 1) == []


async def test_a_pipeline_started_from_the_dashboard_answers_on_its_pull_request(
    world: World,
) -> None:
    set_config(world, "agent: script\nci_failure: discover\n")
    branch = "trimo/speed-up"
    seed = Pipeline(
        id=branch_pipeline_id(FULL, branch), repo=FULL, number=0, kind="branch", branch=branch,
        base_branch="main", clone_url=world.gh.clone_url(OWNER, REPO),
        installation_id=world.creds.installation_id, title="Speed up",
    )  # fmt: skip
    settings = RunSettings(
        agent="script", image="i", label="default", timeout_minutes=5, network="none",
        resources=Resources(),
    )  # fmt: skip
    run = PipelineRun(run_id="dash-1", prompt="speed up", settings=settings, requested_by=WRITER,
                      thread=0)  # fmt: skip
    await world.pipelines.add_run(seed, run)
    sha = advance(world, branch)
    await world.pipelines.finish(RunFinished(run_id="dash-1", outcome=Outcome.SUCCESS))
    assert await automatic_runs_of(world, seed.id) == []
    await world.send("check_suite", failing_suite(world, branch, sha, "tests"))
    assert await automatic_runs_of(world, seed.id) == []  # no pull request to answer on yet

    pull = world.state.add_pull(
        OWNER, REPO, title="Speed up", body="", user="trimo[bot]", head_ref=branch,
        base_ref="main", head_sha=sha, base_sha=world.head(),
    )  # fmt: skip
    await world.pool.hset(PULL_OF_PIPELINE, seed.id, str(pull.number))
    await world.send("check_suite", failing_suite(world, branch, sha, "tests"))
    [automatic] = await automatic_runs_of(world, seed.id)
    assert automatic.thread == pull.number
    assert any("Checks failed on" in c for c in world.bot_comments(pull.number))
