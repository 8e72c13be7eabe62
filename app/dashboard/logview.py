"""A run's event, as one line of the dashboard's log. Pure: no I/O.

Everything here came from the agent's container: it is text for the template to escape,
cut to a readable length, with escape sequences and control characters taken out. What the
agent printed keeps its colours, as `ansi-*` class names (`runner.printable.styled`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from pydantic import ValidationError

from app.reporting.runview import duration, money, not_kept
from runner.handoff import size_text
from runner.job import run_event_adapter
from runner.printable import printable, styled

BODY_CHARS: Final = 4000
DETAIL_CHARS: Final = 2000
KEPT_TITLES: Final = {
    "continued": "continues from kept commits",
    "replayed": "kept commits replayed on the branch",
    "branch": "kept commits set aside on a branch",
    "bundle": "kept commits set aside as a bundle",
    "runner": "kept commits stay on one runner",
}
Spans = tuple[tuple[str, str], ...]
"""(text, its CSS classes) in order."""


def coloured(text: str, limit: int) -> tuple[str, Spans]:
    """`text` made printable and cut, and its pieces with the classes of their colours."""
    pieces = styled(text, limit)
    spans = tuple(
        (piece, " ".join(f"ansi-{name}" for name in style.split())) for piece, style in pieces
    )
    return "".join(piece for piece, _ in pieces), spans


@dataclass(frozen=True)
class LogLine:
    """`kind` picks the style: message, tool, result, error, usage, log, milestone, end."""

    kind: str
    title: str
    body: str = ""
    detail: str = ""
    """Shown collapsed (a tool call's input, a long result)."""
    failed: bool = False
    spans: Spans = ()
    """The body in coloured pieces, when the agent printed it (else the body is plain)."""


def log_line(raw: str) -> LogLine:
    try:
        event = run_event_adapter.validate_python(json.loads(raw))
    except (ValueError, ValidationError):
        return LogLine("log", "unreadable event", printable(raw, BODY_CHARS))
    match event.type:
        case "message":
            body, spans = coloured(event.text, BODY_CHARS)
            return LogLine("message", "agent", body, spans=spans)
        case "tool_call":
            detail = printable(event.summary, DETAIL_CHARS)
            return LogLine("tool", printable(event.name, 100), detail=detail)
        case "tool_result":
            summary = printable(event.summary, DETAIL_CHARS)
            return LogLine("result", "error" if event.is_error else "result", detail=summary,
                           failed=event.is_error)  # fmt: skip
        case "usage":
            tokens = f"{event.input_tokens:,} in / {event.output_tokens:,} out"
            cost = money(event.cost_usd)
            model = printable(event.model or "", 100)
            return LogLine("usage", "usage", " · ".join(x for x in (model, tokens, cost) if x))
        case "error":
            message = printable(event.message, BODY_CHARS)
            return LogLine("error", "agent error", message, failed=True)
        case "result":
            took = duration(event.duration_ms / 1000) if event.duration_ms else ""
            words = "the agent says it is done" if event.success else "the agent gave up"
            return LogLine("milestone", words, printable(event.text, BODY_CHARS), detail=took,
                           failed=not event.success)  # fmt: skip
        case "log":
            body, spans = coloured(event.line, BODY_CHARS)
            return LogLine("log", "", body, spans=spans)
        case "started":
            return LogLine(
                "milestone",
                "started",
                printable(f"{event.agent} on runner {event.runner}, branch {event.branch}", 300),
            )
        case "pushed":
            noun = "commit" if event.commits == 1 else "commits"
            return LogLine("milestone", "pushed", f"{event.commits} {noun}, now at {event.sha[:7]}")
        case "salvaged":
            return LogLine("milestone", "work kept aside", printable(event.ref, 200), failed=True)
        case "push_refused":
            return LogLine("error", "push refused", printable(event.reason, 300), failed=True)
        case "egress_blocked":
            hosts = ", ".join(printable(h, 100) for h in sorted(event.hosts)[:20])
            return LogLine("error", "network blocked", hosts, failed=True)
        case "kept":
            noun = "commit" if event.commits == 1 else "commits"
            where = event.branch or event.entry or event.ref or event.sha[:7]
            why = event.problem or event.refused or event.unstored
            body = printable(f"{event.commits} {noun}, {where}. {why}".strip(), 500)
            return LogLine("milestone", KEPT_TITLES[event.action], body,
                           failed=event.action in ("bundle", "runner"))  # fmt: skip
        case "log_limited":
            limit = size_text(event.limit_bytes)
            return LogLine("error", "log limit reached",
                           f"this run's output reached {limit}: later lines are not kept",
                           failed=True)  # fmt: skip
        case "verifying":
            names = ", ".join(printable(name, 40) for name in event.checks)
            return LogLine("milestone", "verifying", f"{names} on {event.sha[:7]}")
        case _:
            reason = printable(event.reason, 500)
            if event.lines_not_kept:
                reason = " · ".join(x for x in (reason, not_kept(event.lines_not_kept)) if x)
            return LogLine("end", event.outcome.value.replace("_", " "), reason,
                           failed=event.outcome.value != "success")  # fmt: skip


def plain_text(line: LogLine) -> str:
    """The line as one line of a plain-text log (its colours dropped, no newline inside)."""
    words = " ".join(x for x in (line.title, line.body, line.detail) if x)
    return " ".join(words.split("\n")).replace("\r", "")
