"""A discovery run's plan, hostile Markdown, as inert HTML. Pure: no I/O.

markdown-it-py renders CommonMark with raw HTML off (any HTML the agent wrote becomes text)
and its own link check (no `javascript:`, `vbscript:`, `file:` or `data:` links); nh3 then
keeps only the tags and attributes a plan needs, only http(s) and mailto links, each with
`rel="noopener nofollow noreferrer"`. Images are dropped: a plan never loads anything.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup

PLAN_CHARS: Final = 60_000
"""A plan longer than this is cut before rendering (what the runner stores is bounded too)."""
TAGS: Final = frozenset(
    {"p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "code",
     "pre", "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td"}
)  # fmt: skip
ATTRIBUTES: Final = {"a": {"href", "title"}, "ol": {"start"}, "th": {"align"}, "td": {"align"}}
SCHEMES: Final = frozenset({"http", "https", "mailto"})

_MARKDOWN: Final = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


@lru_cache(maxsize=256)
def plan_html(text: str) -> Markup:
    """The plan `text` (Markdown) as HTML safe to put in a page."""
    if len(text) > PLAN_CHARS:
        text = text[:PLAN_CHARS] + "\n\n…"
    rendered = _MARKDOWN.render(text)
    return Markup(
        nh3.clean(
            rendered,
            tags=set(TAGS),
            attributes={tag: set(names) for tag, names in ATTRIBUTES.items()},
            url_schemes=set(SCHEMES),
            link_rel="noopener nofollow noreferrer",
            strip_comments=True,
        )
    )
