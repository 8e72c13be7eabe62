"""A run is a runner's from the moment it takes it: a runner that dies before the agent
starts (waiting for a fresh token, say) leaves a run the other runners report, never one
queued for a day."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from arq.constants import job_key_prefix
from arq.jobs import deserialize_job_raw, serialize_job

from runner import contract
from runner.job import Outcome
from tests.engine_helpers import make_request
from tests.runner_helpers import RunnerProcess, enqueue, finished_of, wait_for
from tests.test_runner_daemon import origin, runners, start  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.docker, pytest.mark.redis]

TOKEN = "ghs_TestTokenOfARunQueuedLongAgo0123456"


def queued_hours_ago(redis_url: str, run_id: str, hours: float) -> None:
    """Make the queued job look as if it had waited `hours` (its token is then renewed)."""
    client = redis.Redis.from_url(redis_url)
    key = job_key_prefix + run_id
    raw = client.get(key)
    assert raw is not None
    function, args, kwargs, job_try, enqueued_ms = deserialize_job_raw(raw)
    earlier = enqueued_ms - int(hours * 3600 * 1000)
    client.set(key, serialize_job(function, args, kwargs, job_try, earlier), keepttl=True)


def test_a_runner_killed_while_it_waits_for_a_token_leaves_a_reported_run(
    origin: Path,  # noqa: F811
    tmp_path: Path,
    redis_url: str,
    runners: list[RunnerProcess],  # noqa: F811
) -> None:
    request = make_request(origin, "echo never", token=TOKEN)
    enqueue(redis_url, request)
    queued_hours_ago(redis_url, request.run_id, 2)
    doomed = start(runners, redis_url, tmp_path, "runner-taker", "default")
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 60
    while not client.xrange(contract.TOKEN_REQUESTS):  # nobody answers: it waits up to 30 s
        assert time.monotonic() < deadline, f"no token was asked for: {doomed.output()}"
        time.sleep(0.1)
    doomed.kill9()
    runners.remove(doomed)
    start(runners, redis_url, tmp_path, "runner-reaper", "other")

    finished = finished_of(wait_for(redis_url, request.run_id, "finished", timeout=90))

    assert finished.outcome is Outcome.ERROR
    assert f"{doomed.runner_id} stopped answering" in finished.reason
