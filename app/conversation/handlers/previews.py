"""push: new commits on a pipeline's branch refresh its live preview."""

from __future__ import annotations

from app.conversation.handlers.context import router
from app.edge.events import ANY_ACTION
from app.edge.payloads import PushEvent
from app.runs import previews
from app.services import Delivery

BRANCH_PREFIX = "refs/heads/"


@router.on("push", ANY_ACTION)
async def pushed(delivery: Delivery) -> None:
    event = delivery.parse(PushEvent)
    if event.deleted or not event.ref.startswith(BRANCH_PREFIX):
        return
    services = delivery.services
    repo = event.repository.full_name
    pipeline = await services.pipelines.find_by_branch(repo, event.ref[len(BRANCH_PREFIX) :])
    if pipeline is None:
        return
    api = await services.github.repo(pipeline.installation_id, repo)
    await previews.after_push(services, api, pipeline, event.after, delivery.delivery_id)
