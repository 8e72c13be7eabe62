"""Redis dies mid-run (`kill -9`) and comes back from its append-only file: nothing is lost.

A redis-server of this test's own runs with `--appendonly yes --appendfsync always`, the
whole loop (`trimo serve` and `trimo runner` as processes, the GitHub stand-in, Docker,
git) runs against it. While a run is going, with a second run of its pipeline waiting, a
run queued for a label no runner has and an event in the dead-letter stream, the server is
killed and started again on the same port and directory. The App and the runner reconnect
by themselves; every queued job, run event, pipeline and dead letter is still there; and
the run in flight and the one after it end, with their check runs completed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from arq import create_pool

from app.reporting import failures
from app.runs.pipelines import PIPELINE_IDS, PIPELINE_PREFIX
from runner import contract, redisurl
from tests.fakegithub import RunningFakeGitHub
from tests.loop_harness import Loop
from tests.redis_servers import RedisProcess

pytestmark = [pytest.mark.docker, pytest.mark.redis]

SLOW_RUN = (
    "sleep 8 && echo done > done.txt && git add done.txt && git commit -qm 'Done after Redis'"
)
OUTAGE_SECONDS = 3.0
"""Long enough for the runner's polls and the App's reads to hit a closed port."""
Entries = list[tuple[bytes, dict[bytes, bytes]]]


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(
        tmp_path / "redis", ["--appendonly", "yes", "--appendfsync", "always"]
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def loop(aof_redis: RedisProcess, tmp_path: Path, corpora: Path, test_image: str) -> Iterator[Loop]:
    with RunningFakeGitHub() as gh:
        harness = Loop(gh, aof_redis.url, tmp_path / "loop", corpora)
        harness.workdir.mkdir()
        harness.start()
        try:
            yield harness
        finally:
            harness.stop()


def snapshot(url: str) -> dict[str, Any]:
    """What must survive: queued jobs, run event streams, pipelines, dead letters."""
    client = redis.Redis.from_url(url)
    try:
        streams = sorted(key.decode() for key in client.scan_iter("trimo:run:*:events"))
        pipelines = {
            pid.decode(): json.loads(client.get(PIPELINE_PREFIX + pid.decode()) or b"{}")
            for pid in cast(set[bytes], client.smembers(PIPELINE_IDS))
        }
        return {
            "queued": {
                key.decode(): [job.decode() for job in cast(list[bytes], client.zrange(key, 0, -1))]
                for key in client.scan_iter(contract.run_queue("*"))
                if client.type(key) == b"zset"
            },
            "events": {key: cast(Entries, client.xrange(key)) for key in streams},
            "all_events": cast(Entries, client.xrange(contract.ALL_RUN_EVENTS)),
            "pipelines": pipelines,
            "dead": cast(Entries, client.xrange(failures.FAILED_EVENTS)),
        }
    finally:
        client.close()


def run_ids(pipeline: dict[str, Any]) -> list[str]:
    return [run["run_id"] for run in pipeline.get("runs", [])]


def completed_checks(loop: Loop, number: int) -> list[str | None]:
    hint = f"widgets.{number}-"
    return [
        c.conclusion
        for c in sorted(loop.check_runs(), key=lambda c: c.id)
        if hint in (c.external_id or "") and c.status == "completed"
    ]


async def park_one(url: str) -> None:
    pool = await create_pool(redisurl.redis_settings(url))
    try:
        await failures.park(
            pool,
            event="issue_comment",
            delivery_id="restart-dead-letter",
            payload={"action": "created"},
            error="RuntimeError: parked before Redis died",
            tries=4,
        )
    finally:
        await pool.aclose()


def test_kill_9_of_redis_mid_run_loses_nothing(loop: Loop, aof_redis: RedisProcess) -> None:
    number = loop.new_issue("Outlive Redis", "Keep going while Redis restarts.")
    loop.comment(number, f"/trimo run {SLOW_RUN}")
    client = redis.Redis.from_url(aof_redis.url)
    running = loop.wait(
        lambda: cast(dict[bytes, bytes], client.hgetall(contract.ACTIVE_RUNS)),
        60,
        "the run to start on the runner",
    )
    (run_id,) = (key.decode() for key in running)
    loop.comment(number, "/trimo run echo next > next.txt && git add -A && git commit -qm Next")
    other = loop.new_issue("Needs a GPU", "")
    loop.comment(other, "/trimo run --on gpu echo gpu")
    loop.wait(lambda: client.zcard(contract.run_queue("gpu")) == 1, 30, "the gpu run to be queued")
    loop.wait(
        lambda: any(len(run_ids(p)) == 2 for p in snapshot(aof_redis.url)["pipelines"].values()),
        30,
        "the follow-up to wait in its pipeline",
    )
    asyncio.run(park_one(aof_redis.url))
    client.close()

    before = snapshot(aof_redis.url)
    assert before["events"][contract.run_events(run_id)], "the run has published no event yet"
    aof_redis.kill9()
    time.sleep(OUTAGE_SECONDS)
    assert not aof_redis.answers()
    aof_redis.start()
    after = snapshot(aof_redis.url)

    assert after["queued"] == before["queued"]
    assert after["dead"] == before["dead"]
    for key, entries in before["events"].items():
        assert after["events"][key][: len(entries)] == entries, key
    assert after["all_events"][: len(before["all_events"])] == before["all_events"]
    assert set(after["pipelines"]) == set(before["pipelines"])
    for pid, pipeline in before["pipelines"].items():
        assert run_ids(after["pipelines"][pid])[: len(run_ids(pipeline))] == run_ids(pipeline)

    # The run in flight ends, and so does the run that waited for it: both check runs done.
    loop.wait(lambda: len(completed_checks(loop, number)) == 2, 120, "both runs to complete")
    assert completed_checks(loop, number) == ["success", "success"]
    branch = next(b for b in loop.branches() if b.startswith(f"trimo/{number}-"))
    assert loop.file_on(branch, "done.txt") == "done\n"
    assert loop.file_on(branch, "next.txt") == "next\n"
    final = snapshot(aof_redis.url)
    assert final["queued"][contract.run_queue("gpu")] == before["queued"][contract.run_queue("gpu")]
    assert final["dead"] == before["dead"]
    assert loop.serve is not None and loop.serve.poll() is None
    assert loop.runner is not None and loop.runner.poll() is None
    assert loop.http.get(f"http://127.0.0.1:{loop.port}/healthz").status_code == 200
