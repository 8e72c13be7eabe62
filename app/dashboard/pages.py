"""Rendering the dashboard's pages from `templates/dashboard/` (HTML, autoescaped)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache, lru_cache
from typing import Any, Final

import jinja2
from markupsafe import Markup

from app.dashboard import spendview
from app.dashboard.board import COLUMN_TITLES, COLUMNS, EMPTY_COLUMNS, Card, ago
from app.dashboard.plans import plan_html
from app.reporting.runview import duration, money
from runner.handoff import size_text
from runner.templating import TEMPLATES_DIR

CARDS_CACHED: Final = 4096


def stream_time(entry_id: str) -> datetime | None:
    """When a Redis stream entry was added, from its id (`<milliseconds>-<sequence>`)."""
    millis, _, _ = entry_id.partition("-")
    if not millis.isdigit() or len(millis) > 15:
        return None
    return datetime.fromtimestamp(int(millis) / 1000, UTC)


def _ago(when: datetime | None, now: datetime) -> str:
    return ago((now - when).total_seconds()) if when is not None else ""


def code_spans(text: str) -> list[tuple[str, bool]]:
    """Text written for GitHub with `code` in backticks, as (text, whether code) pieces:
    the page shows the code as code, and all of it escaped."""
    return [(piece, index % 2 == 1) for index, piece in enumerate(text.split("`")) if piece]


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR / "dashboard"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = duration
    env.filters["money"] = money
    env.filters["short_sha"] = lambda sha: str(sha)[:7]
    env.filters["filesize"] = size_text
    env.filters["iso"] = lambda when: when.isoformat() if when else ""
    env.filters["stream_time"] = stream_time
    env.filters["plan"] = plan_html
    env.filters["code_spans"] = code_spans
    env.globals["ago"] = _ago
    env.globals["COLUMNS"] = COLUMNS
    env.globals["COLUMN_TITLES"] = COLUMN_TITLES
    env.globals["EMPTY_COLUMNS"] = EMPTY_COLUMNS
    env.globals["card_html"] = render_card
    env.globals["GROUPS"] = spendview.GROUPS
    env.globals["PERIODS"] = spendview.PERIODS
    env.globals["CHART_WIDTH"] = spendview.CHART_WIDTH
    env.globals["CHART_HEIGHT"] = spendview.CHART_HEIGHT
    return env


def render(name: str, **context: Any) -> str:
    return environment().get_template(name).render(**context)


@lru_cache(maxsize=CARDS_CACHED)
def render_card(card: Card) -> Markup:
    """One board card (`_card.html.j2`). A card is made of everything it shows, so an
    unchanged card is rendered once (the board draws hundreds)."""
    return Markup(render("_card.html.j2", card=card))
