"""Codex CLI: `codex exec --json`.

Each stdout line is a thread event: `thread.started`, `turn.started`,
`item.started` / `item.updated` / `item.completed` (agent_message, reasoning,
command_execution, file_change, mcp_tool_call, web_search, todo_list, error),
`turn.completed` (usage), `turn.failed` and `error`. Codex's on-disk rollout files
(`{timestamp, type, payload}`) and its human-readable output are not this stream
and are kept as RawLog.
"""

from __future__ import annotations

from typing import Any, ClassVar

from runner.agents.base import (
    JsonLinesAdapter,
    JsonObject,
    checked_prompt,
    compact_json,
    get_dict,
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

MODEL_TYPE = "trimo_codex_model"
# `codex exec` reads its API key from CODEX_API_KEY, not OPENAI_API_KEY. Its JSON
# stream never names the model, so when codex ends the model of its newest session
# (the rollout's `turn_context`) is printed as one line. The prompt stays an
# argument ("$@") of this fixed script and is never read by the shell.
_LAUNCHER = (
    'if [ -z "${CODEX_API_KEY:-}" ] && [ -n "${OPENAI_API_KEY:-}" ]; then '
    'export CODEX_API_KEY="$OPENAI_API_KEY"; fi; '
    "\"$@\" & pid=$!; trap 'kill -TERM $pid 2>/dev/null' TERM INT; "
    "wait $pid; rc=$?; if [ $rc -gt 128 ]; then wait $pid; rc=$?; fi; "
    'f=$(ls -t "${CODEX_HOME:-$HOME/.codex}"/sessions/*/*/*/rollout-*.jsonl 2>/dev/null '
    "| head -n 1); "
    'm=$(grep -m 1 \'"type":"turn_context"\' "$f" 2>/dev/null '
    '| grep -o \'"model":"[^"]*"\' | head -n 1 | cut -d \'"\' -f 4); '
    f'if [ -n "$m" ]; then printf \'{{"type":"{MODEL_TYPE}","model":"%s"}}\\n\' "$m"; fi; '
    "exit $rc"
)
_RETRY_PREFIX = "Reconnecting..."


class CodexAdapter(JsonLinesAdapter):
    """Codex CLI in exec mode with JSON Lines output, approvals and its own sandbox off."""

    name: ClassVar[str] = "codex"
    description: ClassVar[str] = "Codex CLI (OpenAI), exec --json output"
    secret_env: ClassVar[tuple[str, ...]] = ("OPENAI_API_KEY", "CODEX_API_KEY")
    api_hosts: ClassVar[tuple[str, ...]] = ("api.openai.com", "chatgpt.com", "auth.openai.com")

    def __init__(self) -> None:
        self._announced: set[str] = set()
        self._last_message = ""

    def command(self, prompt: str, *, resume: bool, read_only: bool = False) -> list[str]:
        sandbox = (
            ["--sandbox", "read-only"]
            if read_only
            else ["--dangerously-bypass-approvals-and-sandbox"]
        )
        return [
            "bash",
            "-c",
            _LAUNCHER,
            "codex-launcher",
            "codex",
            "exec",
            "--json",
            "--skip-git-repo-check",
            *sandbox,
            "--",
            checked_prompt(prompt),
        ]

    def parse_object(self, obj: JsonObject) -> list[AgentEvent] | None:
        kind = obj.get("type")
        if kind in ("thread.started", "turn.started"):
            return []
        if kind == "turn.completed":
            return self._turn_completed(get_dict(obj, "usage"))
        if kind == MODEL_TYPE:
            model = get_str(obj, "model")
            return [Usage(model=model)] if model else []
        if kind == "turn.failed":
            message = get_str(get_dict(obj, "error"), "message") or "the turn failed"
            return [*self.report_error(message), FinalResult(success=False, text=message)]
        if kind == "error":
            message = get_str(obj, "message") or "codex reported an error"
            if message.startswith(_RETRY_PREFIX):  # codex retries by itself: show, go on
                return [
                    RawLog(
                        line="API unreachable, retry " + message.removeprefix(_RETRY_PREFIX).strip()
                    )
                ]
            return self.report_error(message)
        if kind in ("item.started", "item.updated", "item.completed"):
            item = obj.get("item")
            if not isinstance(item, dict):
                return None
            return self._item(kind.removeprefix("item."), item)
        return None

    def _turn_completed(self, usage: JsonObject) -> list[AgentEvent]:
        # Codex counts cached tokens inside input_tokens; Usage keeps them apart.
        cached = get_int(usage, "cached_input_tokens")
        return [
            Usage(
                input_tokens=max(get_int(usage, "input_tokens") - cached, 0),
                output_tokens=get_int(usage, "output_tokens"),
                cache_read_tokens=cached,
            ),
            FinalResult(success=True, text=self._last_message),
        ]

    def _item(self, phase: str, item: JsonObject) -> list[AgentEvent] | None:
        kind = get_str(item, "type") or get_str(item, "item_type")
        item_id = get_str(item, "id") or None
        if kind in ("agent_message", "assistant_message"):
            if phase != "completed":
                return []
            self._last_message = get_str(item, "text")
            return [AssistantMessage(text=self._last_message)] if self._last_message else []
        if kind == "reasoning":
            return []
        if kind == "error":
            return self.report_error(get_str(item, "message") or "codex item error")
        if kind == "todo_list":
            if phase == "completed":
                return []
            return [ToolCall(name="todo", summary=_todo_summary(item), call_id=item_id)]
        call = _tool_call(kind, item, item_id)
        if call is None:
            return None
        events: list[AgentEvent] = []
        if phase != "updated" and self._first_sight(item_id):
            events.append(call)
        if phase == "completed":
            events.extend(_tool_result(kind, item, item_id))
        return events

    def _first_sight(self, item_id: str | None) -> bool:
        if item_id is None:
            return True
        seen = item_id in self._announced
        self._announced.add(item_id)
        return not seen


def _tool_call(kind: str, item: JsonObject, item_id: str | None) -> ToolCall | None:
    if kind == "command_execution":
        return ToolCall(name="shell", summary=shorten(get_str(item, "command")), call_id=item_id)
    if kind == "file_change":
        changes = [c for c in get_list(item, "changes") if isinstance(c, dict)]
        paths = ", ".join(f"{get_str(c, 'kind')} {get_str(c, 'path')}".strip() for c in changes)
        return ToolCall(name="edit", summary=shorten(paths), call_id=item_id)
    if kind == "mcp_tool_call":
        server, tool = get_str(item, "server"), get_str(item, "tool") or "mcp"
        arguments = item.get("arguments")
        return ToolCall(
            name=f"{server}.{tool}" if server else tool,
            summary=shorten(compact_json(arguments)) if arguments else "",
            call_id=item_id,
        )
    if kind == "web_search":
        return ToolCall(name="web_search", summary=shorten(get_str(item, "query")), call_id=item_id)
    return None


def _tool_result(kind: str, item: JsonObject, item_id: str | None) -> list[AgentEvent]:
    status = get_str(item, "status")
    if kind == "command_execution":
        code = get_opt_int(item, "exit_code")
        output = get_str(item, "aggregated_output")
        head = f"exit {code}" if code is not None else status or "done"
        failed = (code is not None and code != 0) or status in ("failed", "declined")
        summary = shorten(f"{head}: {output}" if output.strip() else head)
        return [ToolResult(call_id=item_id, summary=summary, is_error=failed)]
    if kind == "file_change" and status == "failed":
        return [ToolResult(call_id=item_id, summary="patch failed", is_error=True)]
    if kind == "mcp_tool_call":
        error = get_str(get_dict(item, "error"), "message")
        content = get_list(get_dict(item, "result"), "content")
        text = " ".join(_block_text(b) for b in content)
        return [
            ToolResult(
                call_id=item_id,
                summary=shorten(error or text or status),
                is_error=bool(error) or status == "failed",
            )
        ]
    return []


def _block_text(block: Any) -> str:
    if isinstance(block, dict):
        return get_str(block, "text") or f"[{get_str(block, 'type') or 'block'}]"
    return ""


def _todo_summary(item: JsonObject) -> str:
    todos = [t for t in get_list(item, "items") if isinstance(t, dict)]
    done = sum(1 for t in todos if t.get("completed") is True)
    upcoming = next((get_str(t, "text") for t in todos if t.get("completed") is not True), "")
    return shorten(f"{done}/{len(todos)} done" + (f"; next: {upcoming}" if upcoming else ""))
