"""Discovery through the whole loop (real processes, Redis, Docker and git; GitHub's
stand-in): a label asks for a plan, the plan comes back, and the next run is given it;
failing checks on a Trimo branch start a run by themselves."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from arq.connections import create_pool

from app.runs.pipelines import Pipelines
from runner.redisurl import redis_settings
from tests.loop_harness import CONFIG, OWNER, REPO, WRITER, Loop, running_loop
from tests.test_end_to_end import branch_of, finished_check

pytestmark = [pytest.mark.docker, pytest.mark.redis]

CI_APP = {"id": 29310, "slug": "github-actions", "name": "GitHub Actions"}
PLAN_SCRIPT = (
    "echo vandal > README.md && git commit -qam Vandal && echo junk > junk.txt\n"
    'echo \'{"type": "tool_call", "name": "Read", "summary": "README.md"}\'\n'
    "printf '## Findings\\nThe README is short; ask @octocat.\\n## Plan\\n1. Add a greeting\\n'"
)


@pytest.fixture(scope="module")
def loop(
    redis_server: str, tmp_path_factory: pytest.TempPathFactory, corpora: Path, test_image: str
) -> Iterator[Loop]:
    config = CONFIG + "ci_failure: fix\n"
    workdir = tmp_path_factory.mktemp("discover-loop")
    with running_loop(redis_server, workdir, corpora, {".github/trimo.yml": config}) as loop:
        yield loop


def label(loop: Loop, number: int, name: str) -> None:
    issue = loop.state.issues[(OWNER, REPO, number)]
    payload = loop.payload("issues.labeled.1.json")
    payload["issue"].update(number=number, title=issue.title, body=issue.body, state="open")
    payload["issue"].pop("pull_request", None)
    payload["label"] = {**payload["label"], "name": name}
    payload["sender"] = {**payload["sender"], "login": WRITER, "type": "User"}
    loop.deliver("issues", payload)


def test_a_label_asks_for_a_plan_and_the_next_run_is_given_it(loop: Loop) -> None:
    number = loop.new_issue(": investigate the README", PLAN_SCRIPT)
    label(loop, number, "trimo:discover")

    assert finished_check(loop, number) == "neutral"
    check = loop.check_for(f"widgets.{number}-")
    assert check is not None and "> 1. Add a greeting" in check.output["summary"]
    plan = loop.wait(
        lambda: [b for b in loop.bot_comments(number) if "Findings and plan" in b], 30, "the plan"
    )[0]
    assert "> The README is short; ask @\u200boctocat." in plan
    assert "/trimo run implement the plan above" in plan
    assert not [b for b in loop.branches() if b.startswith(f"trimo/{number}-")]  # nothing pushed

    loop.comment(
        number,
        "/trimo run cat /trimo/context.md > ctx.md; ls > seen.txt; "
        "git add ctx.md seen.txt && git commit -qm 'Implement the plan'",
    )
    branch = branch_of(loop, number)
    context = loop.wait(lambda: loop.file_on(branch, "ctx.md"), 90, "the follow-up's commit")
    assert "# The plan" in context and "1. Add a greeting" in context
    assert loop.file_on(branch, "README.md") == "# widgets\n"  # not the discovery's edit
    assert "junk.txt" not in (loop.file_on(branch, "seen.txt") or "")


def idle(loop: Loop, number: int) -> bool:
    async def check() -> bool:
        redis = await create_pool(redis_settings(loop.redis_url))
        try:
            pipeline = await Pipelines(redis).for_thread(f"{OWNER}/{REPO}", number)
        finally:
            await redis.aclose()
        return pipeline is not None and pipeline.active_run is None and not pipeline.waiting()

    return asyncio.run(check())


def test_failing_checks_on_a_trimo_branch_start_a_run_that_says_why(loop: Loop) -> None:
    number = loop.new_issue("Checked work")
    loop.comment(number, "/trimo run echo a > a.txt && git add a.txt && git commit -qm A")
    assert finished_check(loop, number) == "success"
    branch = branch_of(loop, number)
    sha = loop.gh.fake.branch_sha(OWNER, REPO, branch)
    assert sha is not None
    # The check run ends a moment before the pipeline records the run as over; a suite that
    # completes while a run is going is left to that run's own pushes.
    loop.wait(lambda: idle(loop, number), 30, "the run to be recorded as over")
    suite_id = loop.state.next_id()
    ci = loop.state.add_check_run(OWNER, REPO, "tests", sha, suite_id=suite_id, app=CI_APP)
    ci.status, ci.conclusion = "completed", "failure"
    ci.output = {"title": "1 failed", "summary": "test_a: expected b"}
    payload = loop.payload("check_suite.completed.1.json")
    payload["check_suite"].update(
        id=suite_id, head_branch=branch, head_sha=sha, conclusion="failure", app=CI_APP
    )
    loop.deliver("check_suite", payload)

    why = loop.wait(
        lambda: [b for b in loop.bot_comments(number) if "Checks failed on" in b], 30, "why"
    )[0]
    assert "`tests: failure`" in why and "attempt 1 of 2" in why

    def issue_checks() -> list[Any] | None:
        found = [c for c in loop.check_runs() if f"widgets.{number}-" in (c.external_id or "")]
        return found if len(found) >= 2 else None

    runs = sorted(loop.wait(issue_checks, 30, "the automatic run's check run"), key=lambda c: c.id)
    assert len(runs) == 2 and runs[1].head_sha == sha  # the failing commit
    assert finished_check(loop, number) in ("success", "failure")  # it ran to the end
