"""A run's events stored by bytes: lines cut with a marker, a budget per run, the count of
what was not kept in the run's last word. Pure, except the publisher's room while Redis is
away (files, a Redis port nothing answers on, and a redis-server that comes back)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from app.dashboard.logview import log_line
from app.dashboard.pages import render
from app.reporting.runview import RunView, check_finished
from runner import contract
from runner.eventcap import (
    CUT_MARKER,
    LINE_MAX_BYTES,
    REPORT_ENTRIES_MAX,
    REPORT_LINE_MAX_BYTES,
    RunLog,
    cut,
    stamped,
)
from runner.events import AssistantMessage, RawLog, ToolCall, ToolResult, Usage
from runner.job import LogLimited, Outcome, Pushed, RunFinished, RunStarted, run_event_adapter
from runner.lastword import MAX_SAID_CHARS, LastWord
from runner.publisher import SPOOL_NAME, EventPublisher
from tests.conftest import free_port
from tests.redis_servers import RedisProcess

KIB = 1024


@pytest.mark.parametrize(
    "event",
    [
        AssistantMessage(text="x" * (1 << 20)),
        RawLog(line="\x01" * 100_000),  # six bytes a character in JSON
        RawLog(line="é🙂" * 100_000),  # several bytes a character in UTF-8
        ToolCall(name="n" * 40_000, summary="s" * 30_000),
        ToolResult(summary='"\\' * 50_000),
    ],
    ids=["long", "control", "wide", "two-texts", "escapes"],
)
def test_a_long_event_is_cut_to_size_with_the_marker_and_stays_valid(event: object) -> None:
    for limit in (LINE_MAX_BYTES, REPORT_LINE_MAX_BYTES):
        payload = cut(event, limit)  # type: ignore[arg-type]
        assert len(payload.encode()) <= limit
        back = run_event_adapter.validate_json(payload)
        texts = [v for v in back.model_dump().values() if isinstance(v, str) and len(v) > 40]
        assert texts and all(t.endswith(CUT_MARKER) for t in texts), payload[:200]


def test_a_short_event_is_stored_as_it_is() -> None:
    event = AssistantMessage(text="hello")
    assert cut(event, LINE_MAX_BYTES) == event.model_dump_json()


def test_a_run_stores_its_lines_until_its_budget_then_counts_them_and_says_so_once() -> None:
    budget = 100 * KIB
    run = RunLog(budget)
    assert len(run.admit(RunStarted(run_id="r", runner="x", agent="script", image="i",
                                    branch="b", base_sha="0" * 40))) == 1  # fmt: skip
    stored = []
    for _ in range(200):
        stored += run.admit(AssistantMessage(text="y" * 4000))
    lines = [e for e in stored if e.agent]
    notices = [e for e in stored if not e.agent]
    assert sum(e.size for e in lines) <= budget
    assert len(lines) + run.lines_not_kept == 200
    assert [json.loads(n.own)["type"] for n in notices] == ["log_limited"]
    # The runner's own events are always stored, and the last word counts what was not.
    assert len(run.admit(Pushed(branch="b", sha="1" * 40, commits=1))) == 1
    run.dropped(5)
    (last,) = run.admit(RunFinished(run_id="r", outcome=Outcome.SUCCESS))
    finished = run_event_adapter.validate_json(last.own)
    assert isinstance(finished, RunFinished)
    assert finished.lines_not_kept == 200 - len(lines) + 5


def test_a_run_takes_only_its_share_of_the_runner_wide_stream_and_its_usage_stays_whole() -> None:
    run = RunLog(1 << 30)
    entries = []
    for n in range(REPORT_ENTRIES_MAX + 100):
        entries += run.admit(Usage(model="m", input_tokens=n, cost_usd=0.01))
    shared = [e for e in entries if e.report is not None]
    assert len(shared) == REPORT_ENTRIES_MAX and len(entries) == REPORT_ENTRIES_MAX + 100
    total = Usage(model="m", input_tokens=7, output_tokens=8, cost_usd=12.5)
    (last,) = run.admit(RunFinished(run_id="r", outcome=Outcome.SUCCESS, usage=total))
    assert last.report is not None, "the run's last word is always reported"
    view = RunView(run_id="r")
    for entry in [*shared, last]:
        assert entry.report is not None
        view = view.apply(run_event_adapter.validate_json(entry.report))
    assert (view.input_tokens, view.output_tokens, view.cost_usd) == (7, 8, 12.5)


def test_what_was_not_kept_is_shown_in_the_dashboards_log_and_the_check_run() -> None:
    finished = RunFinished(run_id="r", outcome=Outcome.SUCCESS, lines_not_kept=12_345)
    end = log_line(finished.model_dump_json())
    assert "12,345 lines not kept" in render("_log_line.html.j2", line=end, entry_id="1-0")
    notice = log_line(LogLimited(limit_bytes=64 << 20).model_dump_json())
    assert notice.title == "log limit reached" and "64.0 MB" in notice.body
    assert "later lines are not kept" in render("_log_line.html.j2", line=notice, entry_id="2-0")
    view = RunView(run_id="r", agent="script").apply(finished)
    _, summary = check_finished(view, "trimo/p1")
    assert "12,345 lines not kept" in summary


def test_a_spooled_last_word_is_stamped_with_more_lines_not_kept() -> None:
    finished = RunFinished(run_id="r", outcome=Outcome.SUCCESS, lines_not_kept=2)
    again = run_event_adapter.validate_json(stamped(finished.model_dump_json(), 3))
    assert isinstance(again, RunFinished) and again.lines_not_kept == 5
    message = AssistantMessage(text="hi").model_dump_json()
    assert stamped(message, 3) == message
    assert stamped("not json", 3) == "not json"


def test_an_agent_that_never_calls_a_tool_keeps_little_of_what_it_said() -> None:
    """A script's plan is what it said; 2,000 lines of 256 KiB held 512 MB for it."""
    word = LastWord()
    for _ in range(2000):
        word.observe(AssistantMessage(text="z" * (256 * KIB)))
    assert sum(len(s) for s in word.said) <= MAX_SAID_CHARS
    assert word.text().startswith("z" * 1000)


def away(tmp_path: Path, **caps: int) -> EventPublisher:
    """A publisher whose Redis never answers."""
    client = redis.Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    return EventPublisher(client, tmp_path / "spool", **caps)


def test_while_redis_is_away_the_queue_and_the_spool_hold_their_size_and_count_the_rest(
    tmp_path: Path,
) -> None:
    publisher = away(tmp_path, run_log_max=1 << 30, pending_max=200 * KIB, spool_max=1 << 30)
    for _ in range(100):
        publisher.publish("r1", AssistantMessage(text="q" * 8000))
    publisher.publish("r1", RunFinished(run_id="r1", outcome=Outcome.SUCCESS))
    assert not publisher.flush(timeout=0.2)
    spool = tmp_path / "spool" / "unsent-events.jsonl"
    assert spool.stat().st_size <= 200 * KIB + 4 * KIB
    items = [json.loads(line) for line in spool.read_text().splitlines()]
    finished = run_event_adapter.validate_json(items[-1]["event"])
    assert isinstance(finished, RunFinished)
    kept = sum(1 for item in items if item["agent"])
    assert finished.lines_not_kept == 100 - kept > 0
    publisher.close(timeout=0)

    # A second run in a small spool: its lines past the spool's room are counted too.
    cap = spool.stat().st_size + 50 * KIB
    second = away(tmp_path, run_log_max=1 << 30, spool_max=cap)
    for _ in range(20):
        second.publish("r2", AssistantMessage(text="w" * 8000))
    second.publish("r2", RunFinished(run_id="r2", outcome=Outcome.SUCCESS))
    assert not second.flush(timeout=0.2)
    items = [json.loads(line) for line in spool.read_text().splitlines()]
    assert spool.stat().st_size <= cap + 4 * KIB
    r2 = [item for item in items if item["run_id"] == "r2"]
    finished = run_event_adapter.validate_json(r2[-1]["event"])
    assert isinstance(finished, RunFinished)
    assert finished.lines_not_kept == 20 - sum(1 for item in r2 if item["agent"]) > 0
    second.close(timeout=0)


def test_what_was_spooled_is_sent_once_redis_is_back_without_a_restart(tmp_path: Path) -> None:
    """A run that ended while Redis was away left its last word in the spool, which was
    read only when the runner next started: its check run stayed open until then."""
    server = RedisProcess(tmp_path / "redis", ["--appendonly", "no"])
    client = redis.Redis.from_url(server.url, socket_connect_timeout=0.2, socket_timeout=1)
    publisher = EventPublisher(client, tmp_path / "spool")
    try:
        publisher.publish("r1", AssistantMessage(text="said while Redis was away"))
        publisher.publish("r1", RunFinished(run_id="r1", outcome=Outcome.SUCCESS))
        assert not publisher.flush(timeout=0.3)
        assert (tmp_path / "spool" / SPOOL_NAME).exists()
        server.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and client.xlen(contract.run_events("r1")) < 2:
            time.sleep(0.1)
        types = [
            json.loads(f[b"event"])["type"] for _, f in client.xrange(contract.run_events("r1"))
        ]
        assert types == ["message", "finished"]
        assert not (tmp_path / "spool" / SPOOL_NAME).exists()
    finally:
        publisher.close(timeout=0)
        server.stop()
