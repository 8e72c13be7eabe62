"""Rendering the dashboard's pages from `templates/dashboard/` (HTML, autoescaped)."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

import jinja2

from app.dashboard.board import COLUMN_TITLES, COLUMNS, ago
from app.runview import duration, money
from runner.templating import TEMPLATES_DIR


def _ago(when: datetime | None, now: datetime) -> str:
    return ago((now - when).total_seconds()) if when is not None else ""


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
    env.filters["iso"] = lambda when: when.isoformat() if when else ""
    env.globals["ago"] = _ago
    env.globals["COLUMNS"] = COLUMNS
    env.globals["COLUMN_TITLES"] = COLUMN_TITLES
    return env


def render(name: str, **context: Any) -> str:
    return environment().get_template(name).render(**context)
