"""Attempts asked from the dashboard, handled by the App worker: a set from the New
pipeline and follow-up forms, and what Trimo answers (a refusal, a pick) shown on the
pipeline's page as well as on the thread, since the person who asked looks there."""

from __future__ import annotations

import uuid

from app.dashboard.data import answers_of, started_pipeline
from app.ops.worker import SERVICES_KEY, handle_event
from app.runs.pipelines import Pipeline
from runner.job import Outcome
from tests import test_reporter
from tests.test_dashboard_actions import all_pipelines, ask
from tests.test_reporter import FULL, OWNER, REPO, WRITER, World, finished

fake = test_reporter.fake
world = test_reporter.world


async def ask_new(world: World, delivery: str, **fields: str) -> str:
    payload = {
        "action": "new",
        "repository": {"name": REPO, "full_name": FULL, "owner": {"login": OWNER}, "clone_url": ""},
        "installation": {"id": world.installation_id},
        "sender": {"login": WRITER, "type": "User"},
        "ask": {"agent": "", "base_branch": "", **fields},
    }
    ctx = {"redis": world.pool, "job_try": 1, SERVICES_KEY: world.services}
    return await handle_event(ctx, "trimo_dashboard", delivery, payload)


async def branch_pipelines(world: World) -> list[Pipeline]:
    return [p for p in await all_pipelines(world) if p.kind == "branch"]


async def test_a_new_pipeline_asked_with_attempts_starts_a_set(world: World) -> None:
    delivery = f"dash-{uuid.uuid4().hex}"
    await ask_new(world, delivery, prompt="Try it twice", attempts="2")
    (pipeline,) = await branch_pipelines(world)
    assert await started_pipeline(world.pool, delivery) == pipeline.id
    (attempt_set,) = pipeline.attempt_sets
    runs = pipeline.attempts_of(attempt_set)
    assert [run.attempt for run in runs] == [1, 2]
    assert [run.branch for run in runs] == [f"{pipeline.branch}-attempt-{n}" for n in (1, 2)]
    assert attempt_set.start_sha == world.gh.fake.branch_sha(OWNER, REPO, "main")


async def test_more_attempts_than_the_server_allows_show_why_on_the_board(world: World) -> None:
    delivery = f"dash-{uuid.uuid4().hex}"
    result = await ask_new(world, delivery, prompt="Try it many times", attempts="5")
    assert result == "handled trimo_dashboard.new"
    (pipeline,) = await branch_pipelines(world)  # made, so Start lands on it
    assert await started_pipeline(world.pool, delivery) == pipeline.id
    (run,) = pipeline.runs
    assert run.status == "finished" and run.outcome is not None and run.outcome.value == "error"
    assert "at most 4 attempts" in run.reason and "TRIMO_POLICY_MAX_ATTEMPTS" in run.reason
    assert pipeline.attempt_sets == [] and world.check_of(run.run_id) is None


async def test_a_refused_follow_up_on_an_issue_is_answered_on_the_page_too(world: World) -> None:
    number, first = await world.accept()
    await world.started(first)
    await world.emit(first, finished(first))
    await world.settle()
    pipeline_id = (await world.services.pipelines.get_run(first))[0].id  # type: ignore[index]
    await ask(world, "run", WRITER, pipeline=pipeline_id, prompt="Again", agents="script,claude",
              attempts="3")  # fmt: skip
    pipeline = await world.services.pipelines.get(pipeline_id)
    assert pipeline is not None and len(pipeline.runs) == 1  # nothing started
    assert any("you asked for 6" in body for body in world.bot_comments(number))
    (answer,) = await answers_of(world.pool, pipeline_id)
    assert answer.login == WRITER and "at most 4 attempts" in answer.text
    assert "you asked for 6" in answer.text and "`" not in answer.text


async def test_an_accepted_follow_up_leaves_no_answer(world: World) -> None:
    _, first = await world.accept()
    await world.started(first)
    await world.emit(first, finished(first))
    await world.settle()
    pipeline_id = (await world.services.pipelines.get_run(first))[0].id  # type: ignore[index]
    await ask(world, "run", WRITER, pipeline=pipeline_id, prompt="Again", attempts="2")
    pipeline = await world.services.pipelines.get(pipeline_id)
    assert pipeline is not None and len(pipeline.attempt_sets) == 1
    assert await answers_of(world.pool, pipeline_id) == []


async def test_a_pick_from_the_dashboard_is_answered_on_the_page(world: World) -> None:
    number, run_id = await world.accept()
    pipeline_id = (await world.services.pipelines.get_run(run_id))[0].id  # type: ignore[index]
    await ask(world, "pick", WRITER, pipeline=pipeline_id, attempt="3")
    assert any("no attempt #3" in body for body in world.bot_comments(number))
    assert any("requested from the dashboard" in body for body in world.bot_comments(number))
    (answer,) = await answers_of(world.pool, pipeline_id)
    assert "There is no attempt #3 on this pipeline." in answer.text


async def test_someone_who_may_only_read_cannot_pick_from_a_forged_request(world: World) -> None:
    number, run_id = await world.accept()
    world.state.set_role(OWNER, REPO, "rita", "read")
    pipeline_id = (await world.services.pipelines.get_run(run_id))[0].id  # type: ignore[index]
    await ask(world, "pick", "rita", pipeline=pipeline_id, attempt="1")
    assert not any("requested from the dashboard" in b for b in world.bot_comments(number))
    assert not any("attempt #1" in b for b in world.bot_comments(number))
    assert await answers_of(world.pool, pipeline_id) == []


async def test_stop_from_the_page_stops_every_attempt_of_the_set(world: World) -> None:
    delivery = f"dash-{uuid.uuid4().hex}"
    await ask_new(world, delivery, prompt="Try it twice", attempts="2")
    (pipeline,) = await branch_pipelines(world)
    first, _ = pipeline.attempts_of(pipeline.attempt_sets[0])
    await ask(world, "stop", WRITER, pipeline=pipeline.id, run_id=first.run_id)
    after = await world.services.pipelines.get(pipeline.id)
    assert after is not None
    assert [(r.status, r.outcome) for r in after.attempts_of(after.attempt_sets[0])] == [
        ("finished", Outcome.CANCELLED), ("finished", Outcome.CANCELLED),
    ]  # fmt: skip
    assert after.active_run is None
