"""A discovery run's answer: the agent's last word, from recorded captures, and its
read-only mode on each agent's command line."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from runner.agents import get_adapter
from runner.contract import MAX_PLAN_CHARS
from runner.events import AssistantMessage, FinalResult, ToolCall
from runner.lastword import LastWord
from tests.test_agents import AGENTS, fake_program, objects, parse_file


def last_word(agent: str, path: Path) -> str:
    word = LastWord()
    for event in parse_file(agent, path):
        word.observe(event)
    return word.text()


def test_claude_answers_its_result_text() -> None:
    path = AGENTS / "claude/gleam.golden.basic_query.v2.1.7.jsonl"
    assert last_word("claude", path) == objects(path)[-1]["result"] == "4"


def test_claude_after_tool_calls_answers_its_result_not_its_earlier_messages() -> None:
    path = AGENTS / "claude/claude-code-action.sample-turns.json"
    result = objects(path)[-1]["result"]
    assert last_word("claude", path) == result.strip()
    assert result.startswith("Successfully removed debug print")


@pytest.mark.parametrize(
    ("capture", "starts"),
    [
        ("agentcmd.exec-json.v0.46.stream-output-5.jsonl", "Found 1 text file `hello.txt`"),
        ("openai-codex.docs-exec-md.sample.jsonl", "Yep — there’s a `README.md`"),
    ],
)
def test_codex_answers_its_last_agent_message(capture: str, starts: str) -> None:
    path = AGENTS / "codex" / capture
    messages = [
        o["item"]["text"]
        for o in objects(path)
        if o.get("type") == "item.completed" and o["item"].get("type") == "agent_message"
    ]
    assert last_word("codex", path) == messages[-1]
    assert messages[-1].startswith(starts)


def test_without_a_result_it_is_what_was_said_after_the_last_tool_call() -> None:
    word = LastWord()
    for event in [
        AssistantMessage(text="let me look"),
        ToolCall(name="Read", summary="a.py"),
        AssistantMessage(text="## Plan"),
        AssistantMessage(text="1. Fix \x1b]0;pwned\x07a.py\x00"),
        FinalResult(success=True, text="  "),
    ]:
        word.observe(event)
    assert word.text() == "## Plan\n1. Fix a.py"


def test_an_endless_answer_is_capped() -> None:
    word = LastWord()
    word.observe(FinalResult(success=True, text="x" * (MAX_PLAN_CHARS * 3)))
    assert len(word.text()) == MAX_PLAN_CHARS and word.text().endswith("…")


def test_claude_discovers_in_plan_mode() -> None:
    argv = get_adapter("claude").command("look", resume=False, read_only=True)
    assert argv[argv.index("--permission-mode") + 1] == "plan"
    assert "--dangerously-skip-permissions" not in argv
    resumed = get_adapter("claude").command("look", resume=True, read_only=True)
    assert resumed[resumed.index("--permission-mode") + 1] == "plan" and "--continue" in resumed


def test_codex_discovers_in_its_read_only_sandbox(tmp_path: Path) -> None:
    bin_dir = fake_program(tmp_path, "codex")
    argv = get_adapter("codex").command("look", resume=False, read_only=True)
    done = subprocess.run(
        argv,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    seen = json.loads(done.stdout)["argv"]
    assert seen[seen.index("--sandbox") + 1] == "read-only"
    assert "--dangerously-bypass-approvals-and-sandbox" not in seen
    assert seen[-2:] == ["--", "look"]


def test_aider_discovers_in_ask_mode_without_commits() -> None:
    argv = get_adapter("aider").command("look", resume=False, read_only=True)
    assert argv[argv.index("--chat-mode") + 1] == "ask" and "--no-auto-commits" in argv
    assert "--chat-mode" not in get_adapter("aider").command("fix", resume=False)
