"""The hostile agent against what its output costs the host: Redis, memory and disk.

An agent prints as fast as it can, in lines as long as the runner reads (256 KiB). Every
line used to be stored whole in two streams capped by entries, not bytes, and queued and
spooled whole while Redis was away. Real Docker, a real redis-server of the test's own,
and a real runner process.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from runner import contract
from runner.engine import EngineConfig, RunEngine
from runner.eventcap import CUT_MARKER, REPORT_ENTRIES_MAX
from runner.job import Outcome, RunFinished, run_event_adapter
from runner.publisher import EventPublisher
from tests.engine_helpers import make_request
from tests.procwatch import rss_bytes
from tests.redis_servers import RedisProcess
from tests.runner_helpers import RunnerProcess, enqueue, wait_for

pytestmark = pytest.mark.docker

KIB = 1024
MB = 1024 * 1024


def flood(lines: int, size: int = 256 * KIB, pause: float = 0) -> str:
    """A script printing `lines` lines of `size` bytes as fast as it can, after `pause` s."""
    return (
        f"sleep {pause}; line=$(head -c {size - 1} /dev/zero | tr '\\0' x)\n"
        f"for i in $(seq {lines}); do printf '%s\\n' \"$line\"; done\n"
        "echo flood-done\n"
    )


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


@pytest.fixture
def own_redis(tmp_path: Path) -> RedisProcess:
    server = RedisProcess(tmp_path / "redis", ["--appendonly", "no"]).start()
    yield server
    server.stop()


def test_a_log_flood_grows_redis_by_its_budget_at_most_and_says_what_was_not_kept(
    sample_repo: Path, cache: Path, own_redis: RedisProcess
) -> None:
    """1,200 lines of 256 KiB grew Redis by 796 MB: each stored whole in two streams. Now a
    stored line is at most 16 KiB, cut with a marker, a run stores at most its log budget
    across both streams, and the lines past it are counted where people read the run. The
    lines here are 128 KiB, so the 150 MB stay within Docker's own log file (256 MB), which
    a lagging reader on a busy machine can otherwise lose lines to on rotation: then every
    line is either stored or counted."""
    client = redis.Redis.from_url(own_redis.url)
    budget = 8 * MB
    publisher = EventPublisher(client, cache / "spool", run_log_max=budget)
    engine = RunEngine(EngineConfig(cache_dir=cache, runner_id="flood", push_interval_seconds=5))
    request = make_request(sample_repo, flood(1200, size=128 * KIB), timeout_s=300)
    before = used_memory(client)
    finished = engine.execute(request, lambda event: publisher.publish(request.run_id, event))
    assert publisher.flush(timeout=30), "the events were not all sent"
    grown = used_memory(client) - before
    assert finished.outcome is Outcome.SUCCESS, finished.reason
    assert grown < budget + 4 * MB, f"Redis grew by {grown // MB} MB for one run's log"

    entries = client.xrange(contract.run_events(request.run_id))
    stored = [fields[b"event"] for _, fields in entries]
    assert max(len(raw) for raw in stored) <= 16 * KIB, "a stored line is longer than 16 KiB"
    events = [run_event_adapter.validate_python(json.loads(raw)) for raw in stored]
    cut = [e for e in events if e.type == "message" and e.text.endswith(CUT_MARKER)]
    assert cut, "no stored line carries the cut marker"
    last = events[-1]
    assert isinstance(last, RunFinished), "the run's last word was not kept"
    kept = sum(1 for e in events if e.type == "message" and e.text.startswith("xxx"))
    assert kept < 600, f"{kept} flood lines stored within an 8 MB budget"
    assert kept + last.lines_not_kept == 1200, (kept, last.lines_not_kept)
    from app.dashboard.logview import log_line

    shown = log_line(stored[-1].decode())
    assert f"{last.lines_not_kept:,} lines not kept" in shown.body, shown
    publisher.close()


def test_a_log_flood_while_redis_is_away_keeps_the_runner_small_and_its_spool_bounded(
    sample_repo: Path, tmp_path: Path, own_redis: RedisProcess, test_image: str
) -> None:
    """With Redis gone mid-run, the same flood drove the runner to 659 MB and spooled
    314 MB to disk. Now the queue in memory and the spool are bounded by bytes."""
    cache = tmp_path / "cache"
    runner = RunnerProcess(own_redis.url, cache, "flooded", "flooded", 1)
    runner.start()
    try:
        request = make_request(
            sample_repo, flood(1200, pause=5), timeout_s=300, runner_label="flooded"
        )
        enqueue(own_redis.url, request)
        wait_for(own_redis.url, request.run_id, "started", timeout=120)
        own_redis.kill9()
        assert runner.proc is not None
        spool = cache / "spool" / "flooded" / "unsent-events.jsonl"
        ended = f"run {request.run_id} ended"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and ended not in runner.output():
            assert runner.proc.poll() is None, runner.output()[-2000:]
            time.sleep(0.2)
        assert spool.exists(), f"the run's events were never spooled: {runner.output()[-2000:]}"
        peak = rss_bytes(runner.proc.pid, "VmHWM")
        size = spool.stat().st_size
    finally:
        runner.kill9()
    assert peak < 300 * MB, f"the runner reached {peak // MB} MB"
    assert size < 80 * MB, f"the spool holds {size // MB} MB"
    finished = [
        json.loads(json.loads(line)["event"])
        for line in spool.read_text().splitlines()
        if '"finished' in line
    ]
    assert finished and finished[-1]["type"] == "finished", "the run's last word was not spooled"


def test_a_line_of_one_mebibyte_is_stored_cut_with_the_marker(
    sample_repo: Path, cache: Path, own_redis: RedisProcess
) -> None:
    client = redis.Redis.from_url(own_redis.url)
    publisher = EventPublisher(client, cache / "spool")
    engine = RunEngine(EngineConfig(cache_dir=cache, runner_id="long", push_interval_seconds=5))
    script = "head -c 1048576 /dev/zero | tr '\\0' x; echo; echo after"
    request = make_request(sample_repo, script)
    engine.execute(request, lambda event: publisher.publish(request.run_id, event))
    assert publisher.flush(timeout=30)
    stored = [f[b"event"] for _, f in client.xrange(contract.run_events(request.run_id))]
    texts = [json.loads(raw).get("text", "") for raw in stored]
    (long,) = [t for t in texts if t.startswith("xxxx")]
    assert long.endswith(CUT_MARKER) and long.count("(line cut)") == 1
    assert len(long) > 8 * KIB and max(len(raw) for raw in stored) <= 16 * KIB
    assert "after" in texts, "the line after the long one was lost"
    publisher.close()


def test_a_flood_of_short_lines_takes_only_its_share_of_the_runner_wide_stream(
    sample_repo: Path, cache: Path, own_redis: RedisProcess
) -> None:
    """The App reports every run from one stream, trimmed by entries: 20,000 short lines of
    one run pushed other runs' unread events out of it. A run's agent events take at most
    `REPORT_ENTRIES_MAX` entries of it; its own stream keeps them."""
    client = redis.Redis.from_url(own_redis.url)
    publisher = EventPublisher(client, cache / "spool")
    engine = RunEngine(EngineConfig(cache_dir=cache, runner_id="short", push_interval_seconds=5))
    request = make_request(sample_repo, "seq 20000", timeout_s=120)
    engine.execute(request, lambda event: publisher.publish(request.run_id, event))
    assert publisher.flush(timeout=30)
    shared = client.xrange(contract.ALL_RUN_EVENTS)
    of_run = [f for _, f in shared if f[b"run_id"] == request.run_id.encode()]
    assert len(of_run) <= REPORT_ENTRIES_MAX + 10, f"{len(of_run)} entries of one run"
    assert json.loads(of_run[-1][b"event"])["type"] == "finished"
    own = client.xlen(contract.run_events(request.run_id))
    assert own >= min(20_000, contract.EVENTS_MAXLEN), f"the run's own stream holds {own}"
    publisher.close()
