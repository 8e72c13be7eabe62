"""Agent-derived text made safe to print: no control characters, no escape sequences.

Anything the agent wrote (output lines, commit subjects, file names, git's
messages about its tree) can carry terminal escape sequences that recolour the
terminal, retitle its window, plant links or hide text. `printable` drops them;
`styled` keeps only what colour sequences meant, as style names, and drops the rest.
"""

from __future__ import annotations

import re
from typing import Final

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


_SGR = re.compile(r"(?:\x1b\[|\x9b)([0-9;:]*)m\Z")
_FOREGROUND: Final = {**{30 + i: i for i in range(8)}, **{90 + i: 8 + i for i in range(8)}}
_BACKGROUND: Final = {**{40 + i: i for i in range(8)}, **{100 + i: 8 + i for i in range(8)}}
_ATTRIBUTES: Final = {1: "bold", 2: "dim", 3: "italic", 4: "underline"}
_ATTRIBUTE_RESETS: Final = {22: ("bold", "dim"), 23: ("italic",), 24: ("underline",)}
Styled = tuple[tuple[str, str], ...]
"""(text, style names separated by spaces: `fg-N`, `bg-N` (0-15), bold, dim, italic,
underline) in order."""


def _code(part: str) -> int:
    """One SGR parameter: empty is 0; a number too long to be any code (and, past 4300
    digits, too long for `int`) is none (-1)."""
    return -1 if len(part) > 9 else int(part) if part else 0


def _apply(codes: str, style: dict[str, str]) -> None:
    """Change `style` as the SGR parameters `codes` say (colours beyond the 16 named
    ones are ignored)."""
    parts = [_code(p) for p in re.split("[;:]", codes)] if codes else [0]
    index = 0
    while index < len(parts):
        code = parts[index]
        index += 1
        if code == 0:
            style.clear()
        elif code in _ATTRIBUTES:
            style[_ATTRIBUTES[code]] = _ATTRIBUTES[code]
        elif code in _ATTRIBUTE_RESETS:
            for name in _ATTRIBUTE_RESETS[code]:
                style.pop(name, None)
        elif code in _FOREGROUND:
            style["fg"] = f"fg-{_FOREGROUND[code]}"
        elif code in _BACKGROUND:
            style["bg"] = f"bg-{_BACKGROUND[code]}"
        elif code == 39:
            style.pop("fg", None)
        elif code == 49:
            style.pop("bg", None)
        elif code in (38, 48):  # 256-colour or true colour: skip its arguments
            index += 2 if index < len(parts) and parts[index] == 5 else 4


def styled(text: str, limit: int | None = None) -> Styled:
    """`text` as printable pieces, each with the style colour sequences gave it; every
    other sequence (links, titles, cursor moves) and control character dropped, the
    whole cut to `limit` characters."""
    pieces: list[tuple[str, str]] = []
    style: dict[str, str] = {}
    left = limit
    at = 0
    for found in [*_ESCAPE_SEQUENCE.finditer(text), None]:
        end = found.start() if found else len(text)
        piece = printable(text[at:end])
        if left is not None and len(piece) > left:
            piece = piece[: max(0, left - 1)] + "…"
        if piece:
            pieces.append((piece, " ".join(sorted(style.values()))))
            left = None if left is None else left - len(piece)
        if found is None or left == 0:
            break
        at = found.end()
        sgr = _SGR.match(found.group())
        if sgr is not None:
            _apply(sgr.group(1), style)
    return tuple(pieces)
