"""Redis dies mid-run (`kill -9`) and comes back from its append-only file: nothing is lost.

A redis-server of this test's own runs with `--appendonly yes --appendfsync always`, the
whole loop (`trimo serve` and `trimo runner` as processes, the GitHub stand-in, Docker,
git) runs against it. While a run is going, with a second run of its pipeline waiting, a
run queued for a label no runner has and an event in the dead-letter stream, the server is
killed and started again on the same port and directory. The App and the runner reconnect
by themselves; every queued job, run event, pipeline and dead letter is still there; and
the run in flight and the one after it end, with their check runs completed.
bench/redis_crash.py repeats this N times.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runner import contract
from tests.fakegithub import RunningFakeGitHub
from tests.loop_harness import Loop
from tests.redis_crash import (
    AOF_ALWAYS,
    completed_checks,
    crash,
    losses,
    set_up_mid_run,
    snapshot,
)
from tests.redis_servers import RedisProcess

pytestmark = [pytest.mark.docker, pytest.mark.redis]


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path / "redis", AOF_ALWAYS).start()
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


def test_kill_9_of_redis_mid_run_loses_nothing(loop: Loop, aof_redis: RedisProcess) -> None:
    mid = set_up_mid_run(loop, aof_redis.url)
    crash(aof_redis)
    assert losses(mid.before, snapshot(aof_redis.url)) == []

    # The run in flight ends, and so does the run that waited for it: both check runs done.
    number = mid.number
    loop.wait(lambda: len(completed_checks(loop, number)) == 2, 120, "both runs to complete")
    assert completed_checks(loop, number) == ["success", "success"]
    branch = next(b for b in loop.branches() if b.startswith(f"trimo/{number}-"))
    assert loop.file_on(branch, "done.txt") == "done\n"
    assert loop.file_on(branch, "next.txt") == "next\n"
    final = snapshot(aof_redis.url)
    gpu = contract.run_queue("gpu")
    assert final["queued"][gpu] == mid.before["queued"][gpu]
    assert final["dead"] == mid.before["dead"]
    assert loop.serve is not None and loop.serve.poll() is None
    assert loop.runner is not None and loop.runner.poll() is None
    assert loop.http.get(f"http://127.0.0.1:{loop.port}/healthz").status_code == 200


def test_losses_names_what_a_crash_took() -> None:
    before = {
        "queued": {"q": ["job"]},
        "events": {"trimo:run:r:events": [(b"1-0", {b"event": b"{}"})]},
        "all_events": [(b"1-0", {b"event": b"{}"})],
        "pipelines": {"p": {"runs": [{"run_id": "r"}]}},
        "dead": [(b"1-0", {})],
    }
    nothing = {"queued": {}, "events": {}, "all_events": [], "pipelines": {}, "dead": []}
    assert losses(before, before) == []
    lost = losses(before, nothing)
    assert lost == [
        "queued jobs: {'q': ['job']} became {}",
        "dead letters: 1 became 0",
        "trimo:run:r:events: 1 events, 0 after",
        "trimo:run-events: 1 events, 0 after",
        "pipeline p: runs ['r'] became []",
    ]
