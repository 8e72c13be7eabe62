"""Agent adapters: how to start each agent CLI and how to read what it prints."""

from __future__ import annotations

from runner.agents.aider import AiderAdapter
from runner.agents.base import AgentAdapter
from runner.agents.claude import ClaudeAdapter
from runner.agents.codex import CodexAdapter
from runner.agents.script import ScriptAdapter
from runner.errors import TrimoError

ADAPTERS: dict[str, type[AgentAdapter]] = {
    adapter.name: adapter for adapter in (ClaudeAdapter, CodexAdapter, AiderAdapter, ScriptAdapter)
}


def get_adapter(name: str) -> AgentAdapter:
    """A fresh adapter (adapters keep per-run state) for the agent called `name`."""
    adapter = ADAPTERS.get(name)
    if adapter is None:
        raise TrimoError(
            f"unknown agent {name!r}",
            hint="known agents: " + ", ".join(sorted(ADAPTERS)),
        )
    return adapter()


__all__ = ["ADAPTERS", "AgentAdapter", "get_adapter"]
