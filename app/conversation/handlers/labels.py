"""issues.labeled: the trigger label starts a run with the issue as the prompt; the discover
label starts a discovery run (read-only, answers with a plan) on the issue."""

from __future__ import annotations

from app.conversation.commands import RunCommand
from app.conversation.handlers.context import router
from app.conversation.repoconfig import ConfigError, RepoConfig
from app.conversation.thread import (
    Source,
    asker_role,
    authorise,
    load_config,
    open_conversation,
    report_config_error,
)
from app.edge.payloads import IssueLabeledEvent
from app.runs.service import request_run
from app.services import Delivery
from runner.templating import render


@router.on("issues", "labeled")
async def issue_labeled(delivery: Delivery) -> None:
    event = delivery.parse(IssueLabeledEvent)
    issue = event.issue
    if event.sender.is_bot or issue.pull_request is not None:
        return
    conv = await open_conversation(
        delivery,
        event,
        Source(user=event.sender.login, target="issue", target_id=issue.number),
        number=issue.number,
        is_pull=False,
        state=issue.state,
        title=issue.title,
        body=issue.body or "",
    )
    if conv is None:
        return
    config = await load_config(conv.api, event.repository.default_branch)
    usable = config if isinstance(config, RepoConfig) else RepoConfig()
    if event.label.name == usable.trigger_label:
        prompt = render("github/label_prompt.md.j2", title=issue.title, body=issue.body or "")
        command = RunCommand(prompt=prompt.strip())
    elif event.label.name == usable.discover_label:
        command = RunCommand(prompt="", mode="discover")
    else:
        return
    if not await authorise(conv, config, await asker_role(conv)):
        return
    if isinstance(config, ConfigError):
        await report_config_error(conv, config)
        return
    await request_run(conv, config, command)
