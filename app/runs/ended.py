"""What a run that is over says on a check run or progress comment that reached it late.

A delivery makes its run's check run and progress comment, then records them on the run.
When a try fails in between (the pipeline lock not to be had, a worker gone), the run is
in line already and goes ahead without them: by the retry it may have ended (a runner ran
it, it was dropped, or it could not start), and whoever reported that end had nothing to
complete. The retry then completes them itself, with what `ending` says.

A run is over when its pipeline says so, or when its own event stream ends with
`finished`. A runner writes a run's stream before the stream the reporter reads, so while
the run's stream has no `finished`, the reporter reads the run (with the objects just
recorded) after this look, and completes them itself. When both do, they say the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from arq.connections import ArqRedis
from pydantic import ValidationError

from app.conversation.naming import inline_code
from app.redisio import as_text
from app.reporting import runview
from app.reporting.runview import CheckConclusion, RunView
from app.runs.pipelines import Pipeline, PipelineRun, utcnow
from runner.contract import run_events
from runner.job import Outcome, RunFinished, run_event_adapter
from runner.templating import render

PAGE: Final = 100
"""Events read from a run's stream at once (each is capped, so a page is bounded)."""


@dataclass(frozen=True)
class Ending:
    """What a run's check run and progress comment say once it is over."""

    conclusion: CheckConclusion
    title: str
    summary: str
    comment: str
    ran: bool
    """Whether a runner took it up (its check run then offers Retry)."""


async def ending(redis: ArqRedis, pipeline: Pipeline, run: PipelineRun) -> Ending | None:
    """How `run` (as just saved with its report objects) ended; None while it goes on."""
    if run.status == "finished" and not run.started:
        return never_started(run)
    if run.status != "finished" and not await _stream_ended(redis, run.run_id):
        return None
    return ran(pipeline, run, await _view(redis, run))


def never_started(run: PipelineRun) -> Ending:
    """A run dropped, or refused its start, before any runner took it."""
    cancelled = run.outcome is Outcome.CANCELLED
    context = {
        "run_id": inline_code(run.run_id),
        "cancelled": cancelled,
        # Trimo's own words when dropped ("stopped by @alice"); GitHub's otherwise.
        "reason": run.reason if cancelled else inline_code(run.reason, 120),
    }
    title, summary = runview.title_and_summary(
        render("github/check_never_started.md.j2", **context)
    )
    return Ending(
        conclusion="cancelled" if cancelled else "failure",
        title=title,
        summary=summary,
        comment=render("github/run_never_started.md.j2", **context),
        ran=False,
    )


def ran(pipeline: Pipeline, run: PipelineRun, view: RunView) -> Ending:
    """A run a runner took up and ended, from its events (`view` holds its `finished`)."""
    finished = view.finished
    assert finished is not None
    title, summary = runview.check_finished(view, pipeline.branch, run.mode)
    check_url = (
        f"{runview.html_url(pipeline.clone_url)}/runs/{run.check_run_id}"
        if run.check_run_id is not None
        else ""
    )
    pull = pipeline.number if pipeline.kind == "pull" else None
    return Ending(
        conclusion=runview.conclusion_of(finished, run.mode),
        title=title,
        summary=summary,
        comment=runview.progress_finished(view, pipeline.branch, check_url, pull, mode=run.mode),
        ran=True,
    )


async def _stream_ended(redis: ArqRedis, run_id: str) -> bool:
    """Whether the run's last event is `finished` (its runner's last word)."""
    last = await redis.xrevrange(run_events(run_id), count=1)
    return bool(last) and _event_type(last[0][1]) == "finished"


async def _view(redis: ArqRedis, run: PipelineRun) -> RunView:
    """The run's events folded as the reporter folds them; its end from the pipeline when
    the stream no longer holds it (expired)."""
    view = RunView(
        run_id=run.run_id,
        agent=run.agent,
        mode=run.mode,
        runner=run.runner or "",
        started_at=run.started_at,
    )
    start = "-"
    while True:
        page = await redis.xrange(run_events(run.run_id), start, "+", count=PAGE)
        for _entry_id, fields in page:
            try:
                view = view.apply(run_event_adapter.validate_json(_field(fields, "event")))
            except ValidationError:
                continue  # the reporter parks what it cannot read; it says nothing here
        if len(page) < PAGE:
            break
        start = f"({as_text(page[-1][0])}"
    if view.finished is None:
        view.finished = RunFinished(
            run_id=run.run_id,
            outcome=run.outcome or Outcome.ERROR,
            reason=run.reason,
            head_sha=run.head_sha,
            commits=run.commits,
            diff=run.diff,
            plan=run.plan,
            at=run.finished_at or utcnow(),
        )
    return view


def _field(fields: dict[object, object], name: str) -> str:
    raw = fields.get(name.encode()) or fields.get(name)
    return as_text(raw if isinstance(raw, bytes | str) else None) or ""


def _event_type(fields: dict[object, object]) -> str:
    try:
        event = json.loads(_field(fields, "event"))
    except ValueError:
        return ""
    return str(event.get("type", "")) if isinstance(event, dict) else ""
