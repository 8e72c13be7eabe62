"""trimo_dashboard.*: what people ask from the dashboard, handled like comment commands.

The web process queues these deliveries (GitHub never sends this event, and the webhook
edge never takes it). Each opens a conversation on the pipeline's issue or pull request for
whoever asked, checks their role against the repository's config, leaves a note there
("requested from the dashboard by @user"), and calls the runs service.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from app.conversation.commands import RunCommand
from app.conversation.handlers.context import router
from app.conversation.naming import branch_pipeline_id, inline_code, slugify
from app.conversation.repoconfig import ConfigError, RepoConfig
from app.conversation.thread import (
    Conversation,
    Source,
    authorise,
    config_and_role,
    fenced,
    open_conversation,
    report_config_error,
)
from app.dashboard.data import remember_answer, remember_started
from app.dashboard.requests import DASHBOARD_EVENT, DashboardAsk, DashboardEvent
from app.reporting.channels.pullrequest import pull_of_pipeline
from app.runs.attempts import pick_attempt
from app.runs.pipelines import Pipeline
from app.runs.previews import request_preview, stop_preview
from app.runs.service import (
    follow_up,
    record_refused,
    request_run,
    retry_run,
    start_branch_pipeline,
    stop_run,
)
from app.services import Delivery
from runner.job import ReviewContext

log = logging.getLogger("trimo.app")

MAX_PROMPT_IN_NOTE = 1000


@router.on(DASHBOARD_EVENT, "new")
async def new_pipeline(delivery: Delivery) -> None:
    """A pipeline with no issue behind it: a new branch, its first run, later its PR."""
    event = delivery.parse(DashboardEvent)
    if event.installation is None:
        return
    api = await delivery.services.github.repo(event.installation.id, event.repository.full_name)
    info = await api.repository()
    repository = event.repository.model_copy(
        update={"clone_url": info.clone_url, "default_branch": info.default_branch}
    )
    event = event.model_copy(update={"repository": repository})
    conv = await open_conversation(
        delivery, event, Source(user=event.sender.login), number=0, is_pull=False,
        title=event.ask.prompt,
    )  # fmt: skip
    if conv is None:
        return
    config, role = await config_and_role(conv, run_asked=True)
    allowed = await authorise(conv, config, role)
    if allowed and isinstance(config, ConfigError):
        await report_config_error(conv, config)
    command = _run_command(event.ask)
    base = event.ask.base_branch
    made: Pipeline | None
    if not allowed or isinstance(config, ConfigError):
        # No thread to answer on: the refusal shows on the dashboard, as a failed run.
        seed_config = config if isinstance(config, RepoConfig) else RepoConfig()
        made = await _refused_on_the_board(conv, seed_config, command, base)
    else:
        made = await start_branch_pipeline(conv, config, command, base)
        if made is not None and await delivery.services.pipelines.get(made.id) is None:
            # Attempts refused (more than the server allows, an agent's settings): the
            # refusal shows on the dashboard as a failed run, as any other does.
            await record_refused(conv, made, command.prompt, command.agent or config.agent)
    if made is not None:  # where the person who pressed Start lands
        await remember_started(delivery.services.redis, delivery.delivery_id, made.id)


async def _refused_on_the_board(
    conv: Conversation, config: RepoConfig, command: RunCommand, base_branch: str
) -> Pipeline:
    repo = conv.thread.repo
    branch = config.branch_prefix + slugify(command.prompt.strip().splitlines()[0] or "new")
    seed = Pipeline(
        id=branch_pipeline_id(repo.full_name, branch), number=0, kind="branch",
        branch=branch, base_branch=base_branch or repo.default_branch, repo=repo.full_name,
        clone_url=repo.clone_url, installation_id=conv.thread.installation_id,
        title=command.prompt.strip().splitlines()[0][:200],
    )  # fmt: skip
    await record_refused(conv, seed, command.prompt, command.agent or config.agent)
    return seed


@router.on(DASHBOARD_EVENT, "stop", "retry", "run", "preview", "preview_stop", "pick")
async def dashboard_request(delivery: Delivery) -> None:
    event = delivery.parse(DashboardEvent)
    ask = event.ask
    pipeline = await delivery.services.pipelines.get(ask.pipeline) if ask.pipeline else None
    if pipeline is None or pipeline.repo.lower() != event.repository.full_name.lower():
        log.warning("delivery %s: no pipeline %r here", delivery.delivery_id, ask.pipeline)
        return
    # Its issue or pull request; a pipeline started here has its pull request once open.
    number = pipeline.number or await pull_of_pipeline(delivery.services.redis, pipeline) or 0
    conv = await open_conversation(
        delivery,
        event,
        Source(user=event.sender.login),
        number=number,
        is_pull=pipeline.kind != "issue" and number > 0,
        state="closed" if pipeline.closed else "open",
        title=pipeline.title,
        review=_review(ask),
    )
    if conv is None:
        return
    config, role = await config_and_role(conv, run_asked=event.action in ("run", "retry"))
    if not await authorise(conv, config, role):
        return
    await _note(conv, event.action, pipeline, ask.prompt, ask.run_id)
    said = len(conv.said)
    if event.action == "pick":
        await pick_attempt(conv, pipeline, ask.attempt or 0)
        await _answer(conv, pipeline, said)
    elif event.action == "stop":
        run = pipeline.find(ask.run_id) if ask.run_id else pipeline.active()
        await stop_run(conv, pipeline, run, with_its_set=True)
    elif event.action == "preview_stop":
        await stop_preview(conv, pipeline)
    elif isinstance(config, ConfigError):
        await report_config_error(conv, config)
    elif event.action == "retry":
        run = pipeline.find(ask.run_id) if ask.run_id else pipeline.last_run()
        await retry_run(conv, config, pipeline, run)
    elif event.action == "preview":
        await request_preview(conv, config, pipeline)
    else:
        runs = len(pipeline.runs)
        if pipeline.kind == "branch":
            await follow_up(conv, config, pipeline, _run_command(ask))
        else:
            await request_run(conv, config, _run_command(ask))
        after = await delivery.services.pipelines.get(pipeline.id)
        if after is None or len(after.runs) == runs:  # refused: say why on the page too
            await _answer(conv, pipeline, said)


def _run_command(ask: DashboardAsk) -> RunCommand:
    return RunCommand(
        prompt=ask.prompt,
        agent=ask.agent or None,
        attempts=ask.attempts,
        agents=ask.agent_names(),
    )


async def _answer(conv: Conversation, pipeline: Pipeline, said: int) -> None:
    """Show on the pipeline's page what Trimo replied to this request (its last reply
    after the first `said`): the person who asked looks there, not always on the thread."""
    if len(conv.said) <= said:
        return
    body = conv.said[-1]

    async def keep() -> None:
        await remember_answer(conv.services.redis, pipeline.id, conv.source.user, body)

    await conv.delivery.once("dashboard-answer", _none(keep))


def _review(ask: DashboardAsk) -> ReviewContext | None:
    """A line comment's file, line and hunk, as a review comment on GitHub gives them."""
    if not ask.path:
        return None
    return ReviewContext(path=ask.path, line=ask.line, diff_hunk=ask.diff_hunk)


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


def _none(step: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[int | None]]:
    """A side effect with no result, as `Delivery.once` runs it."""

    async def run() -> int | None:
        await step()
        return None

    return run
