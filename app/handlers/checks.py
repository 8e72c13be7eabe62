"""check_run.requested_action (Stop / Retry buttons) and check_run.rerequested (Re-run)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from app.conversation import (
    Conversation,
    Source,
    authorise,
    config_and_role,
    load_config,
    open_conversation,
    report_config_error,
)
from app.handlers.context import router
from app.payloads import CheckRunEvent
from app.pipelines import Pipeline, PipelineRun
from app.repoconfig import ConfigError
from app.runs import retry_run, stop_run
from app.services import Delivery

Button = Callable[[Conversation, Pipeline, PipelineRun], Awaitable[None]]


async def _stop(conv: Conversation, pipeline: Pipeline, run: PipelineRun) -> None:
    await stop_run(conv, pipeline, run)


async def _retry(conv: Conversation, pipeline: Pipeline, run: PipelineRun) -> None:
    config = await load_config(conv.api, conv.thread.repo.default_branch)
    if isinstance(config, ConfigError):
        await report_config_error(conv, config)
        return
    await retry_run(conv, config, pipeline, run)


BUTTONS: dict[str, Button] = {"stop": _stop, "retry": _retry}
"""Check-run action identifiers and what they do."""


@router.on("check_run", "requested_action")
async def check_run_action(delivery: Delivery) -> None:
    event = delivery.parse(CheckRunEvent)
    action = event.requested_action
    button = BUTTONS.get(action.identifier) if action else None
    if button is not None:
        await _press(delivery, event, button)


@router.on("check_run", "rerequested")
async def check_run_rerequested(delivery: Delivery) -> None:
    await _press(delivery, delivery.parse(CheckRunEvent), _retry)


async def _press(delivery: Delivery, event: CheckRunEvent, button: Button) -> None:
    """Find the run behind the check run, authorise the sender, then press `button`."""
    app_id = delivery.services.settings.github_app_id
    check = event.check_run
    if check.app is not None and app_id is not None and check.app.id != app_id:
        return
    if event.sender.is_bot or not check.external_id:
        return
    found = await delivery.services.pipelines.get_run(check.external_id)
    if found is None:
        return
    pipeline, run = found
    conv = await open_conversation(
        delivery,
        event,
        Source(user=event.sender.login),
        number=run.thread,
        is_pull=pipeline.kind == "pull" or run.thread != pipeline.number,
        state="closed" if pipeline.closed else "open",
    )
    if conv is None:
        return
    config, role = await config_and_role(conv)
    if await authorise(conv, config, role):
        await button(conv, pipeline, run)
