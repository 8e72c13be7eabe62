"""Claude Code: `claude -p --output-format stream-json --verbose`.

Each stdout line is one stream-json message: `system` (init names the model),
`assistant` (text and tool_use blocks), `user` (tool_result blocks) and the final
`result` (cost, tokens, success). Claude Code's on-disk session logs look similar
but carry camelCase bookkeeping keys (`parentUuid`, `sessionId`); they are not this
stream and are kept as RawLog.
"""

from __future__ import annotations

from typing import Any, ClassVar

from runner.agents.base import (
    JsonLinesAdapter,
    JsonObject,
    checked_prompt,
    compact_json,
    get_dict,
    get_float,
    get_int,
    get_list,
    get_opt_int,
    get_str,
)
from runner.events import (
    AgentEvent,
    AssistantMessage,
    FinalResult,
    RawLog,
    ToolCall,
    ToolResult,
    Usage,
    shorten,
)

_SESSION_LOG_KEYS = frozenset({"parentUuid", "isSidechain", "sessionId", "userType"})
_SKIPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})
_SUMMARY_KEYS = (
    "command",
    "file_path",
    "notebook_path",
    "pattern",
    "path",
    "url",
    "query",
    "description",
    "prompt",
)


def summarise_tool_input(name: str, tool_input: object) -> str:
    """A short, one-line form of a tool's input: the command, the file, the pattern…"""
    if not isinstance(tool_input, dict):
        return shorten(compact_json(tool_input)) if tool_input else ""
    if name == "Grep":
        pattern, where = get_str(tool_input, "pattern"), get_str(tool_input, "path")
        return shorten(f"{pattern} in {where}" if where else pattern)
    if name == "TodoWrite":
        return shorten(_todo_summary(get_list(tool_input, "todos")))
    for key in _SUMMARY_KEYS:
        value = tool_input.get(key)
        if isinstance(value, str) and value.strip():
            return shorten(value)
    return shorten(compact_json(tool_input)) if tool_input else ""


def _todo_summary(todos: list[Any]) -> str:
    items = [t for t in todos if isinstance(t, dict)]
    done = sum(1 for t in items if t.get("status") == "completed")
    active = next((get_str(t, "content") for t in items if t.get("status") == "in_progress"), "")
    return f"{done}/{len(items)} done" + (f"; now: {active}" if active else "")


def _tool_result_text(content: object) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content if isinstance(content, list) else []:
        if isinstance(block, dict) and block.get("type") == "text":
            parts.append(get_str(block, "text"))
        elif isinstance(block, dict):
            parts.append(f"[{get_str(block, 'type') or 'block'}]")
    return " ".join(parts)


class ClaudeAdapter(JsonLinesAdapter):
    """Claude Code in print mode, streaming JSON; `--continue` resumes the last session."""

    name: ClassVar[str] = "claude"
    description: ClassVar[str] = "Claude Code (Anthropic), stream-json output"
    secret_env: ClassVar[tuple[str, ...]] = ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN")
    api_hosts: ClassVar[tuple[str, ...]] = ("api.anthropic.com",)

    def __init__(self) -> None:
        self._init_model: str | None = None
        self._last_model: str | None = None

    def command(self, prompt: str, *, resume: bool, read_only: bool = False) -> list[str]:
        permissions = (
            ["--permission-mode", "plan"] if read_only else ["--dangerously-skip-permissions"]
        )
        argv = ["claude", "-p", "--output-format", "stream-json", "--verbose", *permissions]
        # `--continue` restores the session's cost: its result's total_cost_usd is then the
        # session's, and the run's part is what it adds to `session_cost_before`.
        if self.max_cost_usd is not None:  # Claude's own cap counts the session's total too
            argv += ["--max-budget-usd", f"{self.session_cost_before + self.max_cost_usd:.4f}"]
        return [*argv, *(["--continue"] if resume else []), "--", checked_prompt(prompt)]

    def parse_object(self, obj: JsonObject) -> list[AgentEvent] | None:
        if _SESSION_LOG_KEYS & obj.keys():
            return None
        kind = obj.get("type")
        if kind == "system":
            return self._system(obj)
        if kind == "assistant":
            return self._assistant(obj)
        if kind == "user":
            return self._user(obj)
        if kind == "result":
            return self._result(obj)
        return None

    def _system(self, obj: JsonObject) -> list[AgentEvent]:
        subtype = obj.get("subtype")
        if subtype == "init":
            self._init_model = get_str(obj, "model") or self._init_model
        elif subtype == "api_retry":
            return [RawLog(line=retry_text(obj))]
        return []

    def _assistant(self, obj: JsonObject) -> list[AgentEvent] | None:
        message = obj.get("message")
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            return None
        if obj.get("is_api_error_message") is True:
            # Claude's own stand-in reply for a failed API call: an error, said once.
            text = " ".join(get_str(b, "text") for b in get_list(message, "content")
                            if isinstance(b, dict)).strip()  # fmt: skip
            return self.report_error(text or "claude could not reach its API")
        model = get_str(message, "model")
        self._last_model = model if model and not model.startswith("<") else self._last_model
        if obj.get("is_partial") is True:
            return []  # the complete message follows
        events: list[AgentEvent] = []
        for block in get_list(message, "content"):
            if not isinstance(block, dict):
                continue
            kind = get_str(block, "type")
            if kind == "text":
                text = get_str(block, "text")
                if text.strip():
                    events.append(AssistantMessage(text=text))
            elif kind in ("tool_use", "server_tool_use"):
                name = get_str(block, "name") or "tool"
                events.append(
                    ToolCall(
                        name=name,
                        summary=summarise_tool_input(name, block.get("input")),
                        call_id=get_str(block, "id") or None,
                    )
                )
            elif kind not in _SKIPPED_BLOCKS:
                events.append(RawLog(line=shorten(compact_json(block), 1000)))
        return events

    def _user(self, obj: JsonObject) -> list[AgentEvent] | None:
        message = obj.get("message")
        if not isinstance(message, dict):
            return None
        events: list[AgentEvent] = []
        for block in get_list(message, "content"):
            if isinstance(block, dict) and block.get("type") == "tool_result":
                events.append(
                    ToolResult(
                        call_id=get_str(block, "tool_use_id") or None,
                        summary=shorten(_tool_result_text(block.get("content"))),
                        is_error=block.get("is_error") is True,
                    )
                )
        return events

    def _result(self, obj: JsonObject) -> list[AgentEvent]:
        # The action's hand-written sample has no subtype; real results always do.
        subtype = obj.get("subtype", "success")
        subtype = subtype if isinstance(subtype, str) else ""
        success = subtype == "success" and obj.get("is_error") is not True
        usage = get_dict(obj, "usage")
        total = get_float(obj, "total_cost_usd")
        events: list[AgentEvent] = [
            Usage(
                model=self._result_model(obj),
                input_tokens=get_int(usage, "input_tokens")
                + get_int(usage, "cache_creation_input_tokens"),
                output_tokens=get_int(usage, "output_tokens"),
                cache_read_tokens=get_int(usage, "cache_read_input_tokens"),
                cost_usd=None if total is None else self._run_cost(total),
            )
        ]
        if not success:
            events.extend(self.report_error(_error_message(obj, subtype)))
        events.append(
            FinalResult(
                success=success,
                text=get_str(obj, "result"),
                turns=get_opt_int(obj, "num_turns"),
                duration_ms=get_opt_int(obj, "duration_ms"),
            )
        )
        return events

    def _run_cost(self, session_total: float) -> float:
        """This run's part of the session's total. A total below what the session had cost
        before is a session that did not go on from there: all of it is this run's."""
        total = self.session_cost_usd = max(session_total, 0.0)
        before = self.session_cost_before
        return total - before if total >= before else total

    def _result_model(self, obj: JsonObject) -> str | None:
        if self._init_model:
            return self._init_model
        by_model = {k: v for k, v in get_dict(obj, "modelUsage").items() if isinstance(v, dict)}
        if by_model:
            return max(by_model, key=lambda m: get_float(by_model[m], "costUSD") or 0.0)
        return self._last_model


def _error_message(obj: JsonObject, subtype: str) -> str:
    errors = [e for e in get_list(obj, "errors") if isinstance(e, str)]
    detail = shorten("; ".join(errors) or get_str(obj, "result"), 1000)
    if subtype.startswith("error_"):
        head = "claude stopped: " + subtype.removeprefix("error_").replace("_", " ")
        return f"{head}: {detail}" if detail else head
    return detail or "claude reported an error"


def retry_text(obj: JsonObject) -> str:
    """`API unreachable, retry 4/10 in 13 s` for a `system`/`api_retry` message."""
    status = get_opt_int(obj, "error_status")
    error = get_str(obj, "error")
    if status is None and error in ("", "unknown"):
        what = "API unreachable"
    else:
        what = "API error " + " ".join(p for p in (str(status or ""), error) if p)
    attempt, most = get_opt_int(obj, "attempt"), get_opt_int(obj, "max_retries")
    count = f" {attempt}/{most}" if attempt and most else f" {attempt}" if attempt else ""
    delay = get_float(obj, "retry_delay_ms")
    wait = f" in {max(round(delay / 1000), 1)} s" if delay is not None else ""
    return f"{what}, retry{count}{wait}"
