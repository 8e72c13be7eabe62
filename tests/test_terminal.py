"""What the operator's terminal shows of a run: agent text printed, never obeyed."""

from __future__ import annotations

from rich.console import Console

from runner.diffsummary import DiffSummary, FileChange
from runner.events import AssistantMessage, ToolCall
from runner.job import CommitInfo, EgressBlocked, Outcome, RunFinished
from runner.terminal import event_line, print_summary

HOSTILE = (
    "[/oops] [link=http://evil.example]x[/link] \x1b]0;pwned title\x07\x1b[31mred\x1b[0m \u202eabc"
)


def rendered(finished: RunFinished, blocked: dict[str, int] | None = None) -> str:
    console = Console(record=True, width=200, color_system="truecolor", force_terminal=True)
    print_summary(console, finished, "trimo/x", 1.0, blocked)
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


def test_blocked_hosts_are_a_line_most_blocked_first_and_inert() -> None:
    line = event_line(EgressBlocked(hosts={HOSTILE: 1, "example.org": 3, "a.test": 1}))
    assert line is not None
    assert line.plain.startswith("⛔ the network blocked example.org ×3, ")
    assert "a.test ×1" in line.plain and "--allow-host" in line.plain
    assert "[/oops]" in line.plain and "\x1b" not in line.plain and "\u202e" not in line.plain


def test_the_summary_lists_blocked_hosts_and_how_to_allow_them() -> None:
    finished = RunFinished(run_id="r", outcome=Outcome.FAILURE, reason="No internet route")
    text = rendered(finished, {"evil.test": 1, "example.org": 3, HOSTILE: 2})
    lines = text.splitlines()
    start = lines.index("The network blocked 3 host(s):")
    assert lines[start + 1] == "  example.org ×3"
    assert lines[start + 2].endswith(" ×2") and "[link=http://evil.example]" in lines[start + 2]
    assert lines[start + 3] == "  evil.test ×1"
    assert lines[start + 4] == (
        "Allow a host with --allow-host (repeatable): trimo run --allow-host example.org …"
    )
    assert "\x1b" not in text and "pwned title" not in text
    assert "blocked" not in rendered(finished) and "blocked" not in rendered(finished, {})
