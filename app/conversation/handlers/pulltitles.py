"""pull_request.edited: a pipeline's pull request renamed, so its card shows the new title."""

from __future__ import annotations

import logging

from app.conversation.handlers.context import router
from app.edge.payloads import PullEditedEvent
from app.reporting.channels.pullrequest import keep_pull_title, pull_of_pipeline
from app.runs.pipelines import CHANGES
from app.services import Delivery

log = logging.getLogger("trimo.app")


@router.on("pull_request", "edited")
async def pull_edited(delivery: Delivery) -> None:
    """Keep the title of a pull request that belongs to a pipeline: its own (a "pull"
    pipeline) or the one opened for it (found by its head branch or the thread index). The
    pipeline's recorded pull request must be this one: another pull request from a branch of
    the same name (a fork's) renames nothing."""
    event = delivery.parse(PullEditedEvent)
    pull, repo = event.pull_request, event.repository.full_name
    pipelines, redis = delivery.services.pipelines, delivery.services.redis
    for pipeline in (
        await pipelines.for_thread(repo, pull.number),
        await pipelines.find_by_branch(repo, pull.head.ref),
    ):
        if pipeline is not None and await pull_of_pipeline(redis, pipeline) == pull.number:
            await keep_pull_title(redis, pipeline.id, pull.title)
            await redis.publish(CHANGES, pipeline.id)  # open boards redraw its card
            log.info("pull request #%d of %s renamed", pull.number, pipeline.id)
            return
