"""How attempts look in the terminal: each line of their output prefixed with its attempt's
number (in its own colour), a status line with every attempt's state, then the ranked table.

Prefixed lines rather than a status line per attempt: the whole of each attempt's work stays
on the screen and in the scrollback (and in a log when the output is not a terminal), and
each line still says whose it is; the one status line at the bottom says where all are."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from runner.job import Outcome, RunEvent, RunFinished, RunStarted, Verifying
from runner.localstate import AttemptSet, LocalPipeline
from runner.printable import printable
from runner.ranking import AttemptResult, cut_short
from runner.terminal import event_line, safe

COLOURS = ("cyan", "magenta", "blue", "green", "yellow", "bright_cyan", "bright_magenta", "red")
STANDING_STYLE = {
    "passed": "bold green",
    "done": "green",
    "failed": "bold red",
    "no change": "yellow",
    Outcome.FAILURE.value: "red",
    Outcome.TIMED_OUT.value: "yellow",
    Outcome.CANCELLED.value: "yellow",
    Outcome.ERROR.value: "red",
}
LAST_WORD_WIDTH = 60


def colour(number: int) -> str:
    return COLOURS[(number - 1) % len(COLOURS)]


def prefixed(number: int, width: int, event: RunEvent) -> Text | None:
    """`event`'s line (runner.terminal), led by its attempt's number, or None."""
    line = event_line(event)
    if line is None:
        return None
    return Text.assemble((f"{number:>{width}}│", colour(number)), line)


class Progress:
    """Where each attempt is, for the status line: starting, running, checking, or how it
    ended (and what its checks said)."""

    def __init__(self, agents: dict[int, str]) -> None:
        self.agents = agents
        self.state = dict.fromkeys(agents, "starting")

    def saw(self, number: int, event: RunEvent) -> None:
        if isinstance(event, RunStarted):
            self.state[number] = "running"
        elif isinstance(event, Verifying):
            self.state[number] = "checking"
        elif isinstance(event, RunFinished):
            said = event.outcome.value
            if event.verify is not None:
                said += " (checks passed)" if event.verify.passed else " (checks failing)"
            self.state[number] = said

    def line(self, seconds: float) -> str:
        parts = [f"{n} {self.agents[n]} {state}" for n, state in self.state.items()]
        return f"attempts {seconds:.0f}s: " + " · ".join(parts) + "  (Ctrl-C stops all and saves)"


def _money(value: float | None) -> str:
    return "—" if value is None else f"${value:.4f}"


def ranking_table(ranked: Sequence[AttemptResult], picked: int | None = None) -> Table:
    """The ranked attempts, best first; every agent-derived text made printable."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for name, justify in (
        ("rank", "right"), ("attempt", "right"), ("agent", "left"), ("verify", "left"),
        ("checks", "right"), ("files", "right"), ("lines", "right"), ("cost", "right"),
        ("tokens", "right"), ("took", "right"), ("last word", "left"),
    ):  # fmt: skip
        table.add_column(name, justify=justify, no_wrap=name != "last word")  # type: ignore[arg-type]
    for rank, result in enumerate(ranked, 1):
        standing = result.standing
        checks = (
            f"{result.checks_passed}✓ {result.checks_failed}✗"
            if result.verified is not None
            else "—"
        )
        mark = " ←" if result.number == picked else ""
        table.add_row(
            str(rank),
            Text(f"{result.number}{mark}", colour(result.number)),
            Text(safe(result.agent, 20)),
            Text(standing, STANDING_STYLE.get(standing, "")),
            checks,
            str(result.files_changed),
            str(result.lines_changed),
            _money(result.cost_usd),
            f"{result.tokens:,}" if result.tokens else "—",
            f"{result.seconds:.1f}s" if result.seconds is not None else "—",
            Text(cut_short(printable(result.last_word, one_line=True), LAST_WORD_WIDTH)),
        )
    return table


def reason_lines(ranked: Sequence[AttemptResult], branches: dict[int, str]) -> list[Text]:
    """Each attempt's branch, and why it did not finish with work when it did not."""
    lines = []
    for result in sorted(ranked, key=lambda r: r.number):
        why = f": {printable(result.reason, 200, one_line=True)}" if result.reason else ""
        lines.append(
            Text.assemble(
                (f"  {result.number} ", colour(result.number)),
                branches[result.number],
                (f"  {result.commits} commit(s){why}", "dim"),
            )
        )
    return lines


def spend_line(ranked: Sequence[AttemptResult]) -> Text | None:
    """The attempts' cost together, when any agent reported one."""
    costs = [r.cost_usd for r in ranked if r.cost_usd is not None]
    if not costs:
        return None
    return Text(f"Spend: ${sum(costs):.4f} across {len(ranked)} attempts", "dim")


def show_attempts(
    out: Console,
    pipeline: LocalPipeline,
    attempt_set: AttemptSet,
    ranked: Sequence[AttemptResult],
    notes: Sequence[Text],
) -> None:
    """The end of `trimo run --attempts`: the ranked table, each attempt's branch and why it
    ended so, the spend, then what `pick: auto` did (`notes`) and what to do next."""
    out.print()
    order = attempt_set.order
    out.print(Text(f"Attempts of {pipeline.name}, best first (ranked by {order}):", "bold"))
    out.print(ranking_table(ranked, attempt_set.picked))
    branches = {a.number: a.branch for a in attempt_set.attempts}
    for line in reason_lines(ranked, branches):
        out.print(line, highlight=False)
    if (spend := spend_line(ranked)) is not None:
        out.print(spend)
    out.print()
    for note in notes:
        out.print(note, highlight=False)
    if attempt_set.picked is not None:
        out.print(f'Continue with: trimo run --pipeline {pipeline.name} "…"', highlight=False)
    elif keepable := [r.number for r in ranked if r.commits]:
        out.print(
            f"Keep one: trimo pick {pipeline.name} {keepable[0]}   "
            f"(its commits become {pipeline.branch})",
            highlight=False,
        )
