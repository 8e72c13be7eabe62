"""A run's events as log lines: what the agent wrote is cut, cleaned and never trusted."""

from __future__ import annotations

from app.dashboard.logview import BODY_CHARS, log_line
from app.dashboard.pages import render
from runner.events import AssistantMessage, RawLog, ToolCall, ToolResult, Usage
from runner.job import Outcome, RunFinished


def test_tool_calls_fold_their_input_and_results_are_marked_when_they_fail() -> None:
    call = log_line(ToolCall(name="Bash", summary="rm -rf /tmp/x").model_dump_json())
    assert (call.kind, call.title, call.detail) == ("tool", "Bash", "rm -rf /tmp/x")
    failed = log_line(ToolResult(summary="No such file", is_error=True).model_dump_json())
    assert failed.kind == "result" and failed.failed and failed.title == "error"
    html = render("_log_line.html.j2", line=call, entry_id="1-0")
    assert "<details>" in html and 'data-kind="tool"' in html


def test_agent_text_is_cleaned_cut_and_escaped() -> None:
    text = "\x1b[31mred\x1b[0m <b>bold</b>\x07" + "x" * (BODY_CHARS + 100)
    line = log_line(AssistantMessage(text=text).model_dump_json())
    assert "\x1b" not in line.body and "\x07" not in line.body
    assert len(line.body) == BODY_CHARS and line.body.endswith("…")
    html = render("_log_line.html.j2", line=line, entry_id="1-0")
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html


def test_raw_usage_end_and_unreadable_lines() -> None:
    assert log_line(RawLog(line="plain output").model_dump_json()).body == "plain output"
    usage = log_line(Usage(model="m", input_tokens=1200, output_tokens=30, cost_usd=0.5)
                     .model_dump_json())  # fmt: skip
    assert usage.body == "m · 1,200 in / 30 out · $0.50"
    end = log_line(
        RunFinished(run_id="r", outcome=Outcome.TIMED_OUT, reason="30 min").model_dump_json()
    )
    assert (end.kind, end.title, end.failed) == ("end", "timed out", True)
    junk = log_line('{"type": "nonsense", "x": "<script>"}')
    assert junk.kind == "log" and junk.title == "unreadable event"
