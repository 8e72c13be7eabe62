"""trimo_dashboard.*: what people ask from the dashboard, handled like comment commands.

The web process queues these deliveries (GitHub never sends this event, and the webhook
edge never takes it). Each opens a conversation on the pipeline's issue or pull request for
whoever asked, checks their role against the repository's config, leaves a note there
("requested from the dashboard by @user"), and calls the runs service.
"""

from __future__ import annotations

import logging

from app.commands import RunCommand
from app.conversation import (
    Conversation,
    Source,
    authorise,
    config_and_role,
    fenced,
    open_conversation,
    report_config_error,
)
from app.dashboard.requests import DASHBOARD_EVENT, DashboardEvent
from app.handlers.context import router
from app.naming import inline_code
from app.pipelines import Pipeline
from app.repoconfig import ConfigError
from app.runs import request_run, retry_run, stop_run
from app.services import Delivery

log = logging.getLogger("trimo.app")

MAX_PROMPT_IN_NOTE = 1000


@router.on(DASHBOARD_EVENT, "stop", "retry", "run")
async def dashboard_request(delivery: Delivery) -> None:
    event = delivery.parse(DashboardEvent)
    ask = event.ask
    pipeline = await delivery.services.pipelines.get(ask.pipeline) if ask.pipeline else None
    if pipeline is None or pipeline.repo.lower() != event.repository.full_name.lower():
        log.warning("delivery %s: no pipeline %r here", delivery.delivery_id, ask.pipeline)
        return
    conv = await open_conversation(
        delivery,
        event,
        Source(user=event.sender.login),
        number=pipeline.number,
        is_pull=pipeline.kind == "pull",
        state="closed" if pipeline.closed else "open",
        title=pipeline.title,
    )
    if conv is None:
        return
    config, role = await config_and_role(conv)
    if not await authorise(conv, config, role):
        return
    await _note(conv, event.action, pipeline, ask.prompt, ask.run_id)
    if event.action == "stop":
        run = pipeline.find(ask.run_id) if ask.run_id else pipeline.active()
        await stop_run(conv, pipeline, run)
    elif isinstance(config, ConfigError):
        await report_config_error(conv, config)
    elif event.action == "retry":
        run = pipeline.find(ask.run_id) if ask.run_id else pipeline.last_run()
        await retry_run(conv, config, pipeline, run)
    else:
        await request_run(conv, config, RunCommand(prompt=ask.prompt, agent=ask.agent or None))


async def _note(
    conv: Conversation, action: str, pipeline: Pipeline, prompt: str, run_id: str
) -> None:
    """GitHub stays the record: what was asked from the dashboard, and by whom."""
    short = prompt if len(prompt) <= MAX_PROMPT_IN_NOTE else prompt[: MAX_PROMPT_IN_NOTE - 1] + "…"
    await conv.reply(
        "dashboard_request.md.j2",
        step="dashboard-note",
        action=action,
        prompt_block=fenced(short, "text") if short else "",
        run_id=inline_code(run_id) if run_id else "",
        branch=inline_code(pipeline.branch),
    )
