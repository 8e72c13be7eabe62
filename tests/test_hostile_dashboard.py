"""The hostile agent against the dashboard's pages of its run (real HTTP, real Redis)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from app.dashboard.requests import FormError, parse_line_comment
from app.dashboard.site import sse
from runner import contract
from runner.events import RawLog
from tests.dashboard_helpers import dashboard_settings, make_pipeline, make_run, seed_sync
from tests.test_dashboard_site import Events, add_event, client_as
from tests.webhook_helpers import RunningApp, running_app

HUGE_COLOUR = "before \x1b[" + "1" * 5000 + "mafter"
"""A colour sequence whose number has more digits than Python turns into an int (4300)."""


@pytest.fixture
def dash(redis_url: str) -> Iterator[RunningApp]:
    with running_app(dashboard_settings(redis_url)) as running:
        yield running


def test_a_colour_number_too_long_for_python_leaves_the_runs_pages_readable(
    dash: RunningApp, redis_url: str
) -> None:
    """The log's download and stream that drew the line used to fail with ValueError."""
    seed_sync(redis_url, make_pipeline("o/r", 8), make_run("o.r.8-a"), "running")
    add_event(dash.redis, "o.r.8-a", RawLog(line=HUGE_COLOUR))
    assert dash.redis.xlen(contract.run_events("o.r.8-a")) == 1
    with client_as(dash) as client:
        assert client.get("/runs/o.r.8-a").status_code == 200
        text = client.get("/runs/o.r.8-a/log.txt")
        assert text.status_code == 200 and "before after" in text.text
        with client.stream("GET", "/runs/o.r.8-a/events") as response:
            [(_, _, data)] = Events(response).next(1)
            assert "before" in data and "after" in data


def events_of(stream: str) -> list[dict[str, str]]:
    """What a browser reads off `stream` (the EventSource parsing of the HTML standard:
    CR, LF and CRLF each end a line, an empty line ends an event)."""
    found: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    for line in re.split(r"\r\n|\r|\n", stream):
        if not line:
            if fields:
                found.append(fields)
            fields = {}
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        joined = name == "data" and name in fields
        fields[name] = fields[name] + "\n" + value if joined else value
    return found


def test_a_carriage_return_in_a_title_starts_no_event_of_its_own() -> None:
    """Text a page shows live (a pipeline's title on every board's stream) is split only at
    LF: a CR in it ended the data line for the browser, so the text after it was a field
    of the writer's (`retry:` an hour, an `event:` and `data:` of its own) or, doubled, a
    whole event."""
    title = "Fix\r\rretry: 3600000\revent: card\rdata: spoofed\r\r"
    [only] = events_of(sse("card", f"<div>{title}</div>", "1-0"))
    assert only["event"] == "card" and "retry" not in only and only["id"] == "1-0"
    assert "spoofed" in only["data"] and only["data"].startswith("<div>Fix")


@pytest.mark.parametrize("line", ["²", "٣", "9" * 5000])
def test_a_line_number_python_cannot_read_is_a_clear_answer(line: str) -> None:
    """`str.isdigit` is true of "²" and of 5,000 nines; `int` of them raised (a 500)."""
    answer = parse_line_comment({"prompt": "fix", "path": "a.py", "line": line})
    assert answer == FormError("A line comment needs the line it is about.")


def test_a_resume_point_redis_cannot_read_is_ignored(dash: RunningApp, redis_url: str) -> None:
    """`?after=²-1` passed the check of a stream id and broke the log's stream."""
    seed_sync(redis_url, make_pipeline("o/r", 9), make_run("o.r.9-a"), "running")
    add_event(dash.redis, "o.r.9-a", RawLog(line="from the start"))
    after = {"after": "²-1"}
    with (
        client_as(dash) as client,
        client.stream("GET", "/runs/o.r.9-a/events", params=after) as response,
    ):
        [(_, _, data)] = Events(response).next(1)
    assert "from the start" in data
