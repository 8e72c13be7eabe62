"""The hostile agent against the dashboard's pages of its run (real HTTP, real Redis)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
