"""Normalised events: what every agent adapter turns its output into.

The same stream is shown in the terminal by `trimo run`, published to Redis by
runner daemons, and rendered on GitHub by the App.
"""

from __future__ import annotations

import math
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)


class AssistantMessage(_Event):
    """Text the agent said."""

    type: Literal["message"] = "message"
    text: str


class ToolCall(_Event):
    """The agent used a tool; `summary` is a short, one-line form of its input."""

    type: Literal["tool_call"] = "tool_call"
    name: str
    summary: str = ""
    call_id: str | None = None


class ToolResult(_Event):
    """What a tool call returned (shortened)."""

    type: Literal["tool_result"] = "tool_result"
    call_id: str | None = None
    summary: str = ""
    is_error: bool = False


MAX_TOKENS: Final = 10**12
"""The most tokens one usage report counts, in each kind: more is the agent's boast, and
counting it would overflow every float it meets (a table's `12.3k`, a sum)."""
MAX_COST_USD: Final = 1e6
"""The most dollars one usage report counts (more overflows in micro-dollars)."""


def _cost(value: float | None) -> float | None:
    """A reported cost that is not a finite amount of zero or more is no report: summed, it
    would take back cost already counted (negative) or stop the counting (NaN). A huge one
    counts as `MAX_COST_USD`: still over any budget, and still a number."""
    if value is None or not math.isfinite(value) or value < 0:
        return None
    return min(value, MAX_COST_USD)


Tokens = Annotated[int, AfterValidator(lambda value: min(max(value, 0), MAX_TOKENS))]
Cost = Annotated[float | None, AfterValidator(_cost)]


class Usage(_Event):
    """Tokens and cost, when the agent reports them (what it reports is the agent's word:
    it may leave cost out, never take counted cost back)."""

    type: Literal["usage"] = "usage"
    model: str | None = None
    input_tokens: Tokens = 0
    output_tokens: Tokens = 0
    cache_read_tokens: Tokens = 0
    cost_usd: Cost = None


class AgentError(_Event):
    """The agent reported an error."""

    type: Literal["error"] = "error"
    message: str


class FinalResult(_Event):
    """The agent's own final word on the run."""

    type: Literal["result"] = "result"
    success: bool
    text: str = ""
    turns: int | None = None
    duration_ms: int | None = None


class RawLog(_Event):
    """A line that was not in the agent's expected format."""

    type: Literal["log"] = "log"
    line: str


AgentEvent = Annotated[
    AssistantMessage | ToolCall | ToolResult | Usage | AgentError | FinalResult | RawLog,
    Field(discriminator="type"),
]

agent_event_adapter: TypeAdapter[AgentEvent] = TypeAdapter(AgentEvent)


def shorten(text: str, limit: int = 160) -> str:
    """One line, at most `limit` characters, for summaries of tool input and output."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def add_usage(total: Usage | None, more: Usage) -> Usage:
    """`total` and `more` together (a cost is None only when neither reported one)."""
    if total is None:
        return more
    cost = (
        None
        if total.cost_usd is None and more.cost_usd is None
        else (total.cost_usd or 0) + (more.cost_usd or 0)
    )
    return Usage(
        model=more.model or total.model,
        input_tokens=total.input_tokens + more.input_tokens,
        output_tokens=total.output_tokens + more.output_tokens,
        cache_read_tokens=total.cache_read_tokens + more.cache_read_tokens,
        cost_usd=cost,
    )
