"""The spend page's logic, pure: which periods it shows, the rows a viewer may see, the table
by repository, person or agent, the chart's bars and the CSV download."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Final, Literal

from app.runs.spend import MICRO, Period, Row, Spent, month_of

Group = Literal["repo", "person", "agent"]
GROUPS: Final[Mapping[Group, str]] = {"repo": "Repository", "person": "Person", "agent": "Agent"}
PERIODS: Final[Mapping[Period, str]] = {"day": "Day", "month": "Month"}
DAYS_SHOWN: Final = 30
MONTHS_SHOWN: Final = 12
SERIES: Final = 6
"""Keys the chart colours apart; the rest are stacked as "others"."""
CHART_WIDTH: Final = 720
CHART_HEIGHT: Final = 220
CSV_COLUMNS: Final = (
    "period", "repository", "person", "agent", "runs", "cost_usd", "input_tokens",
    "output_tokens",
)  # fmt: skip


@dataclass(frozen=True)
class Query:
    """What the page shows, from the URL's query; anything else is the default."""

    group: Group = "repo"
    period: Period = "day"

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Query:
        group, period = query.get("group", ""), query.get("period", "")
        return cls(
            group="person" if group == "person" else "agent" if group == "agent" else "repo",
            period="month" if period == "month" else "day",
        )


def periods(period: Period, today: date) -> list[str]:
    """The days (the last 30) or months (the last 12) shown, oldest first."""
    if period == "day":
        return [(today - timedelta(days=n)).isoformat() for n in range(DAYS_SHOWN - 1, -1, -1)]
    year, month = today.year, today.month
    found = []
    for _ in range(MONTHS_SHOWN):
        found.append(month_of(date(year, month, 1)))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return found[::-1]


def visible(rows: Iterable[Row], repos: Iterable[str] | None) -> list[Row]:
    """The rows of repositories the viewer sees (`repos`, any case; None: all)."""
    if repos is None:
        return list(rows)
    allowed = {repo.lower() for repo in repos}
    return [row for row in rows if row.repo.lower() in allowed]


def key_of(row: Row, group: Group) -> str:
    return row.repo if group == "repo" else row.person if group == "person" else row.agent


@dataclass(frozen=True)
class Segment:
    """One key's part of one period's bar, in chart units."""

    key: str
    series: int
    """0..SERIES-1 for the top keys, SERIES for the others."""
    y: float
    height: float
    spent: Spent


@dataclass(frozen=True)
class Bar:
    period: str
    x: float
    width: float
    total: Spent
    segments: list[Segment]


@dataclass(frozen=True)
class Table:
    """Spend by key over the periods shown, the largest cost first, and by period."""

    group: Group
    period: Period
    periods: list[str]
    keys: list[tuple[str, Spent]]
    by_period: list[tuple[str, Spent]]
    total: Spent
    bars: list[Bar] = field(default_factory=list)
    legend: list[tuple[int, str]] = field(default_factory=list)
    top: float = 0.0
    """The chart's scale: the largest period's cost, in dollars."""


Partial = dict[str, tuple[str, Spent]]
"""One period's spend by key: the key lower-cased -> (its spelling, what it spent)."""


def partial(rows: Iterable[Row], group: Group) -> Partial:
    """One period's rows summed by `group` (names compare case-insensitively, as on GitHub:
    the first spelling seen is kept)."""
    sums: dict[str, list[int]] = {}
    spelled: dict[str, str] = {}
    for row in rows:
        name = key_of(row, group)
        key = name.lower()
        spent = row.spent
        found = sums.get(key)
        if found is None:
            spelled[key] = name
            sums[key] = [spent.micro_usd, spent.input_tokens, spent.output_tokens, spent.runs]
        else:
            found[0] += spent.micro_usd
            found[1] += spent.input_tokens
            found[2] += spent.output_tokens
            found[3] += spent.runs
    return {key: (spelled[key], Spent(*sums[key])) for key in sums}


def merged(partials: Iterable[Partial]) -> Partial:
    """Several periods' sums as one (the first spelling of a name is kept)."""
    total: Partial = {}
    for part in partials:
        for key, (name, spent) in part.items():
            before = total.get(key)
            total[key] = (name, spent) if before is None else (before[0], before[1] + spent)
    return total


def tabulate(partials: Mapping[str, Partial], query: Query, shown: list[str]) -> Table:
    """The table and chart of the periods `shown`, from each period's `partial`."""
    by_key: dict[str, tuple[str, Spent]] = {}
    by_period: dict[str, Spent] = {}
    for period in shown:
        total = Spent()
        for key, (name, spent) in partials.get(period, {}).items():
            spelling, before = by_key.get(key, (name, Spent()))
            by_key[key] = (spelling, before + spent)
            total += spent
        by_period[period] = total
    keys = sorted(by_key.values(), key=lambda item: (-item[1].micro_usd, item[0].lower()))
    table = Table(
        group=query.group,
        period=query.period,
        periods=shown,
        keys=keys,
        by_period=list(by_period.items()),
        total=sum((spent for _, spent in keys), Spent()),
    )
    return _charted(table, partials)


def _charted(table: Table, partials: Mapping[str, Partial]) -> Table:
    """The table with its chart: a bar per period, stacked by the top keys and the others."""
    series = {name.lower(): index for index, (name, _) in enumerate(table.keys[:SERIES])}
    top_micro = max((spent.micro_usd for _, spent in table.by_period), default=0)
    slot = CHART_WIDTH / max(len(table.periods), 1)
    bars = []
    for index, (period, total) in enumerate(table.by_period):
        parts: dict[int, tuple[str, Spent]] = {}
        for key, (name, spent) in partials.get(period, {}).items():
            place = series.get(key, SERIES)
            label, before = parts.get(place, ("others" if place == SERIES else name, Spent()))
            parts[place] = (label, before + spent)
        y = float(CHART_HEIGHT)
        segments = []
        for place in sorted(parts):
            label, spent = parts[place]
            height = CHART_HEIGHT * spent.micro_usd / top_micro if top_micro else 0.0
            y -= height
            segments.append(Segment(label, place, round(y, 2), round(height, 2), spent))
        bars.append(Bar(period, round(index * slot + 1, 2), round(slot - 2, 2), total, segments))
    legend = [(index, name) for index, (name, _) in enumerate(table.keys[:SERIES])]
    if len(table.keys) > SERIES:
        legend.append((SERIES, "others"))
    return replace(table, bars=bars, legend=legend, top=top_micro / MICRO)


def csv_text(rows: Iterable[Row], shown: list[str]) -> str:
    """Every row of the periods shown, one line each, oldest first."""
    wanted = set(shown)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    ordered = sorted(
        (r for r in rows if r.period in wanted),
        key=lambda r: (r.period, r.repo.lower(), r.person.lower(), r.agent),
    )
    for row in ordered:
        spent = row.spent
        writer.writerow(
            [
                row.period,
                _cell(row.repo),
                _cell(row.person),
                _cell(row.agent),
                spent.runs,
                f"{spent.cost_usd:.6f}",
                spent.input_tokens,
                spent.output_tokens,
            ]
        )
    return out.getvalue()


def _cell(text: str) -> str:
    """A name as a spreadsheet takes it: never as a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
