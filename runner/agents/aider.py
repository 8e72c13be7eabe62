"""Aider: one non-interactive `--message`, plain-text output, its own commits.

Aider prints plain text, so each non-blank line is read like this:
- `Applied edit to X`      -> ToolCall("edit", X)
- `Commit <sha> <subject>` -> ToolResult (aider committed its work)
- `Failed to apply edit…`  -> ToolResult with is_error
- `Tokens: … Cost: …`      -> Usage for that message (the run's total is their sum)
- `litellm.…Error…`, `Unable to commit: …` -> AgentError
- aider's own start-up banner (version, model, repo, repo-map) -> RawLog
- anything else is the model talking (including its edit blocks) -> AssistantMessage
"""

from __future__ import annotations

import re
from typing import ClassVar

from runner.agents.base import AgentAdapter, checked_prompt, raw
from runner.events import (
    AgentError,
    AgentEvent,
    AssistantMessage,
    ToolCall,
    ToolResult,
    Usage,
    shorten,
)

_EDIT = re.compile(r"^Applied edit to (?P<path>.+)$")
_FAILED_EDIT = re.compile(r"^Failed to apply edit to (?P<path>.+)$")
_COMMIT = re.compile(r"^Commit (?P<sha>[0-9a-f]{7,40}) (?P<subject>.*)$")
_TOKENS = re.compile(r"^Tokens: ")
_TOKEN_COUNT = re.compile(
    r"(?P<n>\d+(?:\.\d+)?)(?P<k>k?) (?P<what>sent|cache write|cache hit|cache read|received)"
)
_MESSAGE_COST = re.compile(r"\$(?P<usd>\d+(?:\.\d+)?) message")
_MODEL = re.compile(r"^(?:Main model|Model): (?P<model>\S+)")
_ERROR = re.compile(r"^(?:litellm\.\w*(?:Error|Exception)|Unable to commit:)")
_BANNER = re.compile(
    r"^(?:Aider v\d|Main model:|Model:|Weak model:|Editor model:|Git repo:|Repo-map:"
    r"|Use /help|Cur working dir:|Git working dir:)"
)


def _count(number: str, kilo: str) -> int:
    """A token count as aider printed it (`1.2k`); one too large to be real (the model's
    text can print this line too) is none."""
    count = float(number) * (1000 if kilo else 1)
    return round(count) if count < 1e15 else 0


class AiderAdapter(AgentAdapter):
    """Aider with `--yes-always`: it edits, auto-commits, and exits after one message."""

    name: ClassVar[str] = "aider"
    description: ClassVar[str] = "Aider, one non-interactive message, auto-commits"
    secret_env: ClassVar[tuple[str, ...]] = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")
    api_hosts: ClassVar[tuple[str, ...]] = ("api.anthropic.com", "api.openai.com")

    def __init__(self) -> None:
        self._model: str | None = None

    def command(self, prompt: str, *, resume: bool, read_only: bool = False) -> list[str]:
        # Aider's `ask` chat mode answers questions about the code and edits nothing.
        read_only_flags = ["--chat-mode", "ask", "--no-auto-commits"] if read_only else []
        return [
            "aider",
            *read_only_flags,
            "--yes-always",
            "--no-pretty",
            "--no-stream",
            "--no-fancy-input",
            "--no-check-update",
            "--no-show-release-notes",
            "--no-analytics",
            "--no-detect-urls",
            "--no-suggest-shell-commands",
            # `=` keeps a prompt that starts with "-" from being read as an option.
            f"--message={checked_prompt(prompt)}",
        ]

    def parse_line(self, line: str) -> list[AgentEvent]:
        text = line.rstrip("\r\n")
        if not text.strip():
            return []
        stripped = text.strip()
        if match := _EDIT.match(stripped):
            return [ToolCall(name="edit", summary=shorten(match["path"]))]
        if _FAILED_EDIT.match(stripped):
            return [ToolResult(summary=stripped, is_error=True)]
        if match := _COMMIT.match(stripped):
            return [ToolResult(summary=f"commit {match['sha']} {match['subject']}".strip())]
        if _TOKENS.match(stripped):
            return [self._usage(stripped)]
        if _ERROR.match(stripped):
            return [AgentError(message=stripped)]
        if match := _MODEL.match(stripped):
            self._model = match["model"]
        if _BANNER.match(stripped):
            return raw(text)
        return [AssistantMessage(text=text)]

    def _usage(self, line: str) -> Usage:
        counts: dict[str, int] = {}
        for match in _TOKEN_COUNT.finditer(line):
            counts[match["what"]] = counts.get(match["what"], 0) + _count(match["n"], match["k"])
        cost = _MESSAGE_COST.search(line)
        return Usage(
            model=self._model,
            input_tokens=counts.get("sent", 0),
            output_tokens=counts.get("received", 0),
            cache_read_tokens=counts.get("cache hit", 0) + counts.get("cache read", 0),
            cost_usd=float(cost["usd"]) if cost else None,
        )
