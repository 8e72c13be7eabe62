"""The spend page and its CSV over real HTTP on a real Redis: only the repositories the
viewer sees, names escaped (in HTML and as spreadsheet cells), and the pure table logic."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from app.dashboard import spendview
from app.runs import spend
from app.runs.spend import Row, Spent
from runner.events import Usage
from tests.dashboard_helpers import dashboard_settings, signed_in
from tests.webhook_helpers import RunningApp, running_app

HOSTILE = '<script>alert("x")</script>'
FORMULA = '=HYPERLINK("http://example.com","x")'


@pytest.fixture
def dash(redis_url: str) -> Iterator[RunningApp]:
    with running_app(dashboard_settings(redis_url)) as running:
        yield running


def seed(redis_url: str, *runs: tuple[str, str, str, float, datetime]) -> None:
    async def go() -> None:
        redis = aioredis.from_url(redis_url)
        try:
            for index, (repo, person, agent, cost, at) in enumerate(runs):
                usage = Usage(input_tokens=100, output_tokens=10, cost_usd=cost)
                await spend.record(
                    redis, f"run-{index}", repo=repo, person=person, agent=agent, at=at,
                    usage=usage,
                )  # fmt: skip
        finally:
            await redis.aclose()

    asyncio.run(go())


NOW = datetime.now(UTC)


def seeded(redis_url: str) -> None:
    seed(
        redis_url,
        ("o/r", "alice", "claude", 0.50, NOW),
        ("o/r", "bob", "codex", 0.25, NOW),
        ("O/R", "alice", "claude", 0.10, NOW - timedelta(days=1)),
        ("x/secret", "mallory", "claude", 9.99, NOW),
        ("x/secret", HOSTILE, FORMULA, 1.0, NOW),
    )


def test_signed_out_the_spend_page_sends_to_sign_in(dash: RunningApp) -> None:
    answer = dash.client.get("/spend")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
    assert dash.client.get("/spend.csv").status_code == 401


def test_a_viewer_sees_the_spend_of_their_repositories_only(
    dash: RunningApp, redis_url: str
) -> None:
    seeded(redis_url)
    client, _ = signed_in(dash.base_url, dash.settings, "alice", {"o/r": "read"})
    with client:
        page = client.get("/spend")
        by_person = client.get("/spend", params={"group": "person", "period": "month"})
        table = client.get("/spend.csv", params={"period": "day"})
    assert page.status_code == 200
    html = page.text
    assert html.count('class="spend-row"') == 1  # o/r and O/R are one repository
    assert 'data-cost="0.850000" data-runs="3"' in html
    assert "secret" not in html and "mallory" not in html and "9.99" not in html
    assert 'id="spend-chart"' in html and "<svg" in html
    assert 'href="/spend" aria-current="page"' in html
    people = by_person.text
    assert 'data-key="alice" data-cost="0.600000"' in people
    assert 'data-key="bob" data-cost="0.250000"' in people and "mallory" not in people
    assert table.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(table.text)))
    assert rows[0] == list(spendview.CSV_COLUMNS)
    assert {(r[1], r[2], r[4], r[5]) for r in rows[1:]} == {
        ("o/r", "alice", "1", "0.500000"),
        ("o/r", "bob", "1", "0.250000"),
        ("O/R", "alice", "1", "0.100000"),
    }


def test_an_admin_sees_everything_with_hostile_names_made_harmless(
    dash: RunningApp, redis_url: str
) -> None:
    seeded(redis_url)
    client, _ = signed_in(dash.base_url, dash.settings, "root", {})
    with client:
        html = client.get("/spend", params={"group": "person"}).text
        by_agent = client.get("/spend", params={"group": "agent"}).text
        text = client.get("/spend.csv").text
    assert 'data-key="mallory"' in html and HOSTILE not in html
    assert "&lt;script&gt;alert(" in html
    assert FORMULA not in by_agent and "=HYPERLINK(&#34;http://example.com&#34;" in by_agent
    cells = [row[3] for row in csv.reader(io.StringIO(text))][1:]
    assert "'" + FORMULA in cells and FORMULA not in cells


def test_a_viewer_with_no_spend_is_told_what_shows_here(dash: RunningApp) -> None:
    client, _ = signed_in(dash.base_url, dash.settings, "alice", {"o/r": "read"})
    with client:
        html = client.get("/spend", params={"period": "bogus", "group": "<x>"}).text
    assert 'id="spend-empty"' in html


def test_periods_are_the_last_30_days_or_12_months_oldest_first() -> None:
    days = spendview.periods("day", date(2026, 3, 2))
    assert len(days) == 30 and days[0] == "2026-02-01" and days[-1] == "2026-03-02"
    months = spendview.periods("month", date(2026, 3, 2))
    assert months[0] == "2025-04" and months[-1] == "2026-03" and len(months) == 12


def test_the_table_sums_by_key_and_period_and_stacks_the_top_keys() -> None:
    shown = ["2026-03-01", "2026-03-02"]
    rows = [
        Row("2026-03-01", f"o/r{n}", "p", "a", Spent((n + 1) * 100_000, 1, 1, 1))
        for n in range(spendview.SERIES + 2)
    ] + [Row("2026-03-02", "o/r0", "p", "a", Spent(50_000, 0, 0, 1))]
    rows.append(Row("2025-01-01", "o/r0", "p", "a", Spent(10**9, 0, 0, 1)))  # not shown
    rows.append(Row("2026-03-02", "O/R0", "q", "b", Spent(0, 1, 0, 1)))  # o/r0 again
    by_period = {
        day: spendview.partial([r for r in rows if r.period == day], "repo") for day in shown
    }
    table = spendview.tabulate(by_period, spendview.Query(), shown)
    assert [key for key, _ in table.keys][:2] == ["o/r7", "o/r6"]
    assert table.total == Spent(3_650_000, 9, 8, 10)
    first, second = table.bars
    assert [s.series for s in first.segments] == [*range(spendview.SERIES), spendview.SERIES]
    assert first.segments[-1].key == "others" and first.segments[-1].spent.micro_usd == 300_000
    assert first.segments[-1].y == 0.0  # the tallest bar fills the chart
    assert [s.key for s in second.segments] == ["others"] and second.total.runs == 2
    assert table.legend[-1] == (spendview.SERIES, "others") and table.top == 3.6


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, spendview.Query("repo", "day")),
        ({"group": "person", "period": "month"}, spendview.Query("person", "month")),
        ({"group": "agent"}, spendview.Query("agent", "day")),
        ({"group": "x' or 1", "period": "year"}, spendview.Query("repo", "day")),
    ],
)
def test_the_query(query: dict[str, str], expected: spendview.Query) -> None:
    assert spendview.Query.from_query(query) == expected


def test_a_run_that_ends_after_a_page_was_drawn_shows_on_the_next(
    dash: RunningApp, redis_url: str
) -> None:
    seed(redis_url, ("o/r", "alice", "claude", 0.50, NOW))
    client, _ = signed_in(dash.base_url, dash.settings, "alice", {"o/r": "read"})
    with client:
        assert 'data-cost="0.500000" data-runs="1"' in client.get("/spend").text
        asyncio.run(_add(redis_url, "late-run", 0.25))
        assert 'data-cost="0.750000" data-runs="2"' in client.get("/spend").text
        assert client.get("/spend.csv").text.count("\r\n") == 2  # the head and one row


async def _add(redis_url: str, run_id: str, cost: float) -> None:
    redis = aioredis.from_url(redis_url)
    try:
        await spend.record(
            redis, run_id, repo="o/r", person="alice", agent="claude", at=NOW,
            usage=Usage(cost_usd=cost),
        )  # fmt: skip
    finally:
        await redis.aclose()
