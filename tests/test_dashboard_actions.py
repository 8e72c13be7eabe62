"""Actions from the dashboard, handled by the App worker as comment commands are: the
runs service runs them, the thread records them, and the repository's config decides."""

from __future__ import annotations

import uuid

from app.worker import SERVICES_KEY, handle_event
from tests import test_reporter
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
