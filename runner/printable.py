"""Agent-derived text made safe to print: no control characters, no escape sequences.

Anything the agent wrote (output lines, commit subjects, file names, git's
messages about its tree) can carry terminal escape sequences that recolour the
terminal, retitle its window, plant links or hide text. `printable` drops them.
"""

from __future__ import annotations

import re

_ESCAPE_SEQUENCE = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[PX^_][^\x1b]*(?:\x1b\\)?|.?)"
    r"|\x9b[0-?]*[ -/]*[@-~]|\x9d[^\x07\x9c]*[\x07\x9c]?"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str, limit: int | None = None, one_line: bool = False) -> str:
    """`text` without escape sequences and control characters (tabs and, unless
    `one_line`, newlines are kept), cut to `limit` characters."""
    clean = _ESCAPE_SEQUENCE.sub("", text)
    clean = clean.replace("\t", " ")
    if one_line:
        clean = _CONTROL_ONE_LINE.sub("", clean.replace("\r\n", " ").replace("\n", " "))
    else:
        clean = _CONTROL.sub("", clean)
    if limit is not None and len(clean) > limit:
        clean = clean[: max(0, limit - 1)] + "…"
    return clean
