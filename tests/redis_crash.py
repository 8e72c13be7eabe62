"""Redis killed mid-run, as a scenario: shared by tests/test_redis_restart.py and
bench/redis_crash.py.

`set_up_mid_run` brings the loop to the moment worth a crash (a run in flight that has
said it started, the next run of its pipeline waiting, a run queued for a label no runner
has, a dead letter), `crash` kills the server with `kill -9` and starts it again from its
append-only file, and `losses` says what of a `snapshot` did not survive.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, Final, cast

import redis
from arq import create_pool

from app.reporting import failures
from app.reporting.reporter import RUN_LOCK_PREFIX
from app.runs.pipelines import PIPELINE_IDS, PIPELINE_PREFIX
from runner import contract, redisurl
from tests.loop_harness import Loop
from tests.redis_servers import RedisProcess

SLOW_RUN: Final = (
    "sleep 10 && echo done > done.txt && git add done.txt && git commit -qm 'Done after Redis'"
)
NEXT_RUN: Final = "echo next > next.txt && git add -A && git commit -qm Next"
OUTAGE_SECONDS: Final = 3.0
"""Long enough for the runner's polls and the App's reads to hit a closed port."""
AOF_ALWAYS: Final = ("--appendonly", "yes", "--appendfsync", "always")
Entries = list[tuple[bytes, dict[bytes, bytes]]]


@dataclass
class MidRun:
    """The loop at the moment of the crash."""

    number: int
    run_id: str
    before: dict[str, Any]
    reporting: bool
    """Whether the App held the run's report lock (it was reporting the run)."""
    published_late: bool
    """Whether the run had published nothing yet once the rest was in place: the moment
    the test used to take its snapshot (and fail with a KeyError)."""


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


def losses(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What `before` held that `after` lacks; empty when nothing was lost."""
    lost: list[str] = []
    if after["queued"] != before["queued"]:
        lost.append(f"queued jobs: {before['queued']} became {after['queued']}")
    if after["dead"] != before["dead"]:
        lost.append(f"dead letters: {len(before['dead'])} became {len(after['dead'])}")
    for key, entries in before["events"].items():
        kept = after["events"].get(key, [])
        if kept[: len(entries)] != entries:
            lost.append(f"{key}: {len(entries)} events, {len(kept)} after")
    if after["all_events"][: len(before["all_events"])] != before["all_events"]:
        lost.append(
            f"{contract.ALL_RUN_EVENTS}: {len(before['all_events'])} events, "
            f"{len(after['all_events'])} after"
        )
    for pid, pipeline in before["pipelines"].items():
        runs = run_ids(after["pipelines"].get(pid, {}))
        if runs[: len(run_ids(pipeline))] != run_ids(pipeline):
            lost.append(f"pipeline {pid}: runs {run_ids(pipeline)} became {runs}")
    return lost


def run_ids(pipeline: dict[str, Any]) -> list[str]:
    return [run["run_id"] for run in pipeline.get("runs", [])]


def event_types(client: redis.Redis, run_id: str) -> list[str]:
    """The types of the events run `run_id` has published so far."""
    entries = cast(Entries, client.xrange(contract.run_events(run_id)))
    return [json.loads(fields[b"event"])["type"] for _id, fields in entries]


def completed_checks(loop: Loop, number: int) -> list[str | None]:
    hint = f"widgets.{number}-"
    return [
        c.conclusion
        for c in sorted(loop.check_runs(), key=lambda c: c.id)
        if hint in (c.external_id or "") and c.status == "completed"
    ]


async def park_one(url: str, delivery_id: str) -> None:
    pool = await create_pool(redisurl.redis_settings(url))
    try:
        await failures.park(
            pool,
            event="issue_comment",
            delivery_id=delivery_id,
            payload={"action": "created"},
            error="RuntimeError: parked before Redis died",
            tries=4,
        )
    finally:
        await pool.aclose()


def set_up_mid_run(loop: Loop, url: str, round_: int = 1) -> MidRun:
    """A run in flight, the next run of its pipeline waiting behind it, a run queued for a
    label no runner has and a dead letter; then the snapshot the crash must not dent."""
    client = redis.Redis.from_url(url)
    try:
        number = loop.new_issue("Outlive Redis", "Keep going while Redis restarts.")
        loop.comment(number, f"/trimo run {SLOW_RUN}")
        # This issue's run: the last round's may still be active for a moment after its
        # check run completed (the runner tidies up after its last word).
        mine = f"widgets.{number}-"
        running = loop.wait(
            lambda: [
                key.decode()
                for key in cast(dict[bytes, bytes], client.hgetall(contract.ACTIVE_RUNS))
                if mine in key.decode()
            ],
            60,
            "the run to start on the runner",
        )
        (run_id,) = running
        queued_gpu = client.zcard(contract.run_queue("gpu"))
        loop.comment(number, f"/trimo run {NEXT_RUN}")
        other = loop.new_issue("Needs a GPU", "")
        loop.comment(other, "/trimo run --on gpu echo gpu")
        loop.wait(
            lambda: client.zcard(contract.run_queue("gpu")) == queued_gpu + 1,
            30,
            "the gpu run to be queued",
        )
        loop.wait(lambda: _waiting(url, run_id), 30, "the follow-up to wait in its pipeline")
        published_late = not event_types(client, run_id)
        # Taken is not started: the runner readies the workspace and sandbox first. The run
        # is in flight once it has said so, and still going (no last word) when Redis dies.
        loop.wait(lambda: "started" in event_types(client, run_id), 60, "the run to say it started")
        asyncio.run(park_one(url, f"crash-dead-letter-{round_}"))
        before = snapshot(url)
        reporting = bool(client.exists(RUN_LOCK_PREFIX + run_id))
        assert "finished" not in event_types(client, run_id), "the run ended before the crash"
        return MidRun(number, run_id, before, reporting, published_late)
    finally:
        client.close()


def _pipeline_of(url: str, run_id: str) -> dict[str, Any]:
    pipelines = snapshot(url)["pipelines"].values()
    return next((p for p in pipelines if run_id in run_ids(p)), {})


def _waiting(url: str, run_id: str) -> list[str]:
    """The runs after `run_id` in its pipeline."""
    runs = run_ids(_pipeline_of(url, run_id))
    return runs[runs.index(run_id) + 1 :] if run_id in runs else []


def crash(server: RedisProcess) -> None:
    """`kill -9`, a few seconds with the port closed, then the same server from its AOF."""
    server.kill9()
    time.sleep(OUTAGE_SECONDS)  # the outage itself, not a wait for something
    assert not server.answers()
    server.start()
