"""The `script` agent: the prompt is a bash script, run as is inside the container.

Every output line is shown as an AssistantMessage, except a line holding a JSON
object whose `type` names a normalised event (`{"type": "tool_call", "name": "x"}`):
that line is that event, so scripts and tests can emit real events.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import ValidationError

from runner.agents.base import AgentAdapter, checked_prompt, load_object
from runner.events import AgentEvent, AssistantMessage, agent_event_adapter


class ScriptAdapter(AgentAdapter):
    """Runs the prompt with `bash -c`; needs no API key."""

    name: ClassVar[str] = "script"
    description: ClassVar[str] = "a bash script given as the prompt (tests and automation)"
    secret_env: ClassVar[tuple[str, ...]] = ()
    takes_context: ClassVar[bool] = False  # the prompt is a script: wrapping would break it

    def command(self, prompt: str, *, resume: bool, read_only: bool = False) -> list[str]:
        # `--` lets a script that starts with "-" still be the script.
        return ["bash", "-c", "--", checked_prompt(prompt)]

    def parse_line(self, line: str) -> list[AgentEvent]:
        text = line.rstrip("\r\n")
        if not text.strip():
            return []
        obj = load_object(text)
        if obj is not None and isinstance(obj.get("type"), str):
            try:
                return [agent_event_adapter.validate_python(obj)]
            except ValidationError:
                pass
        return [AssistantMessage(text=text)]
