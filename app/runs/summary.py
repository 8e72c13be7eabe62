"""A pipeline in a few fields: what a list of pipelines shows, kept beside each pipeline.

The store writes one with every change (`Pipelines._save`), so the dashboard's board
reads a thousand small summaries instead of a thousand whole histories. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Final, Literal

from pydantic import BaseModel

from runner.events import Usage, add_usage
from runner.job import Outcome, VerifyReport

if TYPE_CHECKING:
    from app.runs.pipelines import Pipeline, PipelineRun

PROMPT_CHARS: Final = 200
REASON_CHARS: Final = 200

Activity = Literal["queued", "running", "finished", "none"]
VerifyState = Literal["", "verified", "checks failing"]
"""What a run's checks of `verify:` said: nothing (none ran), all passed, or some failed."""


def verify_state(report: VerifyReport | None) -> VerifyState:
    if report is None or not report.checks:
        return ""
    return "verified" if report.passed else "checks failing"


def pipeline_usage(runs: Iterable[PipelineRun]) -> Usage | None:
    """Tokens and cost summed over all `runs` of a pipeline (None when none reported any):
    what a pipeline's card and page show as its spend."""
    total: Usage | None = None
    for run in runs:
        if run.usage is not None:
            total = add_usage(total, run.usage)
    return total


class RunBrief(BaseModel):
    """The run a card talks about: the one going, else the one next in line, else the last."""

    run_id: str
    prompt: str
    mode: str = "code"
    agent: str
    label: str
    requested_by: str
    status: str
    outcome: Outcome | None = None
    reason: str = ""
    runner: str | None = None
    commits: int = 0
    verify: VerifyState = ""
    check_run_id: int | None = None
    requested_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class PipelineSummary(BaseModel):
    id: str
    repo: str
    number: int
    kind: str
    title: str = ""
    branch: str
    base_branch: str
    clone_url: str
    closed: bool
    activity: Activity
    runs: int
    commits: int
    """Commits all its runs pushed."""
    people: list[str]
    agents: list[str]
    usage: Usage | None = None
    """Tokens and cost of all its runs (`pipeline_usage`)."""
    run: RunBrief | None
    run_ids: list[str] = []
    """Every run's id, oldest first (what the card's tokens and cost add up)."""
    created_at: datetime
    updated_at: datetime


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _brief(run: PipelineRun) -> RunBrief:
    return RunBrief(
        run_id=run.run_id,
        prompt=_clip(run.prompt.strip(), PROMPT_CHARS),
        mode=run.mode,
        agent=run.agent,
        label=run.label,
        requested_by=run.requested_by,
        status=run.status,
        outcome=run.outcome,
        reason=_clip(run.reason, REASON_CHARS),
        runner=run.runner,
        commits=len(run.commits),
        verify=verify_state(run.verify),
        check_run_id=run.check_run_id,
        requested_at=run.requested_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
    )


def _focus(pipeline: Pipeline) -> tuple[Activity, PipelineRun | None]:
    running = next((r for r in pipeline.runs if r.status == "running"), None)
    if running is not None:
        return "running", running
    in_line = [r for r in pipeline.runs if r.status in ("waiting", "queued")]
    if in_line and not pipeline.closed:
        return "queued", pipeline.active() or in_line[0]
    last = pipeline.last_run()
    return ("finished", last) if last is not None else ("none", None)


def summarise(pipeline: Pipeline) -> PipelineSummary:
    activity, run = _focus(pipeline)
    return PipelineSummary(
        id=pipeline.id,
        repo=pipeline.repo,
        number=pipeline.number,
        kind=pipeline.kind,
        title=pipeline.title,
        branch=pipeline.branch,
        base_branch=pipeline.base_branch,
        clone_url=pipeline.clone_url,
        closed=pipeline.closed,
        activity=activity,
        runs=len(pipeline.runs),
        commits=sum(len(r.commits) for r in pipeline.runs),
        people=sorted({r.requested_by for r in pipeline.runs}),
        agents=sorted({r.agent for r in pipeline.runs}),
        usage=pipeline_usage(pipeline.runs),
        run=_brief(run) if run is not None else None,
        run_ids=[r.run_id for r in pipeline.runs],
        created_at=pipeline.created_at,
        updated_at=pipeline.updated_at,
    )
