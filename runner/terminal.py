"""How a run looks in the terminal: one line per event, then a summary."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from runner.events import (
    AgentError,
    AssistantMessage,
    FinalResult,
    RawLog,
    ToolCall,
    ToolResult,
    Usage,
    shorten,
)
from runner.job import Outcome, Pushed, RunEvent, RunFinished, RunStarted, Salvaged

OUTCOME_STYLE = {
    Outcome.SUCCESS: ("bold green", "succeeded"),
    Outcome.FAILURE: ("bold red", "failed"),
    Outcome.TIMED_OUT: ("bold yellow", "timed out"),
    Outcome.CANCELLED: ("bold yellow", "was stopped"),
    Outcome.ERROR: ("bold red", "could not run"),
}


def event_line(event: RunEvent, width: int = 160) -> Text | None:
    """A one-line rendering of `event`, or None for events not worth a line."""
    match event:
        case RunStarted():
            return Text(f"▶ {event.agent} started in {event.image} on {event.branch}", "bold")
        case AssistantMessage():
            return Text(f"  {shorten(event.text, width)}")
        case ToolCall():
            return Text.assemble(
                ("  ⚙ ", "cyan"), (event.name, "cyan"), f" {shorten(event.summary, width)}"
            )
        case ToolResult() if event.is_error:
            return Text(f"    ✗ {shorten(event.summary, width)}", "red")
        case AgentError():
            return Text(f"  ! {shorten(event.message, width)}", "red")
        case RawLog():
            return Text(f"  {shorten(event.line, width)}", "dim") if event.line.strip() else None
        case Pushed():
            plural = "s" if event.commits != 1 else ""
            return Text(
                f"⬆ pushed {event.commits} commit{plural} to {event.branch} ({event.sha[:7]})",
                "green",
            )
        case Salvaged():
            return Text(
                f"⚠ history was rewritten; work kept on {event.ref} ({event.sha[:7]})", "yellow"
            )
        case FinalResult() | Usage() | ToolResult() | RunFinished():
            return None
    return None


def print_summary(console: Console, finished: RunFinished, branch: str, elapsed: float) -> None:
    style, verb = OUTCOME_STYLE[finished.outcome]
    console.print()
    console.print(Text(f"The run {verb} after {elapsed:.1f}s.", style))
    if finished.reason:
        console.print(f"  {finished.reason}")
    if finished.commits:
        console.print(f"\n{len(finished.commits)} commit(s) on [bold]{branch}[/]:")
        for commit in finished.commits[-15:]:
            console.print(f"  {commit.sha[:7]} {commit.subject}", highlight=False)
    else:
        console.print(f"\nNo new commits on [bold]{branch}[/].")
    if not finished.diff.is_empty:
        table = Table(show_edge=False, pad_edge=False, box=None)
        table.add_column("file")
        table.add_column("", justify="right", style="green")
        table.add_column("", justify="right", style="red")
        for change in finished.diff.files[:40]:
            name = f"{change.old_path} → {change.path}" if change.old_path else change.path
            if change.binary:
                table.add_row(name, "binary", "")
            else:
                table.add_row(name, f"+{change.added}", f"-{change.removed}")
        console.print(table)
        console.print(
            f"{len(finished.diff.files)} file(s), +{finished.diff.added} -{finished.diff.removed}"
        )
    if finished.usage is not None:
        usage = finished.usage
        cost = f", ${usage.cost_usd:.4f}" if usage.cost_usd is not None else ""
        model = f"{usage.model}: " if usage.model else ""
        console.print(f"{model}{usage.input_tokens} in / {usage.output_tokens} out tokens{cost}")
