"""The adapter interface, and helpers for agents that print one JSON object per line.

An adapter instance belongs to one run: some adapters keep a little state between
lines (the model seen at start, the last message) to fill in the final events.
Usage events are increments: a run's usage is the sum of its Usage events.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from runner.errors import TrimoError
from runner.events import AgentError, AgentEvent, RawLog

JsonObject = dict[str, Any]


class AgentAdapter(ABC):
    """Turns an agent CLI into a container command, and its output into normalised events."""

    name: ClassVar[str]
    description: ClassVar[str]
    secret_env: ClassVar[tuple[str, ...]]
    """Environment variables the agent can use (API keys); any one of them may be enough."""
    takes_context: ClassVar[bool] = True
    """Whether the prompt given to `command` may be wrapped with the pipeline's history."""
    api_hosts: ClassVar[tuple[str, ...]] = ()
    """Host names the agent must reach (its model's API), allowed on an `allowlist` network."""
    reported_error: str | None = None
    """The agent's own last reported error: the run's failure reason when the run fails."""
    session_cost_before: float = 0.0
    """What the session this run continues had cost before it, as the host noted it after
    the pipeline's earlier runs: set by the runner before the agent starts."""
    max_cost_usd: float | None = None
    """The run's budget, set by the runner before `command`: an agent that can cap its own
    spending is told it (the runner stops any agent whose reported cost crosses it)."""
    session_cost_usd: float | None = None
    """The session's running cost, as the agent last reported it (for an agent that reports
    its session's total, not its run's): the host notes it for the next continued run."""

    def report_error(self, message: str) -> list[AgentEvent]:
        """An AgentError for `message`, remembered as the failure reason; a repeat is dropped."""
        message = message.strip()
        if not message or message == self.reported_error:
            return []
        self.reported_error = message
        return [AgentError(message=message)]

    @abstractmethod
    def command(self, prompt: str, *, resume: bool, read_only: bool = False) -> list[str]:
        """The argv run inside the container; the prompt is passed as one argv item.

        `read_only` (a discovery run): the agent's own read-only mode, where it has one."""

    @abstractmethod
    def parse_line(self, line: str) -> list[AgentEvent]:
        """Events for one line of the agent's stdout; never raises."""


def checked_prompt(prompt: str) -> str:
    """The prompt as one argv item: NUL bytes removed, refused if nothing is left."""
    cleaned = prompt.replace("\x00", "")
    if not cleaned.strip():
        raise TrimoError("the prompt is empty", hint="say what the agent should do")
    return cleaned


def raw(line: str) -> list[AgentEvent]:
    """A line outside the expected format: kept as a log line, or dropped if blank."""
    text = line.rstrip("\r\n")
    return [RawLog(line=text)] if text.strip() else []


def load_object(line: str) -> JsonObject | None:
    """The JSON object on this line, or None when the line is not one."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


class JsonLinesAdapter(AgentAdapter):
    """An agent whose stdout is JSON Lines: anything else on stdout becomes RawLog."""

    def parse_line(self, line: str) -> list[AgentEvent]:
        if not line.strip():
            return []
        obj = load_object(line)
        if obj is None:
            return raw(line)
        try:
            events = self.parse_object(obj)
        except Exception:  # a parser bug must never stop a run: show the line as it came
            return raw(line)
        return raw(line) if events is None else events

    @abstractmethod
    def parse_object(self, obj: JsonObject) -> list[AgentEvent] | None:
        """Events for one JSON object, or None when it is not in this agent's format."""


def get_str(obj: JsonObject, key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def get_int(obj: JsonObject, key: str) -> int:
    value = obj.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def get_opt_int(obj: JsonObject, key: str) -> int | None:
    value = obj.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def get_float(obj: JsonObject, key: str) -> float | None:
    value = obj.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def get_dict(obj: JsonObject, key: str) -> JsonObject:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def get_list(obj: JsonObject, key: str) -> list[Any]:
    value = obj.get(key)
    return value if isinstance(value, list) else []


def compact_json(value: object) -> str:
    """A one-line JSON form of a tool's input, for summaries."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except (TypeError, ValueError, RecursionError):
        return str(value)
