"""A run's event, as one line of the dashboard's log. Pure: no I/O.

Everything here came from the agent's container: it is text for the template to escape,
cut to a readable length, with control characters taken out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Final

from pydantic import ValidationError

from app.reporting.runview import duration, money, not_kept
from runner.handoff import size_text
from runner.job import run_event_adapter

BODY_CHARS: Final = 4000
DETAIL_CHARS: Final = 2000
KEPT_TITLES: Final = {
    "continued": "continues from kept commits",
    "replayed": "kept commits replayed on the branch",
    "branch": "kept commits set aside on a branch",
    "bundle": "kept commits set aside as a bundle",
    "runner": "kept commits stay on one runner",
}
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(text: str, limit: int) -> str:
    text = _CONTROL.sub("", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class LogLine:
    """`kind` picks the style: message, tool, result, error, usage, log, milestone, end."""

    kind: str
    title: str
    body: str = ""
    detail: str = ""
    """Shown collapsed (a tool call's input, a long result)."""
    failed: bool = False


def log_line(raw: str) -> LogLine:
    try:
        event = run_event_adapter.validate_python(json.loads(raw))
    except (ValueError, ValidationError):
        return LogLine("log", "unreadable event", clean(raw, BODY_CHARS))
    match event.type:
        case "message":
            return LogLine("message", "agent", clean(event.text, BODY_CHARS))
        case "tool_call":
            detail = clean(event.summary, DETAIL_CHARS)
            return LogLine("tool", clean(event.name, 100), detail=detail)
        case "tool_result":
            summary = clean(event.summary, DETAIL_CHARS)
            return LogLine("result", "error" if event.is_error else "result", detail=summary,
                           failed=event.is_error)  # fmt: skip
        case "usage":
            tokens = f"{event.input_tokens:,} in / {event.output_tokens:,} out"
            cost = money(event.cost_usd)
            model = clean(event.model or "", 100)
            return LogLine("usage", "usage", " · ".join(x for x in (model, tokens, cost) if x))
        case "error":
            return LogLine("error", "agent error", clean(event.message, BODY_CHARS), failed=True)
        case "result":
            took = duration(event.duration_ms / 1000) if event.duration_ms else ""
            words = "the agent says it is done" if event.success else "the agent gave up"
            return LogLine("milestone", words, clean(event.text, BODY_CHARS), detail=took,
                           failed=not event.success)  # fmt: skip
        case "log":
            return LogLine("log", "", clean(event.line, BODY_CHARS))
        case "started":
            return LogLine(
                "milestone",
                "started",
                clean(f"{event.agent} on runner {event.runner}, branch {event.branch}", 300),
            )
        case "pushed":
            noun = "commit" if event.commits == 1 else "commits"
            return LogLine("milestone", "pushed", f"{event.commits} {noun}, now at {event.sha[:7]}")
        case "salvaged":
            return LogLine("milestone", "work kept aside", clean(event.ref, 200), failed=True)
        case "push_refused":
            return LogLine("error", "push refused", clean(event.reason, 300), failed=True)
        case "egress_blocked":
            hosts = ", ".join(clean(h, 100) for h in sorted(event.hosts)[:20])
            return LogLine("error", "network blocked", hosts, failed=True)
        case "kept":
            noun = "commit" if event.commits == 1 else "commits"
            where = event.branch or event.entry or event.ref or event.sha[:7]
            why = event.problem or event.refused or event.unstored
            body = clean(f"{event.commits} {noun}, {where}. {why}".strip(), 500)
            return LogLine("milestone", KEPT_TITLES[event.action], body,
                           failed=event.action in ("bundle", "runner"))  # fmt: skip
        case "log_limited":
            limit = size_text(event.limit_bytes)
            return LogLine("error", "log limit reached",
                           f"this run's output reached {limit}: later lines are not kept",
                           failed=True)  # fmt: skip
        case "verifying":
            names = ", ".join(clean(name, 40) for name in event.checks)
            return LogLine("milestone", "verifying", f"{names} on {event.sha[:7]}")
        case _:
            reason = clean(event.reason, 500)
            if event.lines_not_kept:
                reason = " · ".join(x for x in (reason, not_kept(event.lines_not_kept)) if x)
            return LogLine("end", event.outcome.value.replace("_", " "), reason,
                           failed=event.outcome.value != "success")  # fmt: skip
