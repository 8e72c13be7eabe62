"""Agent adapters against every agent capture in the corpora, and against junk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from runner import contract
from runner.agents import ADAPTERS, AgentAdapter, get_adapter
from runner.agents.base import JsonLinesAdapter, JsonObject
from runner.agents.claude import summarise_tool_input
from runner.attempt import agent_prompt
from runner.errors import TrimoError
from runner.events import (
    AgentError,
    AgentEvent,
    AssistantMessage,
    FinalResult,
    RawLog,
    ToolCall,
    ToolResult,
    Usage,
    agent_event_adapter,
    shorten,
)
from runner.job import RepoRef, ReviewContext, RunRequest
from tests.conftest import CORPORA

AGENTS = CORPORA / "agents"
CLAUDE_STREAM = sorted([*AGENTS.glob("claude/*.json"), *AGENTS.glob("claude/*.jsonl")])
CODEX_STREAM = sorted(AGENTS.glob("codex/*.jsonl"))
CLAUDE_NOT_STREAM = sorted(AGENTS.glob("claude/session-log-format/*"))
CODEX_NOT_STREAM = sorted(AGENTS.glob("codex/rollout-format/*"))
CODEX_HUMAN_TEXT = sorted(AGENTS.glob("codex/*.human-text.txt"))
DOCS = sorted(AGENTS.glob("**/*.md"))

T = TypeVar("T")


def ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(AGENTS)) for p in paths]


def stream_lines(path: Path) -> list[str]:
    """A capture as the lines an agent would print: single JSON documents become one line."""
    if path.suffix in (".jsonl", ".txt"):
        return path.read_text(encoding="utf-8").splitlines()
    value = json.loads(path.read_text(encoding="utf-8"))
    return [json.dumps(item) for item in (value if isinstance(value, list) else [value])]


def objects(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream_lines(path) if line.strip()]


def feed(adapter: AgentAdapter, lines: list[str]) -> list[AgentEvent]:
    return [event for line in lines for event in adapter.parse_line(line)]


def parse_file(agent: str, path: Path) -> list[AgentEvent]:
    return feed(get_adapter(agent), stream_lines(path))


def of_type(events: list[AgentEvent], kind: type[T]) -> list[T]:
    return [e for e in events if isinstance(e, kind)]


def assert_valid(events: list[AgentEvent]) -> None:
    for event in events:
        assert agent_event_adapter.validate_json(event.model_dump_json()) == event


# -- every file is covered -------------------------------------------------------------------


def test_every_agent_corpus_file_is_in_a_table() -> None:
    tables = [
        CLAUDE_STREAM,
        CODEX_STREAM,
        CLAUDE_NOT_STREAM,
        CODEX_NOT_STREAM,
        CODEX_HUMAN_TEXT,
        DOCS,
    ]
    covered = [p for table in tables for p in table]
    assert len(covered) == len(set(covered))
    assert set(covered) == {p for p in AGENTS.rglob("*") if p.is_file()}
    assert CLAUDE_STREAM and CODEX_STREAM and CLAUDE_NOT_STREAM and CODEX_NOT_STREAM


# -- stream-json and exec --json captures ----------------------------------------------------

EXPECTED_KINDS = {
    "claude/claude-code-action.sample-turns.json": ["message", "tool_call", "tool_result"] * 3
    + ["message", "usage", "result"],
    "claude/gleam.assistant_message.json": ["tool_call"],
    "claude/gleam.assistant_partial_false.json": ["message"],
    "claude/gleam.assistant_partial_true.json": [],
    "claude/gleam.assistant_unknown_block.json": ["message", "log"],
    "claude/gleam.golden.basic_query.v2.1.7.jsonl": ["message", "usage", "result"],
    "claude/gleam.nested_content_blocks.json": ["message", "tool_call", "message", "tool_call"],
    "claude/gleam.permission_denial.json": ["log"],
    "claude/gleam.result_error.json": ["usage", "error", "result"],
    "claude/gleam.result_success.json": ["usage", "result"],
    "claude/gleam.system_message.json": [],
    "claude/gleam.unknown_content_block.json": ["log"],
    "claude/gleam.unknown_message_type.json": ["log"],
    "claude/gleam.user_message.json": ["tool_result"],
    "claude/gleam.v2.1.3.ls-session.assembled.jsonl": [
        "tool_call",
        "tool_result",
        "usage",
        "result",
    ],
    "codex/agentcmd.exec-json.v0.46.stream-output-1.jsonl": ["message", "usage", "result"],
    "codex/agentcmd.exec-json.v0.46.stream-output-2.jsonl": [
        "tool_call",
        "tool_result",
        "message",
        "usage",
        "result",
    ],
    "codex/agentcmd.exec-json.v0.46.stream-output-3.jsonl": [
        "tool_call",
        "message",
        "usage",
        "result",
    ],
    "codex/agentcmd.exec-json.v0.46.stream-output-4.jsonl": [
        "tool_call",
        "tool_result",
        "message",
        "usage",
        "result",
    ],
    "codex/agentcmd.exec-json.v0.46.stream-output-5.jsonl": [
        "tool_call",
        "tool_result",
        "message",
        "usage",
        "result",
    ],
    "codex/openai-codex.docs-exec-md.sample.jsonl": [
        "tool_call",
        "tool_result",
        "message",
        "usage",
        "result",
    ],
}

STREAM_FILES = [("claude", p) for p in CLAUDE_STREAM] + [("codex", p) for p in CODEX_STREAM]


@pytest.mark.parametrize(("agent", "path"), STREAM_FILES, ids=ids([p for _, p in STREAM_FILES]))
def test_stream_capture_yields_expected_kinds(agent: str, path: Path) -> None:
    events = parse_file(agent, path)
    assert_valid(events)
    assert [e.type for e in events] == EXPECTED_KINDS[str(path.relative_to(AGENTS))]


@pytest.mark.parametrize("path", CLAUDE_STREAM, ids=ids(CLAUDE_STREAM))
def test_claude_capture_matches_file_content(path: Path) -> None:
    """Tool calls, results and the final word carry the file's own values."""
    events = parse_file("claude", path)
    objs = objects(path)
    blocks = [
        b
        for o in objs
        if o.get("type") == "assistant" and not o.get("is_partial")
        for b in o["message"]["content"]
    ]
    assert [(c.name, c.call_id) for c in of_type(events, ToolCall)] == [
        (b["name"], b["id"]) for b in blocks if b["type"] == "tool_use"
    ]
    assert [m.text for m in of_type(events, AssistantMessage)] == [
        b["text"] for b in blocks if b["type"] == "text"
    ]
    results = [b for o in objs if o.get("type") == "user" for b in o["message"]["content"]]
    assert [(r.call_id, r.is_error) for r in of_type(events, ToolResult)] == [
        (b["tool_use_id"], b["is_error"]) for b in results
    ]
    final = [o for o in objs if o.get("type") == "result"]
    assert [(f.text, f.duration_ms) for f in of_type(events, FinalResult)] == [
        (o["result"], o["duration_ms"]) for o in final
    ]
    assert [u.cost_usd for u in of_type(events, Usage)] == [o["total_cost_usd"] for o in final]


def test_claude_golden_capture() -> None:
    path = AGENTS / "claude/gleam.golden.basic_query.v2.1.7.jsonl"
    init, _, result = objects(path)
    events = parse_file("claude", path)
    (usage,) = of_type(events, Usage)
    assert usage.cost_usd is not None and usage.cost_usd > 0
    assert usage.cost_usd == result["total_cost_usd"]
    assert usage.model == init["model"]
    tokens = result["usage"]
    assert usage.input_tokens == tokens["input_tokens"] + tokens["cache_creation_input_tokens"]
    assert usage.output_tokens == tokens["output_tokens"]
    assert usage.cache_read_tokens == tokens["cache_read_input_tokens"]
    (final,) = of_type(events, FinalResult)
    assert final.success is True
    assert (final.text, final.turns) == (result["result"], result["num_turns"])
    assert not of_type(events, AgentError)


def test_claude_real_session_has_tool_call_and_result() -> None:
    path = AGENTS / "claude/gleam.v2.1.3.ls-session.assembled.jsonl"
    _, assistant, user, _ = objects(path)
    tool_use = assistant["message"]["content"][0]
    events = parse_file("claude", path)
    (call,) = of_type(events, ToolCall)
    assert call == ToolCall(
        name="Bash", summary=tool_use["input"]["command"], call_id=tool_use["id"]
    )
    (result,) = of_type(events, ToolResult)
    assert result.call_id == call.call_id and not result.is_error
    assert result.summary.startswith(user["message"]["content"][0]["content"].split("\n")[0])
    assert "\n" not in result.summary
    (usage,) = of_type(events, Usage)
    assert usage.model == "claude-opus-4-5-20251101" and usage.cost_usd and usage.cost_usd > 0


def test_claude_result_error_is_a_failure() -> None:
    path = AGENTS / "claude/gleam.result_error.json"
    (obj,) = objects(path)
    events = parse_file("claude", path)
    (error,) = of_type(events, AgentError)
    assert obj["subtype"].removeprefix("error_").replace("_", " ") in error.message
    (final,) = of_type(events, FinalResult)
    assert final.success is False
    assert (final.turns, final.duration_ms) == (obj["num_turns"], obj["duration_ms"])


def test_claude_action_sample_reads_like_its_rendered_report() -> None:
    path = AGENTS / "claude/claude-code-action.sample-turns.json"
    events = parse_file("claude", path)
    report = (AGENTS / "claude/claude-code-action.sample-turns-expected-output.md").read_text()
    calls = of_type(events, ToolCall)
    for call in calls:
        assert f"### 🔧 `{call.name}`" in report
    assert [c.summary for c in calls] == [
        "/path/to/sample/file.py",
        "/path/to/sample/file.py",
        "sample/file.py",
    ]
    (final,) = of_type(events, FinalResult)
    assert final.success is True and final.text in report
    (usage,) = of_type(events, Usage)
    assert f"**Cost:** ${usage.cost_usd}" in report
    assert usage.model == "claude-test-model"  # from the assistant messages: no init model


def test_claude_partial_message_is_not_shown_twice() -> None:
    adapter = get_adapter("claude")
    partial = stream_lines(AGENTS / "claude/gleam.assistant_partial_true.json")
    complete = stream_lines(AGENTS / "claude/gleam.assistant_partial_false.json")
    assert feed(adapter, partial) == []
    assert feed(adapter, complete) == [AssistantMessage(text="Complete response.")]


@pytest.mark.parametrize("path", CODEX_STREAM, ids=ids(CODEX_STREAM))
def test_codex_capture_matches_file_content(path: Path) -> None:
    events = parse_file("codex", path)
    assert_codex_events_match(events, objects(path))


def assert_codex_events_match(events: list[AgentEvent], objs: list[dict[str, Any]]) -> None:
    items = [(o["type"], o["item"]) for o in objs if o["type"].startswith("item.")]
    commands = [i for t, i in items if t == "item.started" and i["type"] == "command_execution"]
    shell_calls = [c for c in of_type(events, ToolCall) if c.name == "shell"]
    assert [(c.call_id, c.summary) for c in shell_calls] == [
        (i["id"], shorten(i["command"])) for i in commands
    ]
    done = [i for t, i in items if t == "item.completed" and i["type"] == "command_execution"]
    results = [r for r in of_type(events, ToolResult) if r.call_id in {i["id"] for i in done}]
    assert [(r.call_id, r.is_error) for r in results] == [
        (i["id"], i["exit_code"] != 0) for i in done
    ]
    for result, item in zip(results, done, strict=True):
        assert result.summary.startswith(f"exit {item['exit_code']}")
    texts = [i["text"] for t, i in items if t == "item.completed" and i["type"] == "agent_message"]
    assert [m.text for m in of_type(events, AssistantMessage)] == texts
    turns = [o["usage"] for o in objs if o["type"] == "turn.completed"]
    assert [
        (u.input_tokens, u.cache_read_tokens, u.output_tokens) for u in of_type(events, Usage)
    ] == [
        (t["input_tokens"] - t["cached_input_tokens"], t["cached_input_tokens"], t["output_tokens"])
        for t in turns
    ]
    finals = of_type(events, FinalResult)
    assert len(finals) == len(turns) and all(f.success for f in finals)
    assert finals[-1].text == texts[-1]


def test_codex_file_change_is_an_edit_call() -> None:
    path = AGENTS / "codex/agentcmd.exec-json.v0.46.stream-output-3.jsonl"
    change = next(
        o["item"] for o in objects(path) if o.get("item", {}).get("type") == "file_change"
    )
    (call,) = of_type(parse_file("codex", path), ToolCall)
    assert call.name == "edit" and call.call_id == change["id"]
    assert change["changes"][0]["path"] in call.summary


# -- formats that are not the stream --------------------------------------------------------

NOT_STREAM_FILES = [("claude", p) for p in CLAUDE_NOT_STREAM] + [
    ("codex", p) for p in CODEX_NOT_STREAM
]
CROSS_FILES = [("codex", p) for p in CLAUDE_STREAM] + [("claude", p) for p in CODEX_STREAM]


@pytest.mark.parametrize(
    ("agent", "path"),
    NOT_STREAM_FILES + CROSS_FILES,
    ids=[
        f"{a}<-{i}"
        for (a, _), i in zip(
            NOT_STREAM_FILES + CROSS_FILES,
            ids([p for _, p in NOT_STREAM_FILES + CROSS_FILES]),
            strict=True,
        )
    ],
)
def test_other_formats_are_kept_as_raw_lines(agent: str, path: Path) -> None:
    lines = [line for line in stream_lines(path) if line.strip()]
    events = parse_file(agent, path)
    assert events == [RawLog(line=line) for line in lines]


@pytest.mark.parametrize("path", CODEX_HUMAN_TEXT, ids=ids(CODEX_HUMAN_TEXT))
def test_codex_human_text_is_rejected(path: Path) -> None:
    # This transcript ends with two real `codex exec --json` runs pasted after the
    # human-readable one; those lines are genuine events and are read as such.
    lines = stream_lines(path)
    first_json = next(i for i, line in enumerate(lines) if line.startswith('{"type":"thread.'))
    human, transcript = lines[:first_json], lines[first_json:]
    adapter = get_adapter("codex")
    human_events = feed(adapter, human)
    assert human_events == [RawLog(line=line) for line in human if line.strip()]
    json_lines = [line for line in transcript if line.startswith('{"type":')]
    other_lines = [line for line in transcript if line.strip() and line not in json_lines]
    events = feed(adapter, transcript)
    assert of_type(events, RawLog) == [RawLog(line=line) for line in other_lines]
    assert_codex_events_match(
        [e for e in events if not isinstance(e, RawLog)], [json.loads(line) for line in json_lines]
    )
    mcp = [c for c in of_type(events, ToolCall) if c.name == "aduib-mcp-sever.retrieve_qa_kb"]
    assert len(mcp) == 1
    assert any(r.is_error and r.call_id == mcp[0].call_id for r in of_type(events, ToolResult))


# -- junk never breaks a parser -------------------------------------------------------------

GARBAGE = [
    "",
    "   ",
    "\n",
    "\x00\xff\xfe binary \x1b[31m junk \x07",
    '{"type": "assistant", "message": {"content": [',
    "[1, 2, 3]",
    "42",
    "null",
    '"a string"',
    "{}",
    '{"type": null}',
    '{"type": 5, "message": []}',
    '{"type": "assistant", "message": "hi"}',
    '{"type": "assistant", "message": {"content": "plain"}}',
    '{"type": "assistant", "message": {"content": [1, null, {"type": "tool_use"}]}}',
    '{"type": "user", "message": {"content": [{"type": "tool_result", "content": 7}]}}',
    '{"type": "result", "subtype": 3, "usage": [], "total_cost_usd": "free"}',
    '{"type": "item.completed", "item": {"type": "command_execution", "exit_code": "x"}}',
    '{"type": "item.completed", "item": {"type": "file_change", "changes": [null, 1]}}',
    '{"type": "item.completed", "item": "nope"}',
    '{"type": "turn.completed", "usage": {"input_tokens": "many"}}',
    '{"type": "turn.failed", "error": "boom"}',
    "[" * 100_000 + "]" * 100_000,
]


@pytest.mark.parametrize("agent", sorted(ADAPTERS))
@pytest.mark.parametrize("line", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_never_raises(agent: str, line: str) -> None:
    events = get_adapter(agent).parse_line(line)
    assert_valid(events)
    if not line.strip():
        assert events == []
    elif agent in ("claude", "codex") and line.lstrip()[:1] != "{":
        assert events == [RawLog(line=line.rstrip("\r\n"))]


class _BuggyAdapter(JsonLinesAdapter):
    name = "buggy"
    description = "raises on every object"
    secret_env = ()

    def command(self, prompt: str, *, resume: bool) -> list[str]:
        return ["true"]

    def parse_object(self, obj: JsonObject) -> list[AgentEvent] | None:
        raise KeyError("a bug")


def test_a_parser_bug_becomes_a_raw_line() -> None:
    assert _BuggyAdapter().parse_line('{"type": "x"}\n') == [RawLog(line='{"type": "x"}')]


def mutations(value: Any) -> Iterator[Any]:
    """Copies of a JSON value with one nested value replaced by something of another type."""
    replacements: list[Any] = [None, 0, True, "x", [], {}, [None]]
    if isinstance(value, dict):
        for key, inner in value.items():
            for other in [*replacements, *mutations(inner)]:
                yield {**value, key: other}
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            for other in [*replacements, *mutations(inner)]:
                yield [*value[:index], other, *value[index + 1 :]]


@pytest.mark.parametrize(("agent", "path"), STREAM_FILES, ids=ids([p for _, p in STREAM_FILES]))
def test_mistyped_fields_never_raise(agent: str, path: Path) -> None:
    adapter = get_adapter(agent)
    for obj in objects(path):
        for mutated in mutations(obj):
            assert_valid(adapter.parse_line(json.dumps(mutated)))


# -- shapes the captures do not show --------------------------------------------------------


def test_claude_error_results_and_blocks() -> None:
    adapter = get_adapter("claude")
    lines = [
        {"type": "system", "subtype": "init", "model": "claude-x"},
        {"type": "system", "subtype": "compact_boundary"},
        {
            "type": "assistant",
            "message": {
                "content": [
                    {"type": "thinking", "thinking": "hmm"},
                    {
                        "type": "tool_use",
                        "id": "t1",
                        "name": "Grep",
                        "input": {"pattern": "foo", "path": "src"},
                    },
                ]
            },
        },
        {
            "type": "user",
            "message": {
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "is_error": True,
                        "content": [{"type": "text", "text": "no\nmatches"}, {"type": "image"}],
                    }
                ]
            },
        },
        {"type": "user", "message": {"content": "a plain prompt"}},
        {
            "type": "result",
            "subtype": "error_max_turns",
            "is_error": True,
            "num_turns": 9,
            "errors": ["too many turns"],
            "usage": {"input_tokens": 3, "output_tokens": 4, "cache_read_input_tokens": 5},
        },
    ]
    events = feed(adapter, [json.dumps(o) for o in lines])
    assert events == [
        ToolCall(name="Grep", summary="foo in src", call_id="t1"),
        ToolResult(call_id="t1", summary="no matches [image]", is_error=True),
        Usage(model="claude-x", input_tokens=3, output_tokens=4, cache_read_tokens=5),
        AgentError(message="claude stopped: max turns: too many turns"),
        FinalResult(success=False, turns=9),
    ]


def test_claude_error_flag_on_a_success_subtype_fails_the_run() -> None:
    line = {"type": "result", "subtype": "success", "is_error": True, "result": "Invalid API key"}
    events = get_adapter("claude").parse_line(json.dumps(line))
    assert AgentError(message="Invalid API key") in events
    assert of_type(events, FinalResult)[0].success is False


CODEX_SHAPES: list[tuple[dict[str, Any], list[AgentEvent] | None]] = [
    ({"type": "turn.started"}, []),
    (
        {"type": "turn.failed", "error": {"message": "quota"}},
        [AgentError(message="quota"), FinalResult(success=False, text="quota")],
    ),
    ({"type": "error", "message": "stream lost"}, [AgentError(message="stream lost")]),
    (
        {
            "type": "item.completed",
            "item": {
                "id": "i9",
                "type": "command_execution",
                "command": "bad",
                "aggregated_output": "not found\n",
                "exit_code": 127,
                "status": "failed",
            },
        },
        [
            ToolCall(name="shell", summary="bad", call_id="i9"),
            ToolResult(call_id="i9", summary="exit 127: not found", is_error=True),
        ],
    ),
    ({"type": "item.updated", "item": {"id": "i9", "type": "command_execution"}}, []),
    (
        {
            "type": "item.completed",
            "item": {
                "id": "i3",
                "type": "mcp_tool_call",
                "server": "fs",
                "tool": "read",
                "arguments": {"path": "a"},
                "error": {"message": "missing"},
                "status": "failed",
            },
        },
        [
            ToolCall(name="fs.read", summary='{"path":"a"}', call_id="i3"),
            ToolResult(call_id="i3", summary="missing", is_error=True),
        ],
    ),
    (
        {
            "type": "item.completed",
            "item": {
                "id": "i4",
                "type": "file_change",
                "changes": [{"path": "a.py", "kind": "update"}, {"path": "b.py", "kind": "delete"}],
                "status": "failed",
            },
        },
        [
            ToolCall(name="edit", summary="update a.py, delete b.py", call_id="i4"),
            ToolResult(call_id="i4", summary="patch failed", is_error=True),
        ],
    ),
    (
        {"type": "item.completed", "item": {"id": "i5", "type": "web_search", "query": "rust"}},
        [ToolCall(name="web_search", summary="rust", call_id="i5")],
    ),
    (
        {
            "type": "item.started",
            "item": {
                "id": "i6",
                "type": "todo_list",
                "items": [{"text": "one", "completed": True}, {"text": "two", "completed": False}],
            },
        },
        [ToolCall(name="todo", summary="1/2 done; next: two", call_id="i6")],
    ),
    (
        {"type": "item.completed", "item": {"id": "i7", "type": "error", "message": "warn"}},
        [AgentError(message="warn")],
    ),
    (
        {
            "type": "item.completed",
            "item": {"id": "i8", "item_type": "assistant_message", "text": "hi"},
        },
        [AssistantMessage(text="hi")],
    ),
    ({"type": "item.completed", "item": {"id": "i0", "type": "hologram"}}, None),
]


@pytest.mark.parametrize(("obj", "expected"), CODEX_SHAPES, ids=range(len(CODEX_SHAPES)))
def test_codex_documented_shapes(obj: dict[str, Any], expected: list[AgentEvent] | None) -> None:
    line = json.dumps(obj)
    events = get_adapter("codex").parse_line(line)
    assert events == ([RawLog(line=line)] if expected is None else expected)


def test_codex_started_command_is_announced_once() -> None:
    adapter = get_adapter("codex")
    item = {"id": "c1", "type": "command_execution", "command": "ls"}
    started = adapter.parse_line(json.dumps({"type": "item.started", "item": item}))
    done = adapter.parse_line(
        json.dumps(
            {"type": "item.completed", "item": {**item, "exit_code": 0, "aggregated_output": ""}}
        )
    )
    assert started == [ToolCall(name="shell", summary="ls", call_id="c1")]
    assert done == [ToolResult(call_id="c1", summary="exit 0")]


AIDER_LINES: list[tuple[str, list[AgentEvent]]] = [
    ("Aider v0.86.1", [RawLog(line="Aider v0.86.1")]),
    (
        "Main model: anthropic/claude-sonnet-4-20250514 with diff edit format, infinite output",
        [
            RawLog(
                line="Main model: anthropic/claude-sonnet-4-20250514 with diff edit format, "
                "infinite output"
            )
        ],
    ),
    ("Git repo: .git with 3 files", [RawLog(line="Git repo: .git with 3 files")]),
    (
        "I'll add the function to hello.py.",
        [AssistantMessage(text="I'll add the function to hello.py.")],
    ),
    ("    def hello():", [AssistantMessage(text="    def hello():")]),
    ("Applied edit to hello.py", [ToolCall(name="edit", summary="hello.py")]),
    (
        "Failed to apply edit to other.py",
        [ToolResult(summary="Failed to apply edit to other.py", is_error=True)],
    ),
    (
        "Commit 1a2b3c4 feat: Add hello function",
        [ToolResult(summary="commit 1a2b3c4 feat: Add hello function")],
    ),
    (
        "Tokens: 2.5k sent, 1.1k cache write, 2.3k cache hit, 250 received. "
        "Cost: $0.02 message, $0.05 session.",
        [
            Usage(
                model="anthropic/claude-sonnet-4-20250514",
                input_tokens=2500,
                output_tokens=250,
                cache_read_tokens=2300,
                cost_usd=0.02,
            )
        ],
    ),
    (
        "litellm.AuthenticationError: AnthropicException - invalid x-api-key",
        [AgentError(message="litellm.AuthenticationError: AnthropicException - invalid x-api-key")],
    ),
    ("", []),
]


def test_aider_lines_in_order() -> None:
    adapter = get_adapter("aider")
    for line, expected in AIDER_LINES:
        assert adapter.parse_line(line) == expected, line


SCRIPT_LINES: list[tuple[str, list[AgentEvent]]] = [
    ("hello world", [AssistantMessage(text="hello world")]),
    ("", []),
    ('{"type": "tool_call", "name": "x"}', [ToolCall(name="x")]),
    ('{"type": "result", "success": true, "text": "ok"}', [FinalResult(success=True, text="ok")]),
    (
        '{"type": "usage", "cost_usd": 0.5, "input_tokens": 3}',
        [Usage(cost_usd=0.5, input_tokens=3)],
    ),
    ('{"type": "tool_call"}', [AssistantMessage(text='{"type": "tool_call"}')]),
    ('{"type": "bogus"}', [AssistantMessage(text='{"type": "bogus"}')]),
    ('{"name": "x"}', [AssistantMessage(text='{"name": "x"}')]),
    ("[1]", [AssistantMessage(text="[1]")]),
]


@pytest.mark.parametrize(("line", "expected"), SCRIPT_LINES, ids=range(len(SCRIPT_LINES)))
def test_script_lines(line: str, expected: list[AgentEvent]) -> None:
    assert get_adapter("script").parse_line(line + "\n") == expected


@pytest.mark.parametrize(
    ("name", "tool_input", "expected"),
    [
        ("Bash", {"command": "npm test\n  --watch", "description": "run"}, "npm test --watch"),
        ("Edit", {"file_path": "/w/a.py", "old_string": "x", "new_string": "y"}, "/w/a.py"),
        ("Read", {"file_path": "/w/b.py"}, "/w/b.py"),
        ("Write", {"file_path": "/w/c.py", "content": "..."}, "/w/c.py"),
        ("Grep", {"pattern": "TODO"}, "TODO"),
        ("Glob", {"pattern": "**/*.py", "path": "src"}, "**/*.py"),
        ("WebFetch", {"url": "https://example.com", "prompt": "read"}, "https://example.com"),
        ("Task", {"description": "explore", "prompt": "long"}, "explore"),
        (
            "TodoWrite",
            {
                "todos": [
                    {"content": "a", "status": "completed"},
                    {"content": "b", "status": "in_progress"},
                ]
            },
            "1/2 done; now: b",
        ),
        ("Mystery", {"n": 1}, '{"n":1}'),
        ("Mystery", None, ""),
    ],
)
def test_tool_input_summary(name: str, tool_input: object, expected: str) -> None:
    assert summarise_tool_input(name, tool_input) == expected


def test_tool_input_summary_is_one_short_line() -> None:
    summary = summarise_tool_input("Bash", {"command": "echo " + "word\n" * 500})
    assert "\n" not in summary and len(summary) <= 160 and summary.endswith("…")


# -- commands -------------------------------------------------------------------------------

NASTY_PROMPT = 'it\'s "quoted" $(touch /tmp/pwned) `id` ; rm -rf ~ && echo $HOME\nline two\n--help'


@pytest.mark.parametrize("agent", sorted(ADAPTERS))
def test_prompt_is_one_argv_item(agent: str) -> None:
    argv = get_adapter(agent).command(NASTY_PROMPT, resume=False)
    assert all(isinstance(a, str) and "\x00" not in a for a in argv)
    holding = [a for a in argv if NASTY_PROMPT in a]
    assert len(holding) == 1
    assert holding[0] in (NASTY_PROMPT, f"--message={NASTY_PROMPT}")
    assert holding[0] == argv[-1]


@pytest.mark.parametrize("agent", sorted(ADAPTERS))
def test_resume_adds_continue_for_claude_only(agent: str) -> None:
    adapter = get_adapter(agent)
    fresh, resumed = adapter.command("go", resume=False), adapter.command("go", resume=True)
    assert "--continue" not in fresh
    if agent == "claude":
        assert resumed == [*fresh[:-2], "--continue", "--", "go"]
    else:
        assert resumed == fresh


@pytest.mark.parametrize("agent", sorted(ADAPTERS))
@pytest.mark.parametrize("prompt", ["", "  \n\t", "\x00"])
def test_empty_prompt_is_refused(agent: str, prompt: str) -> None:
    with pytest.raises(TrimoError, match="empty"):
        get_adapter(agent).command(prompt, resume=False)


def test_nul_bytes_are_dropped_from_the_prompt() -> None:
    assert get_adapter("claude").command("a\x00b", resume=False)[-1] == "ab"


def test_claude_command_flags() -> None:
    argv = get_adapter("claude").command("fix it", resume=False)
    assert argv[0] == "claude" and argv[-2:] == ["--", "fix it"]
    for flag in ("-p", "--verbose", "--dangerously-skip-permissions"):
        assert flag in argv
    assert argv[argv.index("--output-format") + 1] == "stream-json"


def test_aider_command_flags() -> None:
    argv = get_adapter("aider").command("fix it", resume=False)
    assert argv[0] == "aider" and "--yes-always" in argv and "--no-pretty" in argv
    assert "--no-auto-commits" not in argv  # aider commits its own work


def fake_program(tmp_path: Path, name: str) -> Path:
    """An executable `name` on a private PATH that prints its argv and CODEX_API_KEY as JSON."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / name
    program.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "print(json.dumps({'argv': sys.argv[1:], 'key': os.environ.get('CODEX_API_KEY')}))\n"
    )
    program.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize(
    ("env", "expected_key"),
    [
        ({"OPENAI_API_KEY": "sk-openai"}, "sk-openai"),
        ({"OPENAI_API_KEY": "sk-openai", "CODEX_API_KEY": "sk-codex"}, "sk-codex"),
        ({}, None),
    ],
)
def test_codex_command_passes_prompt_and_key_through_its_launcher(
    tmp_path: Path, env: dict[str, str], expected_key: str | None
) -> None:
    bin_dir = fake_program(tmp_path, "codex")
    argv = get_adapter("codex").command(NASTY_PROMPT, resume=False)
    base_env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "CODEX_API_KEY")}
    done = subprocess.run(
        argv,
        env={**base_env, **env, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    seen = json.loads(done.stdout)
    assert seen["argv"] == [
        "exec",
        "--json",
        "--skip-git-repo-check",
        "--dangerously-bypass-approvals-and-sandbox",
        "--",
        NASTY_PROMPT,
    ]
    assert seen["key"] == expected_key
    assert not Path("/tmp/pwned").exists()


def test_script_command_runs_the_prompt_as_a_bash_script(tmp_path: Path) -> None:
    script = 'set -e\necho "one $((1 + 1))"\nfalse\necho never'
    done = subprocess.run(
        get_adapter("script").command(script, resume=False),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout) == (1, "one 2\n")
    lines = [e for line in done.stdout.splitlines() for e in get_adapter("script").parse_line(line)]
    assert lines == [AssistantMessage(text="one 2")]


def test_script_starting_with_a_dash_is_still_the_script(tmp_path: Path) -> None:
    done = subprocess.run(
        get_adapter("script").command("-x", resume=False),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 127 and "-x: command not found" in done.stderr


# -- the registry ---------------------------------------------------------------------------


def test_registry() -> None:
    assert tuple(sorted(ADAPTERS)) == contract.AGENTS  # what the App offers, not importing these
    for name, cls in ADAPTERS.items():
        adapter = get_adapter(name)
        assert isinstance(adapter, cls) and adapter.name == name and adapter.description
        assert get_adapter(name) is not adapter  # per-run state is never shared
    assert get_adapter("claude").secret_env == ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN")
    assert "OPENAI_API_KEY" in get_adapter("codex").secret_env
    assert get_adapter("aider").secret_env == ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")
    assert get_adapter("script").secret_env == ()
    assert get_adapter("script").takes_context is False
    assert get_adapter("claude").takes_context is True


REVIEWED = RunRequest(
    run_id="r1",
    pipeline="p1",
    repo=RepoRef(full_name="o/r", clone_url="/tmp/r"),
    branch="b",
    base_branch="main",
    prompt="Use an emoji here",
    review=ReviewContext(path="READ`ME.md", line=1, diff_hunk="@@ -1 +1 @@\n-a ```\n+b"),
)


def test_a_review_comments_place_follows_the_prompt_of_agents_that_read_prose() -> None:
    prompt = agent_prompt(REVIEWED, get_adapter("claude"), context="")
    assert prompt.startswith("Use an emoji here\n")
    assert "`README.md`, line 1" in prompt
    assert "````diff\n@@ -1 +1 @@\n-a ```\n+b\n````" in prompt  # no line closes the fence


def test_a_script_stays_a_script_under_a_review_comment() -> None:
    assert agent_prompt(REVIEWED, get_adapter("script"), context="earlier") == "Use an emoji here"


def test_unknown_agent_lists_the_known_ones() -> None:
    with pytest.raises(TrimoError) as caught:
        get_adapter("gpt-engineer")
    text = str(caught.value)
    assert "gpt-engineer" in caught.value.message
    for name in ADAPTERS:
        assert name in caught.value.hint and name in text


# -- issue 10: defects found running the real CLIs ---------------------------------------------

CAPTURES = Path(__file__).resolve().parent / "captures"
CLAUDE_UNREACHABLE = CAPTURES / "claude.v2.1.332.unreachable.jsonl"
"""Real Claude Code 2.1.332 output with its API unreachable (3 retries, then the error)."""


def test_claude_api_retries_are_shown() -> None:
    events = parse_file("claude", CLAUDE_UNREACHABLE)
    retries = [e.line for e in of_type(events, RawLog)]
    assert retries == [
        "API unreachable, retry 1/3 in 1 s",
        "API unreachable, retry 2/3 in 1 s",
        "API unreachable, retry 3/3 in 2 s",
    ]


def test_claude_retry_names_the_api_error_when_there_is_one() -> None:
    retry = {"type": "system", "subtype": "api_retry", "attempt": 4, "max_retries": 10,
             "retry_delay_ms": 13000, "error_status": 529, "error": "overloaded"}  # fmt: skip
    assert feed(get_adapter("claude"), [json.dumps(retry)]) == [
        RawLog(line="API error 529 overloaded, retry 4/10 in 13 s")
    ]


def test_claude_reported_error_is_said_once_and_is_the_reason() -> None:
    adapter = get_adapter("claude")
    events = feed(adapter, stream_lines(CLAUDE_UNREACHABLE))
    expected = (
        "API Error: Connection refused — a firewall or proxy may be blocking it (ECONNREFUSED)"
    )
    assert of_type(events, AgentError) == [AgentError(message=expected)]
    assert not of_type(events, AssistantMessage)  # the synthetic reply is the error, not talk
    assert of_type(events, FinalResult)[0].success is False
    assert adapter.reported_error == expected


def test_claude_model_is_not_the_synthetic_placeholder() -> None:
    events = parse_file("claude", CLAUDE_UNREACHABLE)
    assert of_type(events, Usage)[0].model == "claude-opus-5-5"  # from init, not "<synthetic>"


def claude_result(total: float) -> str:
    result = objects(AGENTS / "claude" / "gleam.result_success.json")[0]
    return json.dumps(result | {"total_cost_usd": total})


def test_claude_cost_of_a_continued_session_is_this_runs_part() -> None:
    """With --continue, total_cost_usd is the session's (Claude Code 2.1.332 reported
    $0.0194 after a first run of $0.0097): the run's cost is what it adds to the total the
    host noted after the session's previous run, and the new total is kept for the next."""
    first = get_adapter("claude")
    assert of_type(feed(first, [claude_result(0.0097)]), Usage)[0].cost_usd == 0.0097
    assert first.session_cost_usd == 0.0097
    follow_up = get_adapter("claude")
    follow_up.session_cost_before = first.session_cost_usd
    cost = of_type(feed(follow_up, [claude_result(0.0194)]), Usage)[0].cost_usd
    assert cost == pytest.approx(0.0097)
    assert follow_up.session_cost_usd == 0.0194


def test_claude_total_below_the_noted_one_is_a_session_of_its_own() -> None:
    """A total below what the session had cost cannot have gone on from it: all of it is
    this run's (a session Claude did not continue), never a negative or zero cost."""
    adapter = get_adapter("claude")
    adapter.session_cost_before = 0.5
    assert of_type(feed(adapter, [claude_result(0.02)]), Usage)[0].cost_usd == 0.02
    assert adapter.session_cost_usd == 0.02


def test_claude_agent_cannot_set_its_own_baseline() -> None:
    """The agent's own output cannot lower its cost: a line claiming what the session had
    cost before (Trimo's old launcher printed one) is only a log line now."""
    baseline = json.dumps({"type": "trimo_session_cost", "total_cost_usd": 0.0194})
    events = feed(get_adapter("claude"), [baseline, claude_result(0.0194)])
    assert of_type(events, Usage)[0].cost_usd == 0.0194
    assert [e.line for e in of_type(events, RawLog)] == [baseline]


def test_codex_reconnects_are_retries_not_errors() -> None:
    """Real codex-cli 0.171.0 output with no network: it reconnects by itself."""
    lines = stream_lines(CAPTURES / "codex.v0.171.0.unreachable.jsonl")
    adapter = get_adapter("codex")
    events = feed(adapter, lines)
    retries = [e.line for e in of_type(events, RawLog)]
    assert retries[0] == (
        "API unreachable, retry 2/5 (stream disconnected before completion: "
        "failed to lookup address information: Try again)"
    )
    assert len(retries) == sum("Reconnecting..." in line for line in lines)
    assert all(not e.message.startswith("Reconnecting") for e in of_type(events, AgentError))


def test_codex_summary_names_the_model() -> None:
    path = AGENTS / "codex" / "agentcmd.exec-json.v0.46.stream-output-1.jsonl"
    lines = [*stream_lines(path), '{"type":"trimo_codex_model","model":"gpt-5-codex"}']
    usages = of_type(feed(get_adapter("codex"), lines), Usage)
    assert usages[-1].model == "gpt-5-codex"
    assert sum(u.input_tokens for u in usages) == 2946  # the model line adds no tokens


def test_codex_model_launcher_reads_the_newest_rollout(tmp_path: Path) -> None:
    """The launcher runs codex, then prints the model of its newest session's turn_context."""
    argv = get_adapter("codex").command("go", resume=False)
    day = tmp_path / ".codex" / "sessions" / "2025" / "09" / "25"
    day.mkdir(parents=True)
    rollout = AGENTS / "codex" / "rollout-format"
    lines = [(rollout / n).read_text().strip() for n in
             ("agentcmd.session-meta.jsonl", "agentcmd.turn-context.jsonl")]  # fmt: skip
    (day / "rollout-2025-09-25T01-22-20-x.jsonl").write_text("\n".join(lines) + "\n")
    fake = [*argv[:4], "bash", "-c", "echo ran; exit 3"]
    done = subprocess.run(fake, capture_output=True, text=True,
                          env={**os.environ, "HOME": str(tmp_path)})  # fmt: skip
    assert done.stdout.splitlines() == ["ran", '{"type":"trimo_codex_model","model":"gpt-5-codex"}']
    assert done.returncode == 3  # codex's own exit code


def test_api_hosts_are_declared_by_each_model_agent() -> None:
    assert "api.anthropic.com" in get_adapter("claude").api_hosts
    assert "api.openai.com" in get_adapter("codex").api_hosts
    assert set(get_adapter("aider").api_hosts) >= {"api.anthropic.com", "api.openai.com"}
    assert get_adapter("script").api_hosts == ()
