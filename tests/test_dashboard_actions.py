"""Actions from the dashboard, handled by the App worker as comment commands are: the
runs service runs them, the thread records them, and the repository's config decides."""

from __future__ import annotations

import uuid
from pathlib import Path

from app.dashboard.data import started_pipeline
from app.ops.worker import SERVICES_KEY, handle_event
from app.runs.pipelines import Pipeline
from runner.job import Pushed
from tests import test_reporter
from tests.test_dashboard_diffs import git
from tests.test_reporter import FULL, OWNER, REPO, WRITER, World, finished

fake = test_reporter.fake
world = test_reporter.world


async def ask(world: World, action: str, login: str, **fields: str) -> str:
    """What the dashboard queues for `login`, handled by the App worker."""
    pipeline = await world.services.pipelines.get(fields["pipeline"])
    assert pipeline is not None
    payload = {
        "action": action,
        "repository": {
            "name": REPO, "full_name": FULL, "owner": {"login": OWNER},
            "clone_url": pipeline.clone_url, "default_branch": "main",
        },
        "installation": {"id": world.installation_id},
        "sender": {"login": login, "type": "User"},
        "ask": fields,
    }  # fmt: skip
    ctx = {"redis": world.pool, "job_try": 1, SERVICES_KEY: world.services}
    return await handle_event(ctx, "trimo_dashboard", f"dash-{uuid.uuid4().hex}", payload)


async def test_a_follow_up_runs_on_the_same_branch_and_is_recorded_on_the_issue(
    world: World,
) -> None:
    number, first = await world.accept()
    await world.started(first)
    await world.emit(first, finished(first))
    await world.settle()
    pipeline_id = (await world.services.pipelines.get_run(first))[0].id  # type: ignore[index]
    result = await ask(world, "run", WRITER, pipeline=pipeline_id, prompt="Now add tests")
    assert result == "handled trimo_dashboard.run"
    pipeline = await world.services.pipelines.get(pipeline_id)
    assert pipeline is not None and len(pipeline.runs) == 2
    second = pipeline.runs[1]
    assert second.prompt == "Now add tests" and second.requested_by == WRITER
    assert second.status == "queued" and pipeline.branch == await world.branch(number)
    notes = world.bot_comments(number)
    assert any(f"requested from the dashboard by @{WRITER}" in body for body in notes)
    assert any("Now add tests" in body for body in notes)


async def test_stop_from_the_dashboard_cancels_a_run_not_started(world: World) -> None:
    number, run_id = await world.accept()
    pipeline_id = (await world.services.pipelines.get_run(run_id))[0].id  # type: ignore[index]
    await ask(world, "stop", WRITER, pipeline=pipeline_id, run_id=run_id)
    run = await world.run(run_id)
    assert run.status == "finished" and run.outcome is not None
    assert run.outcome.value == "cancelled"
    assert any("Stop of run" in body for body in world.bot_comments(number))


async def test_someone_who_may_only_read_is_refused_on_the_thread(world: World) -> None:
    number, run_id = await world.accept()
    world.state.set_role(OWNER, REPO, "rita", "read")
    pipeline_id = (await world.services.pipelines.get_run(run_id))[0].id  # type: ignore[index]
    await ask(world, "retry", "rita", pipeline=pipeline_id, run_id=run_id)
    pipeline = await world.services.pipelines.get(pipeline_id)
    assert pipeline is not None and len(pipeline.runs) == 1
    assert not any("requested from the dashboard" in body for body in world.bot_comments(number))
    assert any("@rita" in body for body in world.bot_comments(number))


async def test_a_new_pipeline_gets_a_branch_its_run_and_a_pull_request_with_commits(
    world: World, tmp_path: Path
) -> None:
    delivery = f"dash-{uuid.uuid4().hex}"
    result = await ask_new(world, WRITER, "Add a health endpoint\n\nReturn 200.", delivery)
    assert result == "handled trimo_dashboard.new"
    found = [p for p in await all_pipelines(world) if p.kind == "branch"]
    assert len(found) == 1
    pipeline = found[0]
    assert await started_pipeline(world.pool, delivery) == pipeline.id  # where Start lands
    assert pipeline.branch == "trimo/add-a-health-endpoint" and pipeline.number == 0
    assert pipeline.base_branch == "main" and pipeline.title == "Add a health endpoint"
    run = pipeline.runs[0]
    assert run.status == "queued" and run.requested_by == WRITER and run.thread == 0
    assert world.check_of(run.run_id) is not None  # on the base branch's head
    again = await ask_new(world, WRITER, prompt="Add a health endpoint")
    assert again == "handled trimo_dashboard.new"
    branches = sorted(p.branch for p in await all_pipelines(world) if p.kind == "branch")
    assert branches == ["trimo/add-a-health-endpoint", "trimo/add-a-health-endpoint-2"]
    await world.started(run.run_id)
    push_commit(world, tmp_path, pipeline.branch)  # as the runner pushes the agent's commit
    head = world.gh.fake.branch_sha(OWNER, REPO, pipeline.branch)
    assert head is not None
    await world.emit(run.run_id, Pushed(branch=pipeline.branch, sha=head, commits=1))
    await world.emit(run.run_id, finished(run.run_id, commits=1))
    await world.settle()
    pulls = [p for p in world.state.pulls.values() if p.head_ref == pipeline.branch]
    assert len(pulls) == 1 and pulls[0].title == "Add a health endpoint"
    assert "from the dashboard" in pulls[0].body and "Closes" not in pulls[0].body


async def test_a_new_pipeline_someone_may_not_start_shows_why_on_the_board(world: World) -> None:
    world.state.set_role(OWNER, REPO, "rita", "read")
    await ask_new(world, "rita", prompt="Delete everything")
    found = [p for p in await all_pipelines(world) if p.kind == "branch"]
    assert len(found) == 1  # in Needs you, with the reason
    run = found[0].runs[0]
    assert run.status == "finished" and run.outcome is not None
    assert run.outcome.value == "error" and "write" in run.reason and "@rita" in run.reason
    assert not any(p.head_ref == found[0].branch for p in world.state.pulls.values())


async def all_pipelines(world: World) -> list[Pipeline]:
    store = world.services.pipelines
    return [p for pid in await store.ids() if (p := await store.get(pid)) is not None]


async def ask_new(world: World, login: str, prompt: str, delivery: str = "") -> str:
    payload = {
        "action": "new",
        "repository": {"name": REPO, "full_name": FULL, "owner": {"login": OWNER}, "clone_url": ""},
        "installation": {"id": world.installation_id},
        "sender": {"login": login, "type": "User"},
        "ask": {"prompt": prompt, "agent": "", "base_branch": ""},
    }
    ctx = {"redis": world.pool, "job_try": 1, SERVICES_KEY: world.services}
    delivery = delivery or f"dash-{uuid.uuid4().hex}"
    return await handle_event(ctx, "trimo_dashboard", delivery, payload)


def push_commit(world: World, tmp: Path, branch: str) -> None:
    work = tmp / "work"
    git(tmp, "clone", "-q", str(world.gh.fake.bare_path(OWNER, REPO)), str(work))
    git(work, "checkout", "-q", "-b", branch)
    (work / "health.py").write_text("def health():\n    return 200\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "Add a health endpoint")
    git(work, "push", "-q", "origin", branch)


async def test_a_preview_from_the_dashboard_is_handled_like_the_comment(world: World) -> None:
    number, run_id = await world.accept()
    pipeline_id = (await world.services.pipelines.get_run(run_id))[0].id  # type: ignore[index]

    assert await ask(world, "preview", WRITER, pipeline=pipeline_id) == (
        "handled trimo_dashboard.preview"
    )
    await ask(world, "preview_stop", WRITER, pipeline=pipeline_id)

    notes = world.bot_comments(number)
    assert any(f"requested from the dashboard by @{WRITER}" in body for body in notes)
    assert any("this repository has no previews yet" in body for body in notes)
    assert any("no preview is running here" in body for body in notes)


async def test_a_line_comment_runs_with_its_file_line_and_hunk(world: World) -> None:
    _, first = await world.accept()
    await world.started(first)
    await world.emit(first, finished(first))
    await world.settle()
    pipeline_id = (await world.services.pipelines.get_run(first))[0].id  # type: ignore[index]
    hunk = "@@ -1,2 +1,3 @@\n a\n+b"
    result = await ask(world, "run", WRITER, pipeline=pipeline_id, prompt="Why b?",
                       path="src/app.py", line="2", diff_hunk=hunk)  # fmt: skip
    assert result == "handled trimo_dashboard.run"
    pipeline = await world.services.pipelines.get(pipeline_id)
    assert pipeline is not None and len(pipeline.runs) == 2
    review = pipeline.runs[1].review
    assert review is not None and (review.path, review.line, review.diff_hunk) == (
        "src/app.py", 2, hunk,
    )  # fmt: skip
    assert pipeline.runs[1].prompt == "Why b?"
