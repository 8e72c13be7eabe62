"""Token at pickup: a run that waited long for a runner gets a fresh token from the App.

The runner's side (`ask_for_token`) and the App's token desk talk through a real Redis;
GitHub is the stand-in (fixtures of test_app_worker).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
from datetime import timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis

import runner.daemon as daemon_module
from app.runs.tokens import TokenDesk
from runner import contract, logs, registry
from runner.daemon import TOKEN_FRESH_SECONDS, RunnerDaemon, ask_for_token
from runner.job import Outcome, RunFinished
from runner.settings import RunnerSettings
from tests import test_app_worker as base
from tests.test_app_worker import OWNER, REPO, SCRIPT, TITLE, World, run_id_for

fake = base.fake
world = base.world


async def queued_run(world: World) -> str:
    issue = world.state.add_issue(OWNER, REPO, TITLE, "details")
    delivery = await world.send("issue_comment", world.issue_comment(SCRIPT, number=issue.number))
    run_id = run_id_for(issue.number, delivery)
    assert await world.job(run_id) is not None
    return run_id


async def ask_while_desk_answers(world: World, redis_url: str, run_id: str) -> str | None:
    desk = TokenDesk(world.ctx[base.SERVICES_KEY], consumer="test")
    await desk.ensure_group()
    runner_redis = aioredis.Redis.from_url(redis_url)
    try:
        asking = asyncio.create_task(ask_for_token(runner_redis, run_id, wait=5))
        answered = 0
        while not asking.done():
            answered += await desk.step(block_ms=100)
        assert answered == 1
        return await asking
    finally:
        await runner_redis.aclose()


async def test_a_queued_run_gets_a_fresh_token(world: World, redis_url: str) -> None:
    run_id = await queued_run(world)
    request = await world.job(run_id)
    assert request is not None and request.token is not None
    token = await ask_while_desk_answers(world, redis_url, run_id)
    assert token is not None and token != request.token.get_secret_value()
    minted = world.state.valid_token(token)
    assert minted is not None and minted.repositories == [REPO]
    assert minted.permissions == {"contents": "write", "metadata": "read"}
    assert await world.pool.exists(contract.run_token(run_id)) == 0  # taken, not left behind


async def test_a_finished_or_unknown_run_gets_no_token(world: World, redis_url: str) -> None:
    run_id = await queued_run(world)
    await world.pipelines.finish(RunFinished(run_id=run_id, outcome=Outcome.CANCELLED))
    assert await ask_while_desk_answers(world, redis_url, run_id) is None
    assert await ask_while_desk_answers(world, redis_url, "no-such-run") is None


async def test_no_answer_means_no_token(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    try:
        assert await ask_for_token(redis, "r-1", wait=1) is None
        assert await redis.xlen(contract.TOKEN_REQUESTS) == 1
    finally:
        await redis.aclose()


async def test_the_runner_renews_an_old_token_and_ends_the_run_without_one(
    world: World, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = await queued_run(world)
    request = await world.job(run_id)
    assert request is not None
    settings = RunnerSettings(
        redis_url=redis_url, cache_dir=tmp_path, runner_id=f"t-{socket.gethostname()}"
    )
    daemon = RunnerDaemon(settings)
    long_ago = registry.now() - timedelta(seconds=TOKEN_FRESH_SECONDS + 60)
    # Nobody answers: the run ends as an error that says why, and never runs.
    monkeypatch.setattr(daemon_module, "TOKEN_WAIT_SECONDS", 1)
    try:
        outcome = await daemon.run_job(request.dump_for_queue(), queued_at=long_ago)
    finally:
        daemon.publisher.close()
        await daemon.redis.aclose()
    assert outcome == Outcome.ERROR.value
    events = await world.pool.xrange(contract.ALL_RUN_EVENTS)
    assert any(b"fresh token" in fields[b"event"] for _, fields in events)


async def test_the_desk_logs_the_run_its_pipeline_and_repository_but_not_the_token(
    world: World, redis_url: str
) -> None:
    run_id = await queued_run(world)
    out = io.StringIO()
    handler = logs.make_handler("json", out)
    desk_log = logging.getLogger("trimo.tokens")
    desk_log.addHandler(handler)
    level = desk_log.level
    desk_log.setLevel(logging.INFO)
    try:
        token = await ask_while_desk_answers(world, redis_url, run_id)
    finally:
        desk_log.removeHandler(handler)
        desk_log.setLevel(level)
    [line] = [json.loads(text) for text in out.getvalue().splitlines()]
    assert line["message"] == f"run {run_id}: fresh token given"
    assert (line["run_id"], line["repo"]) == (run_id, f"{OWNER}/{REPO}")
    found = await world.pipelines.get_run(run_id)
    assert found is not None and line["pipeline"] == found[0].id
    assert token is not None and token not in out.getvalue()
