"""A run's events as log lines: what the agent wrote is cut, cleaned and never trusted."""

from __future__ import annotations

from app.dashboard.logview import BODY_CHARS, log_line, plain_text
from app.dashboard.pages import render
from runner.events import AssistantMessage, RawLog, ToolCall, ToolResult, Usage
from runner.job import Outcome, RunFinished
from runner.printable import styled
from tests.dashboard_helpers import HOSTILE_LINE


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


def test_a_hostile_log_line_keeps_its_colours_as_classes_and_nothing_else() -> None:
    line = log_line(RawLog(line=HOSTILE_LINE + "y" * 50_000).model_dump_json())
    assert ("FAILED", "ansi-bold ansi-fg-1") in line.spans
    assert ("green", "ansi-fg-2") in line.spans
    assert all("\x1b" not in text and "\x9b" not in text and "\x07" not in text
               for text, _ in line.spans)  # fmt: skip
    assert "javascript:" not in line.body and "click me" in line.body
    assert "new window title" not in line.body and "dcs" not in line.body
    assert "\u202e" not in line.body
    assert len(line.body) == BODY_CHARS and line.body.endswith("…")
    html = render("_log_line.html.j2", line=line, entry_id="1733520000123-0")
    assert "<script>" not in html and "<img" not in html and "javascript:" not in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html
    assert '<span class="ansi-bold ansi-fg-1">FAILED</span>' in html
    assert 'href="#L1733520000123-0"' in html and 'id="L1733520000123-0"' in html
    assert ">21:20:00<" in html  # the stream id's time, UTC


def test_styles_follow_resets_and_skip_extended_colours() -> None:
    pieces = styled("\x1b[4;44ma\x1b[24mb\x1b[38;2;1;2;3;1mc\x1b[49;22md\x1b[me")
    assert pieces == (
        ("a", "bg-4 underline"), ("b", "bg-4"), ("c", "bg-4 bold"), ("d", ""), ("e", ""),
    )  # fmt: skip
    assert styled("\x1b[31m" + "x" * 20, 5) == (("xxxx…", "fg-1"),)
    assert styled("\x1b]8;;http://example.com\x1b\\") == ()


def test_the_plain_text_line_has_no_colours_and_no_line_breaks() -> None:
    line = log_line(AssistantMessage(text="\x1b[31mtwo\nlines\r\x1b[0m").model_dump_json())
    assert plain_text(line) == "agent two lines"
