"""What of a run's events is stored, counted in bytes, never only in entries. Pure: no I/O.

An agent decides how much it prints. Each of its events is stored in two streams: the
run's own (at most `LINE_MAX_BYTES` an entry, read by the dashboard) and the runner-wide
one the App reports from (at most `REPORT_LINE_MAX_BYTES`: GitHub shows a few hundred
characters of a message), which is trimmed by entries and shared by every run: one run
puts at most `REPORT_ENTRIES_MAX` of its agent's events there, so that its flood never
pushes other runs' events out. A text too long is cut, with `CUT_MARKER` at the cut. One run's
agent events take at most its log budget (`TRIMO_RUN_LOG_MAX`) across both streams; the
lines past it are not kept, only counted, and the count travels in the run's last word.
The runner's own events (started, pushed, finished...) are few and always kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final, get_args

from pydantic import BaseModel

from runner.events import AgentEvent
from runner.job import LogLimited, RunEvent, RunFinished

LINE_MAX_BYTES: Final = 16 * 1024
"""The most one stored event of an agent takes in the run's own stream."""
REPORT_LINE_MAX_BYTES: Final = 1024
"""The most one event of an agent takes in the runner-wide stream."""
REPORT_ENTRIES_MAX: Final = 5_000
"""The most agent events one run puts in the runner-wide stream; the App's view of a run
needs its last message and tool calls, and its last word carries its usage whole."""
CUT_MARKER: Final = " …(line cut)"
ENTRY_OVERHEAD: Final = 64
"""What Redis spends on a stream entry besides its payload, charged to the budget."""
RUN_LOG_MAX_DEFAULT: Final = "64m"
"""`TRIMO_RUN_LOG_MAX`: the most one run's agent events take in Redis, across its streams."""

AGENT_EVENTS: Final = get_args(get_args(AgentEvent)[0])
"""The event classes an agent's output becomes (the rest are the runner's own)."""


@dataclass(frozen=True)
class Entry:
    """One event as stored: its payload in the run's stream and in the runner-wide one
    (None when the run has had its share of that)."""

    own: str
    report: str | None
    agent: bool
    """An agent's event, which may be dropped; the runner's own never are."""

    @property
    def size(self) -> int:
        """What it takes in Redis (and in memory, and in the spool), payloads and entries."""
        report = 0 if self.report is None else len(self.report.encode()) + ENTRY_OVERHEAD
        return len(self.own.encode()) + ENTRY_OVERHEAD + report


@dataclass
class RunLog:
    """One run's log budget: what its agent events stored, and how many were not kept."""

    limit: int
    stored: int = 0
    reported: int = 0
    """Agent events put in the runner-wide stream."""
    lines_not_kept: int = 0
    told: bool = False
    """Whether the run's stream already says that the budget ran out."""

    def admit(self, event: RunEvent) -> list[Entry]:
        """The entries to store for `event`: none when its line is over the budget, and a
        notice the first time that happens. The run's last word says how many were not
        kept."""
        if isinstance(event, RunFinished):
            if self.lines_not_kept:
                event = event.model_copy(update={"lines_not_kept": self.lines_not_kept})
            return [whole(event)]
        if not isinstance(event, AGENT_EVENTS):
            return [whole(event)]
        shared = self.reported < REPORT_ENTRIES_MAX
        report = cut(event, REPORT_LINE_MAX_BYTES) if shared else None
        entry = Entry(cut(event, LINE_MAX_BYTES), report, agent=True)
        if self.stored + entry.size <= self.limit:
            self.stored += entry.size
            self.reported += shared
            return [entry]
        self.lines_not_kept += 1
        if self.told:
            return []
        self.told = True
        return [whole(LogLimited(limit_bytes=self.limit))]

    def dropped(self, lines: int = 1) -> None:
        """`lines` admitted earlier could not be kept after all (no room to wait in)."""
        self.lines_not_kept += lines


def whole(event: RunEvent) -> Entry:
    payload = event.model_dump_json()
    return Entry(payload, payload, agent=False)


def cut(event: BaseModel, max_bytes: int) -> str:
    """`event` as JSON of at most `max_bytes` (UTF-8): its longest texts cut, each ending
    with `CUT_MARKER`. A text keeps the share of its characters that fits; after a few
    tries (characters of very different widths), as many fewer characters as bytes are
    over, which always fits (a character takes a byte at least) or empties that text."""
    payload = event.model_dump_json()
    size = len(payload.encode())
    texts = {k: v for k, v in event.model_dump().items() if isinstance(v, str)}
    keep = {k: len(v) for k, v in texts.items()}
    tries = 0
    while size > max_bytes and any(keep.values()):
        name = max(keep, key=lambda k: keep[k])
        over = size - max_bytes + _json_bytes(CUT_MARKER)
        weight = _json_bytes(texts[name][: keep[name]])
        tries += 1
        if tries <= 4 and weight > over:
            keep[name] = keep[name] * (weight - over) // weight
        else:
            keep[name] = max(0, keep[name] - over)
        shorter = {k: texts[k][: keep[k]] + CUT_MARKER for k in texts if keep[k] < len(texts[k])}
        payload = event.model_copy(update=shorter).model_dump_json()
        size = len(payload.encode())
    return payload


def _json_bytes(text: str) -> int:
    """What `text` takes inside a JSON string, in UTF-8."""
    return len(json.dumps(text, ensure_ascii=False).encode()) - 2


def stamped(payload: str, lines_not_kept: int) -> str:
    """A stored `RunFinished` that also counts `lines_not_kept` more lines (any other
    payload as it is)."""
    try:
        data = json.loads(payload)
    except ValueError:
        return payload
    if not isinstance(data, dict) or data.get("type") != "finished":
        return payload
    data["lines_not_kept"] = int(data.get("lines_not_kept") or 0) + lines_not_kept
    return json.dumps(data, ensure_ascii=False)
