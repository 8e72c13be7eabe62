"""Rendering the texts in `templates/` (Jinja2). Logic stays in Python; words stay there."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jinja2

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["first_line"] = lambda text: (str(text).strip().splitlines() or [""])[0]
    env.filters["short_sha"] = lambda sha: str(sha)[:7]
    return env


def render(name: str, **context: Any) -> str:
    return environment().get_template(name).render(**context)
