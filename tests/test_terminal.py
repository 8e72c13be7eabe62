"""What the operator's terminal shows of a run: agent text printed, never obeyed."""

from __future__ import annotations

from rich.console import Console

from runner.diffsummary import DiffSummary, FileChange
from runner.events import AssistantMessage, ToolCall
from runner.job import CommitInfo, Outcome, RunFinished
from runner.terminal import event_line, print_summary

HOSTILE = (
    "[/oops] [link=http://evil.example]x[/link] \x1b]0;pwned title\x07\x1b[31mred\x1b[0m \u202eabc"
)


def rendered(finished: RunFinished) -> str:
    console = Console(record=True, width=200, color_system="truecolor", force_terminal=True)
    print_summary(console, finished, "trimo/x", 1.0)
    return console.export_text(styles=False)


def test_summary_prints_markup_and_escapes_as_inert_text() -> None:
    finished = RunFinished(
        run_id="r",
        outcome=Outcome.FAILURE,
        reason=HOSTILE,
        commits=[CommitInfo(sha="a" * 40, subject=HOSTILE)],
        diff=DiffSummary(files=[FileChange(path=HOSTILE, added=1)]),
    )
    text = rendered(finished)  # a MarkupError here was a crash of `trimo run`
    assert "[/oops]" in text and "[link=http://evil.example]" in text
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "pwned title" not in text


def test_event_lines_strip_escape_sequences() -> None:
    for event in (AssistantMessage(text=HOSTILE), ToolCall(name="\x1b[2J", summary=HOSTILE)):
        line = event_line(event)
        assert line is not None
        assert "\x1b" not in line.plain and "\u202e" not in line.plain
        assert not line.spans or all(span.style == "cyan" for span in line.spans)
