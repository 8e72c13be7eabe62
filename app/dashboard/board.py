"""The board's logic, pure: which column a pipeline is in, what its card says, the filters.

Columns: queued, running, needs you (failed, timed out, stopped, refused, runner lost, a
discovery's plan ready, or finished with nothing to review), ready for review (finished
with commits and a pull request open), done (the issue or pull request was merged or
closed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal
from urllib.parse import urlencode

from app.reporting.runview import duration, money
from app.runs.summary import PipelineSummary, RunBrief
from runner.contract import RUNNER_LOST
from runner.job import Outcome

Column = Literal["queued", "running", "needs_you", "review", "done"]
COLUMNS: Final[tuple[Column, ...]] = ("queued", "running", "needs_you", "review", "done")
COLUMN_TITLES: Final[Mapping[Column, str]] = {
    "queued": "Queued",
    "running": "Running",
    "needs_you": "Needs you",
    "review": "Ready for review",
    "done": "Done",
}
EMPTY_COLUMNS: Final[Mapping[Column, str]] = {
    "queued": "Nothing waits for a runner.",
    "running": "No agent is at work.",
    "needs_you": "Nothing needs you.",
    "review": "Nothing to review.",
    "done": "Merged and closed pipelines land here.",
}
TAB_STATES: Final[Mapping[Column, str]] = {
    "queued": "queued",
    "running": "running",
    "needs_you": "attention",
    "review": "ready",
    "done": "done",
}
"""What a page's tab (title mark and favicon) shows for a pipeline or run in a column."""
SHOWN_PER_COLUMN: Final = 50
"""Cards a column shows; the rest are counted (filters narrow them down)."""
PROMPT_ON_CARD: Final = 90


STEP_CHARS: Final = 100
ERROR_CHARS: Final = 160
TITLE_ON_CARD: Final = 120
"""A pull request's title on a card is cut to this (its whitespace, newlines too, folded)."""


@dataclass(frozen=True)
class Usage:
    """Tokens and cost of a run, as its events reported them, and its latest step."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    step: str = ""
    """Its last tool call, or what it checks now (`verify:`)."""


def total_usage(usages: Iterable[Usage]) -> Usage:
    """The tokens and cost of several runs added up (no cost when none reported one)."""
    found = list(usages)
    costs = [u.cost_usd for u in found if u.cost_usd is not None]
    return Usage(
        input_tokens=sum(u.input_tokens for u in found),
        output_tokens=sum(u.output_tokens for u in found),
        cost_usd=sum(costs) if costs else None,
    )


def runs_of(summary: PipelineSummary) -> list[str]:
    """The ids of a pipeline's runs (its focused run's, from a summary stored before they
    were kept)."""
    if summary.run_ids:
        return summary.run_ids
    return [summary.run.run_id] if summary.run else []


@dataclass(frozen=True)
class Filters:
    """What the board is narrowed to, from the URL's query (empty: everything)."""

    repo: str = ""
    person: str = ""
    agent: str = ""
    state: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Filters:
        def field(name: str) -> str:
            return " ".join(str(query.get(name, "")).split())[:100]

        state = field("state")
        return cls(
            repo=field("repo"),
            person=field("person").removeprefix("@"),
            agent=field("agent"),
            state=state if state in COLUMNS else "",
        )

    def query(self, **changes: str) -> str:
        """The URL query of these filters with `changes` applied (empty values dropped)."""
        values = {**self.as_dict(), **changes}
        return urlencode({k: v for k, v in values.items() if v})

    def as_dict(self) -> dict[str, str]:
        return {"repo": self.repo, "person": self.person, "agent": self.agent, "state": self.state}

    @property
    def active(self) -> bool:
        return any(self.as_dict().values())


def column_of(summary: PipelineSummary, pull: int | None) -> Column:
    """The column of a pipeline, given the number of its open pull request (if any)."""
    if summary.closed:
        return "done"
    if summary.activity == "running":
        return "running"
    if summary.activity == "queued":
        return "queued"
    run = summary.run
    if run is None:
        return "done"
    if run.outcome is Outcome.SUCCESS and summary.commits and pull is not None:
        return "review"
    return "needs_you"


def run_column(status: str, outcome: Outcome | None, commits: int, mode: str) -> Column:
    """The column one run alone would be in (a run page's tab state)."""
    if status == "running":
        return "running"
    if status != "finished":
        return "queued"
    done = outcome is Outcome.SUCCESS and (commits or mode == "discover")
    return "review" if done else "needs_you"


def state_words(summary: PipelineSummary, column: Column) -> str:
    """Why the card is where it is, in a few words."""
    run = summary.run
    if column in ("queued", "running") or run is None:
        return {"queued": "waiting for a runner", "running": "running"}.get(column, "")
    if column == "done":
        return "closed"
    match run.outcome:
        case Outcome.SUCCESS if run.mode == "discover":
            return "plan ready"
        case Outcome.SUCCESS:
            return "ready for review" if column == "review" else "finished with no changes"
        case Outcome.FAILURE:
            return "failed"
        case Outcome.TIMED_OUT:
            return "timed out"
        case Outcome.CANCELLED:
            return "cancelled"
        case Outcome.ERROR if RUNNER_LOST in run.reason:
            return "runner lost"
        case Outcome.ERROR if run.reason.startswith("refused"):
            return "refused"
        case _:
            return "could not run"


def matches(summary: PipelineSummary, column: Column, filters: Filters) -> bool:
    if filters.repo and summary.repo.lower() != filters.repo.lower():
        return False
    if filters.person and filters.person.lower() not in (p.lower() for p in summary.people):
        return False
    if filters.agent and filters.agent not in summary.agents:
        return False
    return not filters.state or filters.state == column


@dataclass(frozen=True)
class Card:
    """What one card shows; text here is untrusted (the template escapes it)."""

    id: str
    column: Column
    state: str
    repo: str
    number: int
    kind: str
    title: str
    branch: str
    agent: str
    prompt: str
    person: str
    runner: str
    since: datetime
    """When what the clock shows began: the run's start while running, else the last change."""
    elapsed: str
    tokens: str
    cost: str
    pull: int | None
    run_id: str
    verify: str = ""
    """What the run's checks of `verify:` said: "verified", "checks failing" or nothing."""
    error: str = ""
    """Why a run in Needs you ended, in the agent's or Trimo's words."""
    step: str = ""
    """What a running run does now (its last tool call)."""
    retry: bool = False
    """Whether the card offers Retry (its last run failed, timed out or could not run)."""


def tokens_text(usage: Usage) -> str:
    total = usage.input_tokens + usage.output_tokens
    if not total:
        return ""
    if total >= 1_000_000:
        return f"{total / 1_000_000:.1f}M tokens"
    return f"{total / 1000:.1f}k tokens" if total >= 1000 else f"{total} tokens"


def ago(seconds: float) -> str:
    """`just now`, `5m ago`, `3h ago`, `2d ago`."""
    seconds = max(0, int(seconds))
    if seconds < 45:
        return "just now"
    if seconds < 3600:
        return f"{max(1, round(seconds / 60))}m ago"
    if seconds < 86400:
        return f"{seconds // 3600}h ago"
    return f"{seconds // 86400}d ago"


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def card_of(
    summary: PipelineSummary,
    pull: int | None,
    usage: Mapping[str, Usage],
    now: datetime,
    pull_title: str = "",
) -> Card:
    """`summary`'s card; `usage`: what its runs' views say, by run id; `pull_title`: the
    kept title of its pull request, which the card shows once there is one."""
    column = column_of(summary, pull)
    run: RunBrief | None = summary.run
    total = total_usage(usage[r] for r in runs_of(summary) if r in usage)
    focus = usage.get(run.run_id) if run else None
    state = state_words(summary, column)
    failed = column == "needs_you" and state not in ("plan ready", "finished with no changes")
    if column == "running" and run is not None and run.started_at is not None:
        since = run.started_at
        elapsed = duration((now - since).total_seconds())
    else:
        since = summary.updated_at
        elapsed = ago((now - since).total_seconds())
    prompt = " ".join((run.prompt if run else "").split())
    title = _clip(pull_title, TITLE_ON_CARD) if pull is not None and pull_title else summary.title
    return Card(
        id=summary.id,
        column=column,
        state=state,
        repo=summary.repo,
        number=summary.number,
        kind=summary.kind,
        title=title,
        branch=summary.branch,
        agent=run.agent if run else "",
        prompt=prompt if len(prompt) <= PROMPT_ON_CARD else prompt[: PROMPT_ON_CARD - 1] + "…",
        person=run.requested_by if run else "",
        runner=(run.runner or "") if run else "",
        since=since,
        elapsed=elapsed,
        tokens=tokens_text(total),
        cost=money(total.cost_usd),
        pull=pull,
        run_id=run.run_id if run else "",
        verify=run.verify if run else "",
        error=_clip(run.reason, ERROR_CHARS) if run and failed else "",
        step=_clip(focus.step, STEP_CHARS) if focus and column == "running" else "",
        retry=failed and state != "cancelled" and not summary.closed,
    )


@dataclass(frozen=True)
class Placed:
    """Pipelines per column (the shown ones), how many each holds, and what to filter by."""

    columns: Mapping[Column, list[PipelineSummary]]
    counts: Mapping[Column, int]
    repos: list[str]
    people: list[str]
    agents: list[str]

    def runs(self) -> list[tuple[str, bool]]:
        """The runs of the shown cards (whose usage they add up), each with whether it is
        over (its usage final): every run but a card's going one."""
        return [
            (run_id, s.activity == "finished" or s.run is None or run_id != s.run.run_id)
            for cards in self.columns.values()
            for s in cards
            for run_id in runs_of(s)
        ]


def place(
    summaries: Iterable[PipelineSummary], pulls: Mapping[str, int], filters: Filters
) -> Placed:
    """Each pipeline in its column, latest change first (as `summaries` come), at most
    `SHOWN_PER_COLUMN` shown; `summaries` already limited to what the viewer may see."""
    columns: dict[Column, list[PipelineSummary]] = {column: [] for column in COLUMNS}
    counts: dict[Column, int] = dict.fromkeys(COLUMNS, 0)
    repos: set[str] = set()
    people: set[str] = set()
    agents: set[str] = set()
    for summary in summaries:
        repos.add(summary.repo)
        people.update(summary.people)
        agents.update(summary.agents)
        column = column_of(summary, pulls.get(summary.id))
        if not matches(summary, column, filters):
            continue
        counts[column] += 1
        if counts[column] <= SHOWN_PER_COLUMN:
            columns[column].append(summary)
    return Placed(
        columns=columns,
        counts=counts,
        repos=sorted(repos, key=str.lower),
        people=sorted(people, key=str.lower),
        agents=sorted(agents),
    )


@dataclass(frozen=True)
class Board:
    columns: Mapping[Column, list[Card]]
    counts: Mapping[Column, int]
    repos: list[str]
    people: list[str]
    agents: list[str]


def build_board(
    placed: Placed,
    pulls: Mapping[str, int],
    titles: Mapping[str, str],
    usage: Mapping[str, Usage],
    now: datetime,
) -> Board:
    """The cards of `placed`, with their pull requests (numbers and titles) and their runs'
    usage."""
    return Board(
        columns={
            column: [card_of(s, pulls.get(s.id), usage, now, titles.get(s.id, "")) for s in shown]
            for column, shown in placed.columns.items()
        },
        counts=placed.counts,
        repos=placed.repos,
        people=placed.people,
        agents=placed.agents,
    )
