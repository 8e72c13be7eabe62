"""A pipeline's sets of attempts on its page: the ranked table, the pick, and each
attempt's diff against the commit the set started from.

`sets_of` is pure (the table's rows come from `app.reporting.attemptsview`, as the thread's
comment does); `load_diffs` asks GitHub's compare API, one attempt at a time at once.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import datetime

from app.dashboard.diffs import DiffPage, compare_diff
from app.github.client import GitHubApp
from app.reporting import attemptsview
from app.runs.pipelines import AttemptSet, Pipeline, PipelineRun


@dataclass(frozen=True)
class Attempt:
    """One row of a set's table on the page."""

    row: attemptsview.Row
    kept: bool
    pickable: bool
    """It ended with commits, is not the one kept, and its branch is still there."""
    why_not: str
    """Why it cannot be picked now ("" when it can, or is the one kept)."""


@dataclass(frozen=True)
class AttemptsView:
    """A set of attempts as its pipeline's page shows it."""

    id: str
    prompt: str
    requested_by: str
    attempts: list[Attempt]
    ended: bool
    total_cost: str
    rank_by: str
    picked: int | None
    picked_by: str
    picked_at: datetime | None
    pick_note: str
    cleaned: bool
    heads: str
    """What its diffs show (each head, and the one kept), in short: they are drawn again
    only when this changes."""


def sets_of(pipeline: Pipeline) -> list[AttemptsView]:
    """The pipeline's sets of attempts, the latest first."""
    return [_view(pipeline, attempt_set) for attempt_set in reversed(pipeline.attempt_sets)]


def _view(pipeline: Pipeline, attempt_set: AttemptSet) -> AttemptsView:
    table = attemptsview.rows(pipeline, attempt_set)
    first = pipeline.find(attempt_set.runs[0]) if attempt_set.runs else None
    heads = "\0".join(
        [
            attempt_set.start_sha or "",
            str(attempt_set.picked),
            *(f"{r.number}:{r.result.outcome}:{r.result.head_sha}" for r in table),
        ]
    )
    return AttemptsView(
        id=attempt_set.id,
        prompt=first.prompt if first else "",
        requested_by=first.requested_by if first else "",
        attempts=[_attempt(row, attempt_set) for row in table],
        ended=attemptsview.all_ended(pipeline, attempt_set),
        total_cost=attemptsview.total_cost(table),
        rank_by=attemptsview.ranking_order(attempt_set),
        picked=attempt_set.picked,
        picked_by=attempt_set.picked_by,
        picked_at=attempt_set.picked_at,
        pick_note=attempt_set.pick_note,
        cleaned=attempt_set.cleaned,
        heads=hashlib.sha256(heads.encode()).hexdigest()[:16],
    )


def _attempt(row: attemptsview.Row, attempt_set: AttemptSet) -> Attempt:
    result = row.result
    kept = attempt_set.picked == row.number
    if kept:
        why_not = ""
    elif attempt_set.cleaned:
        why_not = "its branch was deleted"
    elif result.outcome is None:
        why_not = "still running"
    elif not result.commits or result.head_sha is None:
        why_not = "no commits"
    else:
        why_not = ""
    return Attempt(row=row, kept=kept, pickable=not kept and not why_not, why_not=why_not)


@dataclass(frozen=True)
class AttemptDiff:
    """One attempt's changes against the commit its set started from."""

    number: int
    agent: str
    kept: bool
    diff: DiffPage


async def load_diffs(
    github: GitHubApp | None, pipeline: Pipeline, attempt_set: AttemptSet
) -> list[AttemptDiff]:
    """Each attempt's diff, by attempt number (GitHub asked for all at once). A set saved
    before its start was recorded is compared with the pipeline's base branch."""
    start = attempt_set.start_sha or pipeline.base_branch
    runs = pipeline.attempts_of(attempt_set)

    async def one(run: PipelineRun) -> DiffPage:
        if run.status != "finished":  # its branch is pushed as its commits appear
            return await compare_diff(github, pipeline, start, run.branch or pipeline.branch)
        if run.head_sha is None or not run.commits:
            return DiffPage(problem="No commits: nothing to compare.")
        return await compare_diff(github, pipeline, start, run.head_sha)

    pages = await asyncio.gather(*(one(run) for run in runs))
    return [
        AttemptDiff(run.attempt, run.agent, attempt_set.picked == run.attempt, page)
        for run, page in zip(runs, pages, strict=True)
    ]
