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
from runner.job import (
    EgressBlocked,
    Kept,
    Outcome,
    Pushed,
    PushRefused,
    RunEvent,
    RunFinished,
    RunStarted,
    Salvaged,
    Verifying,
    VerifyReport,
)
from runner.printable import printable
from runner.templating import render

OUTCOME_STYLE = {
    Outcome.SUCCESS: ("bold green", "succeeded"),
    Outcome.FAILURE: ("bold red", "failed"),
    Outcome.TIMED_OUT: ("bold yellow", "timed out"),
    Outcome.CANCELLED: ("bold yellow", "was stopped"),
    Outcome.ERROR: ("bold red", "could not run"),
}


def safe(text: str, width: int | None = None) -> str:
    """Agent-derived text for one terminal line: no escape sequences or control characters."""
    clean = printable(text, one_line=True)
    return shorten(clean, width) if width is not None else clean


KEPT_WORDS = {
    "continued": "this run continues from {n} kept commit(s)",
    "replayed": "{n} kept commit(s) replayed on the branch's new head",
    "branch": "kept commits set aside on branch {where}",
    "bundle": "kept commits set aside in Trimo's store",
    "runner": "kept commits set aside on this runner as {where}",
}


def event_line(event: RunEvent, width: int = 160) -> Text | None:
    """A one-line rendering of `event`, or None for events not worth a line.

    Every text that came from the agent goes through `safe`; Text never parses markup."""
    match event:
        case RunStarted():
            what = " a read-only discovery" if event.mode == "discover" else ""
            return Text(f"▶ {event.agent} started{what} in {event.image} on {event.branch}", "bold")
        case AssistantMessage():
            return Text(f"  {safe(event.text, width)}")
        case ToolCall():
            return Text.assemble(
                ("  ⚙ ", "cyan"), (safe(event.name, 40), "cyan"), f" {safe(event.summary, width)}"
            )
        case ToolResult() if event.is_error:
            return Text(f"    ✗ {safe(event.summary, width)}", "red")
        case AgentError():
            return Text(f"  ! {safe(event.message, width)}", "red")
        case RawLog():
            return Text(f"  {safe(event.line, width)}", "dim") if event.line.strip() else None
        case PushRefused():
            return Text(
                f"⚠ the repository refused commit {event.sha[:7]}: {safe(event.reason, width)}",
                "yellow",
            )
        case Pushed():
            plural = "s" if event.commits != 1 else ""
            return Text(
                f"⬆ pushed {event.commits} commit{plural} to {event.branch} ({event.sha[:7]})",
                "green",
            )
        case EgressBlocked():
            return Text.assemble(
                ("⛔ the network blocked ", "yellow"),
                ", ".join(f"{safe(host, 100)} ×{count}" for host, count in _ranked(event.hosts)),
                ("  (allow a host with --allow-host HOST)", "dim"),
            )
        case Kept():
            said = KEPT_WORDS[event.action].format(n=event.commits, where=event.branch or event.ref)
            why = event.problem or event.refused or event.unstored
            detail = f": {safe(why, width)}" if why else ""
            return Text(f"⚑ {said} ({event.sha[:7]}){detail}", "yellow")
        case Salvaged():
            return Text(
                f"⚠ history was rewritten; work kept on {event.ref} ({event.sha[:7]})", "yellow"
            )
        case Verifying():
            names = ", ".join(event.checks)
            return Text(f"✔ checking {event.sha[:7]} in fresh sandboxes: {names}", "cyan")
        case FinalResult() | Usage() | ToolResult() | RunFinished():
            return None
    return None


def _ranked(hosts: dict[str, int]) -> list[tuple[str, int]]:
    """Hosts by how often they were blocked, most first."""
    return sorted(hosts.items(), key=lambda item: (-item[1], item[0]))


def blocked_lines(hosts: dict[str, int], limit: int = 20) -> list[Text]:
    """The summary's account of hosts the network blocked, and how to allow them.

    The names are what the agent asked for, so they go through `safe` as plain Text."""
    if not hosts:
        return []
    ranked = _ranked(hosts)
    lines = [Text(f"\nThe network blocked {len(ranked)} host(s):", "yellow")]
    lines += [Text(f"  {safe(host, 100)} ×{count}") for host, count in ranked[:limit]]
    if len(ranked) > limit:
        lines.append(Text(f"  … and {len(ranked) - limit} more"))
    first = safe(ranked[0][0], 100)
    lines.append(
        Text(
            f"Allow a host with --allow-host (repeatable): trimo run --allow-host {first} …",
            "dim",
        )
    )
    return lines


def print_summary(
    console: Console,
    finished: RunFinished,
    branch: str,
    elapsed: float,
    blocked: dict[str, int] | None = None,
) -> None:
    """The end of a run; `blocked`: hosts the network refused, with how often.

    Reasons, subjects, file names and host names can carry the agent's text, so they are
    printed as plain Text (no markup) and without control characters."""
    style, verb = OUTCOME_STYLE[finished.outcome]
    console.print()
    console.print(Text(f"The run {verb} after {elapsed:.1f}s.", style))
    if finished.reason:
        console.print(Text(f"  {printable(finished.reason)}"))
    if finished.commits:
        console.print(
            Text.assemble(f"\n{len(finished.commits)} commit(s) on ", (branch, "bold"), ":")
        )
        for commit in finished.commits[-15:]:
            console.print(Text(f"  {commit.sha[:7]} {safe(commit.subject)}"))
    else:
        console.print(Text.assemble("\nNo new commits on ", (branch, "bold"), "."))
    if not finished.diff.is_empty:
        table = Table(show_edge=False, pad_edge=False, box=None)
        table.add_column("file")
        table.add_column("", justify="right", style="green")
        table.add_column("", justify="right", style="red")
        for change in finished.diff.files[:40]:
            name = safe(f"{change.old_path} → {change.path}" if change.old_path else change.path)
            if change.binary:
                table.add_row(Text(name), "binary", "")
            else:
                table.add_row(Text(name), f"+{change.added}", f"-{change.removed}")
        console.print(table)
        if finished.diff.unlisted:
            console.print(render("diff_unlisted.txt.j2", diff=finished.diff).strip())
        else:
            console.print(
                f"{len(finished.diff.files)} file(s), "
                f"+{finished.diff.added} -{finished.diff.removed}"
            )
    if finished.usage is not None:
        usage = finished.usage
        cost = f", ${usage.cost_usd:.4f}" if usage.cost_usd is not None else ""
        model = f"{safe(usage.model, 60)}: " if usage.model else ""
        console.print(
            Text(f"{model}{usage.input_tokens} in / {usage.output_tokens} out tokens{cost}")
        )
    for line in blocked_lines(blocked or {}):
        console.print(line)
    for line in verify_lines(finished.verify):
        console.print(line)


def verify_lines(report: VerifyReport | None) -> list[Text]:
    """The checks of `verify:`: one line each, then the end of each failing one's output."""
    if report is None or not report.checks:
        return []
    passed = "all passed" if report.passed else "failing: " + ", ".join(report.failing)
    lines = [Text(f"\nChecks on {report.sha[:7]} ({passed}):", "bold")]
    for check in report.checks:
        took = f" {check.seconds:.1f}s" if check.seconds else ""
        if check.passed:
            lines.append(Text.assemble(("  ✓ ", "green"), f"{check.name}{took}"))
            continue
        why = check.problem or f"exit code {check.exit_code}"
        lines.append(Text.assemble(("  ✗ ", "red"), f"{check.name}{took}: {printable(why)}"))
    for check in report.checks:
        if not check.passed and check.log_tail:
            lines.append(Text(f"\nThe end of {check.name}'s output:", "bold"))
            lines.append(Text(printable(check.log_tail)))
    return lines


def print_plan(console: Console, plan: str) -> None:
    """A discovery run's findings and plan: the agent's text, as plain Text (no markup),
    without escape sequences or control characters; its lines are kept."""
    console.print()
    if not plan.strip():
        console.print(Text("The agent gave no findings or plan.", "yellow"))
        return
    console.print(Text("Findings and plan", "bold"))
    console.print(Text(printable(plan)), highlight=False)
