"""An agent's last word: what a discovery run answers with (its findings and plan).

Claude Code and Codex end with a final result that carries their last message; for agents
without one (aider, a script) it is what they said after their last tool call. The text is
the agent's: control characters are dropped and its length is capped, here and again
wherever it is shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runner.contract import MAX_PLAN_CHARS
from runner.events import AgentEvent, AssistantMessage, FinalResult, ToolCall
from runner.printable import printable

MAX_MESSAGES = 2_000
"""Messages kept since the last tool call (a script's plan is one message per line)."""
MAX_SAID_CHARS = 2 * MAX_PLAN_CHARS
"""Characters kept of those messages: the plan is their start, and an agent printing long
lines without end must not fill the runner's memory."""


@dataclass
class LastWord:
    """Folds an agent's events into its final message."""

    result: str = ""
    said: list[str] = field(default_factory=list)
    said_chars: int = 0

    def observe(self, event: AgentEvent) -> None:
        if isinstance(event, FinalResult):
            self.result = event.text if event.text.strip() else self.result
        elif isinstance(event, ToolCall):
            self.said.clear()
            self.said_chars = 0
        elif isinstance(event, AssistantMessage) and len(self.said) < MAX_MESSAGES:
            room = MAX_SAID_CHARS - self.said_chars
            if room > 0:
                self.said.append(event.text[:room])
                self.said_chars += len(self.said[-1])

    def text(self) -> str:
        final = self.result if self.result.strip() else "\n".join(self.said)
        return printable(final.strip(), MAX_PLAN_CHARS)
