"""A fleet that never drops a run: 4 runner processes, 2 App workers, 200 runs over 20
repositories, and one runner killed with SIGKILL while it holds runs.

Every run ends with its check run completed, with the conclusion its outcome gives. A run
the killed runner held is reported failed by the other runners' reaper, with a reason that
names the runner (README: "A run whose runner vanished is marked failed within a minute");
every other run succeeds. Nothing stays queued or in progress, and each pipeline's branch
holds the work of its successful runs, in order.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
import redis

from app.reporting.runview import CONCLUSIONS
from app.runs.pipelines import Pipeline, PipelineRun
from runner import contract
from runner.job import Outcome
from tests.fakegithub import RunningFakeGitHub
from tests.loop_harness import Loop
from tests.redis_servers import RedisProcess
from tests.scale_out import Facts, Fleet, Plan, workdir_of

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]

PLAN = Plan()  # 20 repositories x 2 issues x 5 runs, 4 runners, 2 App workers
VICTIM = 0
"""Index of the machine killed (labels default and gpu: each also on another machine)."""
KILL_AFTER = PLAN.runs // 4
"""Runs ended before the kill, so that it comes mid-way, with work queued behind it."""
STALL_SECONDS = 180.0
"""The waits fail when no run ended and no check run completed for this long: on a busy
2-core machine a run takes seconds, the reaper finds a killed runner's runs within 30 s."""
MOST_SECONDS = 1800.0
POLL_SECONDS = 0.5
TAG = re.compile(r"echo (\d+) >>")


@pytest.fixture
def fleet(tmp_path: Path, corpora: Path, test_image: str) -> Iterator[Fleet]:
    server = RedisProcess(tmp_path / "redis").start()
    try:
        with RunningFakeGitHub() as gh:
            started = Fleet(Loop(gh, server.url, workdir_of(tmp_path), corpora), PLAN)
            try:
                yield started.start()
            finally:
                started.stop()
    finally:
        server.stop()


def test_200_runs_on_4_runners_survive_a_runner_killed_mid_way(fleet: Fleet) -> None:
    victim = fleet.machines[VICTIM].id
    client = redis.Redis.from_url(fleet.loop.redis_url)
    try:
        fleet.submit()
        wait_progressing(
            fleet,
            lambda: ended_runs(fleet) >= KILL_AFTER and bool(holds_runs(client, victim)),
            f"{KILL_AFTER} runs to end, and {victim} to hold runs",
        )
        fleet.kill(victim)
        held = holds_runs(client, victim)  # before the reaper: what the kill cut short
        wait_progressing(
            fleet,
            lambda: (
                fleet.facts_when_all_ended(PLAN.runs) is not None and all_checks_completed(fleet)
            ),
            "every run to end and its check run to complete",
        )
        facts = fleet.facts()
        active = cast(dict[bytes, bytes], client.hgetall(contract.ACTIVE_RUNS))
    finally:
        client.close()
    runs = [(p, run) for p in facts.pipelines for run in p.runs]
    assert len(runs) == PLAN.runs, "a comment led to no run"
    assert not active, f"runs still marked active: {active}"
    assert held, f"{victim} held no run when it was killed"
    lost = [run for _p, run in runs if run.outcome is not Outcome.SUCCESS]
    assert lost, "no run was reported lost"
    assert {run.run_id for run in lost} <= set(held), "a run failed that the kill did not cut"
    for run in lost:
        assert_lost(run, victim, facts)
    for pipeline, run in runs:
        assert_reported(fleet, pipeline, run)
    assert max(facts.starts.values()) == 1, "a run started twice"
    for pipeline in facts.pipelines:
        assert pipeline.active_run is None, f"{pipeline.id} still has a run going"
        assert_pushed(fleet, pipeline)


def wait_progressing(fleet: Fleet, done: Callable[[], bool], what: str) -> None:
    """Wait for `done` while runs keep ending or check runs completing; on a stall, say
    which runs and check runs are not over."""
    began = last_moved = time.monotonic()
    seen = (-1, -1)
    while not done():
        now = time.monotonic()
        moved = (ended_runs(fleet), completed_checks(fleet))
        if moved != seen:
            seen, last_moved = moved, now
        if now - last_moved > STALL_SECONDS or now - began > MOST_SECONDS:
            raise AssertionError(f"waiting for {what}: stalled at {seen} (runs ended, check runs "
                                 f"completed); not over: {not_over(fleet)}")  # fmt: skip
        time.sleep(POLL_SECONDS)


def ended_runs(fleet: Fleet) -> int:
    return sum(run.status == "finished" for p in fleet.pipelines() for run in p.runs)


def completed_checks(fleet: Fleet) -> int:
    return sum(c.status == "completed" for c in fleet.loop.check_runs())


def not_over(fleet: Fleet) -> list[str]:
    runs = [
        f"run {run.run_id} {run.status} on {run.runner} (check run {run.check_run_id})"
        for p in fleet.pipelines()
        for run in p.runs
        if run.status != "finished"
    ]
    checks = [
        f"check run {c.id} of {c.external_id} {c.status}"
        for c in fleet.loop.check_runs()
        if c.status != "completed"
    ]
    return (runs + checks)[:20]


def holds_runs(client: redis.Redis, runner_id: str) -> list[str]:
    """The runs `runner_id` has taken (running, or waiting there for a slot)."""
    active = cast(dict[bytes, bytes], client.hgetall(contract.ACTIVE_RUNS))
    return [
        run_id.decode() for run_id, raw in active.items() if json.loads(raw)["runner"] == runner_id
    ]


def all_checks_completed(fleet: Fleet) -> bool:
    checks = fleet.loop.check_runs()
    return len(checks) == PLAN.runs and all(c.status == "completed" for c in checks)


def assert_lost(run: PipelineRun, victim: str, facts: Facts) -> None:
    """A run that did not succeed was on the killed runner and is reported lost, by name."""
    assert run.outcome is Outcome.ERROR, (run.run_id, run.outcome, run.reason)
    assert f"runner {victim} {contract.RUNNER_LOST}" in run.reason, (run.run_id, run.reason)
    assert facts.runner_of.get(run.run_id, victim) == victim, run.run_id


def assert_reported(fleet: Fleet, pipeline: Pipeline, run: PipelineRun) -> None:
    """The run's check run is completed with the conclusion of its outcome, and a failed
    one says why."""
    assert run.status == "finished" and run.outcome is not None, (pipeline.id, run.run_id)
    assert run.check_run_id is not None, f"{run.run_id} has no check run"
    check = fleet.loop.state.check_runs[run.check_run_id]
    assert check.status == "completed", (run.run_id, check.status)
    assert check.conclusion == CONCLUSIONS[run.outcome], (run.run_id, check.conclusion)
    if run.outcome is not Outcome.SUCCESS:
        assert contract.RUNNER_LOST in json.dumps(check.output), check.output


def assert_pushed(fleet: Fleet, pipeline: Pipeline) -> None:
    """The branch holds each successful run's line, in the order of the runs. A lost run's
    line is there at most once: it may have pushed before its runner died."""
    on_branch = fleet.order_on_branch(pipeline)
    tags = {run.run_id: tag_of(run) for run in pipeline.runs}
    lost = {tags[run.run_id] for run in pipeline.runs if run.outcome is not Outcome.SUCCESS}
    succeeded = [tags[run.run_id] for run in pipeline.runs if run.outcome is Outcome.SUCCESS]
    assert [tag for tag in on_branch if tag not in lost] == succeeded, (pipeline.id, on_branch)
    assert all(on_branch.count(tag) <= 1 for tag in lost), (pipeline.id, on_branch)


def tag_of(run: PipelineRun) -> str:
    found = TAG.search(run.prompt)
    assert found is not None, run.prompt
    return found.group(1)
