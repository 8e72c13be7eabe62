"""issue_comment.created and pull_request_review_comment.created: commands in comments."""

from __future__ import annotations

from app.conversation.commands import (
    USAGE,
    HelpCommand,
    Ignore,
    ParseResult,
    PickCommand,
    PreviewCommand,
    Reply,
    RetryCommand,
    RunCommand,
    StatusCommand,
    StopCommand,
    parse_comment,
)
from app.conversation.handlers.context import router
from app.conversation.naming import inline_code
from app.conversation.repoconfig import ConfigError, RepoConfig
from app.conversation.thread import (
    Conversation,
    Source,
    authorise,
    config_and_role,
    open_conversation,
    report_config_error,
)
from app.edge.payloads import Comment, IssueCommentEvent, ReviewCommentEvent
from app.runs.attempts import pick_attempt
from app.runs.previews import request_preview, stop_preview
from app.runs.service import request_run, retry_run, send_status, stop_run, thread_pipeline
from app.services import Delivery
from runner.contract import AGENTS
from runner.job import ReviewContext


@router.on("issue_comment", "created")
async def issue_comment_created(delivery: Delivery) -> None:
    event = delivery.parse(IssueCommentEvent)
    comment, issue = event.comment, event.issue
    parsed = command_in(delivery, comment)
    if parsed is None:
        return
    conv = await open_conversation(
        delivery,
        event,
        Source(
            user=comment.user.login,
            target="issue_comment",
            target_id=comment.id,
            association=comment.author_association,
        ),
        number=issue.number,
        is_pull=issue.pull_request is not None,
        state=issue.state,
        title=issue.title,
        body=issue.body or "",
    )
    if conv is not None:
        await run_command(conv, parsed)


@router.on("pull_request_review_comment", "created")
async def review_comment_created(delivery: Delivery) -> None:
    event = delivery.parse(ReviewCommentEvent)
    comment, pull = event.comment, event.pull_request
    parsed = command_in(delivery, comment)
    if parsed is None:
        return
    conv = await open_conversation(
        delivery,
        event,
        Source(
            user=comment.user.login,
            target="review_comment",
            target_id=comment.id,
            association=comment.author_association,
        ),
        number=pull.number,
        is_pull=True,
        state=pull.state,
        title=pull.title,
        body=pull.body or "",
        pull=pull.info(event.repository),
        review=ReviewContext(
            path=comment.path,
            line=comment.line or comment.original_line,
            diff_hunk=comment.diff_hunk,
        ),
    )
    if conv is not None:
        await run_command(conv, parsed)


def command_in(delivery: Delivery, comment: Comment) -> ParseResult | None:
    """What `comment` asks of Trimo; None for a bot's comment or plain conversation."""
    if comment.by_bot:
        return None
    parsed = parse_comment(comment.body or "", delivery.services.settings.app_slug)
    return None if isinstance(parsed, Ignore) else parsed


async def run_command(conv: Conversation, parsed: ParseResult) -> None:
    """Authorise the author, then do what the comment asks."""
    runs = isinstance(parsed, RunCommand | RetryCommand)
    config, role = await config_and_role(conv, run_asked=runs)
    if not await authorise(conv, config, role):
        return
    match parsed:
        case Ignore():
            return
        case Reply(text=text):
            await conv.reply("reply.md.j2", text=text)
        case HelpCommand():
            await send_usage(conv, config)
        case StatusCommand():
            await send_status(conv, await thread_pipeline(conv))
        case StopCommand():
            pipeline = await thread_pipeline(conv)
            active = pipeline.active() if pipeline else None
            await stop_run(conv, pipeline, active, with_its_set=True)
        case PreviewCommand(stop=True):
            await stop_preview(conv)
        case _ if isinstance(config, ConfigError):
            await report_config_error(conv, config)
        case RetryCommand():
            pipeline = await thread_pipeline(conv)
            await retry_run(conv, config, pipeline, pipeline.last_run() if pipeline else None)
        case RunCommand():
            await request_run(conv, config, parsed)
        case PickCommand(number=number):
            await pick_attempt(conv, await thread_pipeline(conv), number)
        case PreviewCommand():
            await request_preview(conv, config)


async def send_usage(conv: Conversation, config: RepoConfig | ConfigError) -> None:
    repo_config = config if isinstance(config, RepoConfig) else RepoConfig()
    await conv.react("eyes")
    await conv.reply(
        "usage.md.j2",
        usage=USAGE,
        agents=", ".join(inline_code(name) for name in AGENTS),
        default_agent=inline_code(repo_config.agent),
        trigger_label=inline_code(repo_config.trigger_label),
        discover_label=inline_code(repo_config.discover_label),
        ci_failure=repo_config.ci_failure,
        ci_failure_attempts=repo_config.ci_failure_attempts,
        min_permission=f"**{repo_config.min_permission}**",
    )
