"""issues.closed and pull_request.closed: stop what runs and close the pipeline."""

from __future__ import annotations

import logging

from app.conversation.handlers.context import router
from app.conversation.thread import Source, open_conversation
from app.edge.payloads import IssueClosedEvent, PullClosedEvent, RepoEvent
from app.runs import previews
from app.runs.attempts import attempt_ended
from app.runs.pipelines import Pipeline, Stopped
from app.runs.service import report_dropped
from app.services import Delivery
from runner import contract

log = logging.getLogger("trimo.app")


@router.on("issues", "closed")
async def issue_closed(delivery: Delivery) -> None:
    event = delivery.parse(IssueClosedEvent)
    await _close(delivery, event, event.issue.number, is_pull=event.issue.pull_request is not None)


@router.on("pull_request", "closed")
async def pull_closed(delivery: Delivery) -> None:
    event = delivery.parse(PullClosedEvent)
    pull = event.pull_request
    found = await delivery.services.pipelines.find_by_branch(
        event.repository.full_name, pull.head.ref
    )
    head_repo = pull.head.repo.full_name if pull.head.repo else None
    same_repo = (head_repo or "").lower() == event.repository.full_name.lower()
    if found is not None and found.kind == "branch" and same_repo:
        # Started from the dashboard: its pull request is its only thread.
        await _close(delivery, event, pull.number, is_pull=True, pipeline=found)
        return
    await _close(delivery, event, pull.number, is_pull=True)


async def _close(
    delivery: Delivery,
    event: RepoEvent,
    number: int,
    *,
    is_pull: bool,
    pipeline: Pipeline | None = None,
) -> None:
    pipelines = delivery.services.pipelines
    pipeline = pipeline or await pipelines.for_thread(event.repository.full_name, number)
    if pipeline is None:
        return
    conv = await open_conversation(
        delivery, event, Source(user=event.sender.login), number=number, is_pull=is_pull
    )
    if conv is None:
        return
    reason = f"the {conv.thread.kind} was closed"
    stopped = await pipelines.close(pipeline.id, reason)
    after = await pipelines.get(pipeline.id) or pipeline
    # Also runs dropped by an earlier attempt of this job that failed before reporting them.
    dropped = {s.run.run_id: s for s in stopped if s.how == "dropped"}
    for run in after.runs:
        if run.status == "finished" and not run.started and run.reason == reason:
            dropped.setdefault(run.run_id, Stopped(run=run, how="dropped"))
    for item in dropped.values():
        await report_dropped(delivery, conv.api, after, item, "closed", event.sender.login)
    # A set that never started gets no finished event: its table is ended here.
    for run in {
        item.run.set_id: item.run for item in dropped.values() if item.run.attempt
    }.values():
        await attempt_ended(delivery.services, conv.api, after.id, run.run_id)
    preview = await previews.load_record(delivery.services.redis, pipeline.id)
    if preview is not None and preview.live:
        await previews.end_preview(delivery.services, conv.api, preview, reason)
    attempts = [contract.attempt_pipeline(pipeline.id, r.attempt) for r in after.runs if r.attempt]
    for name in (pipeline.id, *attempts):
        await delivery.services.redis.xadd(
            contract.CLOSED_PIPELINES,
            {"clone_url": pipeline.clone_url, "pipeline": name},
            maxlen=contract.CLOSED_PIPELINES_MAXLEN,
            approximate=True,
        )  # runners delete the pipeline's (and its attempts') workspace, home and disk
    log.info(
        "pipeline %s closed: %d run(s) dropped, %d aborting",
        pipeline.id,
        len(dropped),
        sum(1 for s in stopped if s.how == "aborting"),
    )
