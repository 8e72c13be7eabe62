"""The previews service: start, refresh and stop a pipeline's QA preview, and its one comment.

A preview is not a run: it takes no turn in the pipeline. The App keeps one record per
pipeline (`PreviewRecord`: what was asked, which preview is current, the comment and the
check run that show it) and tells the runners which preview it wants
(`contract.preview_wanted`: a runner stops any other). The runners' events come back on
`contract.PREVIEW_EVENTS`; `app.reporting.previewreport` folds them in with `apply_event`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import datetime
from typing import Final, Literal

import redis.asyncio as aioredis
from githubkit.exception import RequestFailed
from pydantic import BaseModel

from app.conversation.commands import RunCommand
from app.conversation.naming import inline_code
from app.conversation.policy import Refusal, ServerPolicy, effective_run
from app.conversation.repoconfig import PreviewConfig, RepoConfig
from app.conversation.thread import Conversation, fenced, load_config
from app.github.client import RepoAPI, status_of
from app.runs.pipelines import Pipeline
from app.runs.service import thread_pipeline
from app.services import Services
from runner import contract
from runner.job import Outcome, RepoRef, RunFinished
from runner.previews.job import PreviewEvent, PreviewFailed, PreviewReady, PreviewRequest
from runner.printable import printable
from runner.registry import runners_with_label
from runner.templating import render

log = logging.getLogger("trimo.previews")

RECORD_PREFIX: Final = "trimo:preview-record:"
CHECK_NAME: Final = "Trimo preview"
MAX_REASON_CHARS: Final = 500
_URL_RE: Final = re.compile(r"https?://[A-Za-z0-9._~:/?#\[\]@!$&'*+,;=%-]+")
STOP_WORDS: Final = {
    "stopped": "stopped on request",
    "idle": "nobody used it for {idle} minutes",
    "expired": "it reached its maximum lifetime",
    "cap": "its runner needed the room for a newer preview",
    "shutdown": "its runner shut down",
}

Status = Literal["starting", "ready", "failed", "stopped"]


class PreviewRecord(BaseModel):
    """The App's view of one pipeline's preview."""

    pipeline: str
    repo: str
    installation_id: int
    number: int
    branch: str
    request: PreviewRequest
    """The current preview's request (its token left out)."""
    status: Status = "starting"
    requested_by: str = ""
    comment_id: int | None = None
    check_run_id: int | None = None
    url: str = ""
    sha: str = ""
    """The commit the preview shows, once ready."""
    asked_sha: str = ""
    """The commit a refresh was asked for (a run's head, a push), so it is asked once."""
    refreshed: bool = False
    no_runner: bool = False
    """When it was asked for, no runner online with its label served previews."""
    expires_at: datetime | None = None
    reason: str = ""
    log_tail: str = ""

    @property
    def live(self) -> bool:
        return self.status in ("starting", "ready")


def preview_id_for(pipeline_id: str, cause: str) -> str:
    """The id of the preview `cause` (a delivery, a run) asks for: the same on a retry."""
    return "pv-" + hashlib.sha256(f"{pipeline_id}\0{cause}".encode()).hexdigest()[:24]


def preview_request(
    pipeline: Pipeline,
    config: RepoConfig,
    preview: PreviewConfig,
    policy: ServerPolicy,
    preview_id: str,
) -> PreviewRequest | Refusal:
    """What a runner gets for `pipeline`'s `preview` (of `config`): the image, network and
    limits of a run (the preview's own image if it names one), within the server's policy."""
    asked = config.model_copy(update={"image": preview.image or config.image})
    settings = effective_run(asked, RunCommand(prompt="preview"), policy)
    if isinstance(settings, Refusal):
        return settings
    return PreviewRequest(
        preview_id=preview_id,
        pipeline=pipeline.id,
        repo=RepoRef(full_name=pipeline.repo, clone_url=pipeline.clone_url),
        branch=pipeline.branch,
        image=settings.image,
        setup=preview.setup,
        command=preview.command,
        port=preview.port,
        ready_path=preview.ready_path,
        idle_minutes=preview.idle_minutes,
        network=settings.network,
        allowed_hosts=list(settings.allowed_hosts),
        resources=settings.resources,
        cached_setup=settings.setup,
        runner_label=settings.label,
    )


# --- what people read ----------------------------------------------------------------------


def comment_text(record: PreviewRecord) -> str:
    """The one preview comment of a pipeline, for the record's state."""
    return render("github/preview.md.j2", **_words(record))


def check_text(record: PreviewRecord) -> tuple[str, str]:
    """(title, summary) of the preview's check run."""
    title, _, summary = render("github/check_preview.md.j2", **_words(record)).partition("\n")
    return title.strip(), summary.strip()


def _words(record: PreviewRecord) -> dict[str, object]:
    return {
        "status": record.status,
        "branch": inline_code(record.branch),
        "by": record.requested_by,
        "label": inline_code(record.request.runner_label),
        "url": safe_url(record),
        "sha": inline_code(record.sha[:7]) if record.sha else "its head",
        "refreshed": record.refreshed,
        "no_runner": record.no_runner,
        "idle_minutes": record.request.idle_minutes,
        "expires": record.expires_at.strftime("%Y-%m-%d %H:%M UTC") if record.expires_at else "",
        "reason": printable(record.reason, MAX_REASON_CHARS, one_line=True),
        "log_tail": fenced(record.log_tail, "text") if record.log_tail else "",
    }


def stop_reason(reason: str, idle_minutes: int) -> str:
    return STOP_WORDS.get(reason, reason).format(idle=idle_minutes)


# --- the record ------------------------------------------------------------------------


async def load_record(redis: aioredis.Redis, pipeline_id: str) -> PreviewRecord | None:
    raw = await redis.get(RECORD_PREFIX + pipeline_id)
    return PreviewRecord.model_validate_json(raw) if raw is not None else None


async def save_record(redis: aioredis.Redis, record: PreviewRecord) -> None:
    await redis.set(RECORD_PREFIX + record.pipeline, record.model_dump_json())


def safe_url(record: PreviewRecord) -> str:
    """The preview's link, if it is one (it comes from a runner's settings)."""
    return record.url if _URL_RE.fullmatch(record.url) else ""


# --- commands ----------------------------------------------------------------------------


async def request_preview(
    conv: Conversation, config: RepoConfig, pipeline: Pipeline | None = None
) -> None:
    """`/trimo preview` (on the thread, or the dashboard's button for `pipeline`): start
    the pipeline's preview, or refresh the running one."""
    if config.preview is None:
        await conv.reply(
            "preview_not_configured.md.j2", branch=inline_code(conv.thread.repo.default_branch)
        )
        return
    pipeline = pipeline or await thread_pipeline(conv)
    if pipeline is None:
        await conv.reply("preview_no_pipeline.md.j2", kind=conv.thread.kind)
        return
    preview_id = preview_id_for(pipeline.id, conv.delivery.delivery_id)
    request = preview_request(pipeline, config, config.preview, conv.services.policy, preview_id)
    if isinstance(request, Refusal):
        await conv.reply("refused_preview.md.j2", message=request.message)
        return
    await conv.react("eyes")
    await start(
        conv.services, conv.api, pipeline, request, conv.source.user, number=conv.thread.number
    )


async def stop_preview(conv: Conversation, pipeline: Pipeline | None = None) -> None:
    """`/trimo preview stop` (or the dashboard's button for `pipeline`): the runner stops
    it; the comment says so at once."""
    pipeline = pipeline or await thread_pipeline(conv)
    record = await load_record(conv.services.redis, pipeline.id) if pipeline else None
    if record is None or not record.live:
        await conv.reply("preview_not_running.md.j2")
        return
    await conv.react("eyes")
    await end_preview(conv.services, conv.api, record, f"stopped by @{conv.source.user}")


async def end_preview(services: Services, api: RepoAPI, record: PreviewRecord, reason: str) -> None:
    """The App wants no preview of the record's pipeline: the runner stops it; the comment
    says so at once."""
    await services.redis.delete(contract.preview_wanted(record.pipeline))
    record.status, record.reason = "stopped", reason
    await show(services.redis, api, record)


async def after_push(
    services: Services, api: RepoAPI, pipeline: Pipeline, sha: str, cause: str
) -> None:
    """Commits pushed to the branch of a pipeline with a live preview refresh it; pushes
    of a run in progress wait for its end (`after_run`)."""
    record = await load_record(services.redis, pipeline.id)
    if record is None or not record.live or _has(record, sha) or pipeline.active() is not None:
        return
    refresh = record.request.model_copy(update={"preview_id": preview_id_for(pipeline.id, cause)})
    await start(services, api, pipeline, refresh, "", sha)


def _has(record: PreviewRecord, sha: str) -> bool:
    """Whether the record's preview shows `sha`, or was asked to."""
    return sha in (record.sha, record.asked_sha)


async def after_run(
    services: Services, api: RepoAPI, pipeline: Pipeline, event: RunFinished
) -> None:
    """New commits refresh a live preview; with `preview: {auto: true}` (read from the
    pipeline's base branch) a successful run starts one."""
    if event.outcome != Outcome.SUCCESS:
        return
    record = await load_record(services.redis, pipeline.id)
    preview_id = preview_id_for(pipeline.id, event.run_id)
    if record is not None and record.live:
        if event.commits and event.head_sha and not _has(record, event.head_sha):
            refresh = record.request.model_copy(update={"preview_id": preview_id})
            await start(services, api, pipeline, refresh, "", event.head_sha)
        return
    config = await load_config(api, pipeline.base_branch)
    if isinstance(config, RepoConfig) and config.preview is not None and config.preview.auto:
        request = preview_request(pipeline, config, config.preview, services.policy, preview_id)
        if isinstance(request, Refusal):
            log.warning("%s: no automatic preview: %s", pipeline.id, request.message)
            return
        await start(services, api, pipeline, request, "")


async def start(
    services: Services,
    api: RepoAPI,
    pipeline: Pipeline,
    request: PreviewRequest,
    by: str,
    sha: str = "",
    number: int = 0,
) -> None:
    """Record the preview as starting, show it, and queue it for a runner."""
    record = await load_record(services.redis, pipeline.id)
    asked = record is not None and record.request.preview_id == request.preview_id
    if asked and record is not None and record.status != "starting":
        return  # this delivery or run asked already, and its runner answered
    record = PreviewRecord(
        pipeline=pipeline.id,
        repo=pipeline.repo,
        installation_id=pipeline.installation_id,
        number=number or pipeline.number or (record.number if record else 0),
        branch=pipeline.branch,
        request=request,
        requested_by=by,
        comment_id=record.comment_id if record else None,
        check_run_id=record.check_run_id if record and record.status == "ready" else None,
        url=record.url if record and record.status == "ready" else "",
        sha=record.sha if record and record.status == "ready" else "",
        asked_sha=sha,
    )
    runners = await runners_with_label(services.redis, request.runner_label)
    record.no_runner = not any(runner.previews for runner in runners)
    await save_record(services.redis, record)
    await services.pipelines.dispatch.enqueue_preview(request, pipeline.installation_id)
    await show(services.redis, api, record)


async def show(redis: aioredis.Redis, api: RepoAPI, record: PreviewRecord) -> None:
    """Write the record's state into its one comment (made the first time, or again if
    someone deleted it); a pipeline with no issue or pull request yet shows it on the
    dashboard only. Every step is saved as soon as it is done, so a retry repeats none."""
    await save_record(redis, record)
    if not record.number:
        return
    body = comment_text(record)
    if record.comment_id is not None:
        try:
            await api.update_comment(record.comment_id, body)
            return
        except RequestFailed as exc:
            if status_of(exc) != 404:
                raise
    record.comment_id = await api.comment(record.number, body)
    await save_record(redis, record)


# --- the runners' events -------------------------------------------------------------------


async def apply_event(services: Services, event: PreviewEvent) -> None:
    """Fold a runner's event into the pipeline's record, its comment and its check run."""
    record = await load_record(services.redis, event.pipeline)
    if record is None or record.request.preview_id != event.preview_id or not record.live:
        log.info("preview %s of %s: %s (not current)", event.preview_id, event.pipeline, event.type)
        return
    if isinstance(event, PreviewReady):
        if record.check_run_id is not None and record.sha != event.sha:
            record.check_run_id = None  # a new commit: a new check run on it
        record.status, record.url, record.sha = "ready", event.url, event.sha
        record.refreshed, record.expires_at = event.refreshed, event.expires_at
    elif isinstance(event, PreviewFailed):
        record.status, record.reason, record.log_tail = "failed", event.reason, event.log_tail
    else:
        record.status = "stopped"
        record.reason = stop_reason(event.reason, record.request.idle_minutes)
    await save_record(services.redis, record)  # the dashboard shows it from now on
    api = await services.github.repo(record.installation_id, record.repo)
    await show(services.redis, api, record)
    await _show_check(services.redis, api, record)


async def _show_check(redis: aioredis.Redis, api: RepoAPI, record: PreviewRecord) -> None:
    """A ready preview's link on a check run of the commit it shows; stopped, it says so."""
    if record.status == "failed" or (record.status == "stopped" and record.check_run_id is None):
        return
    title, summary = check_text(record)
    if record.check_run_id is None:
        record.check_run_id = await api.create_check_run(
            name=CHECK_NAME,
            head_sha=record.sha,
            external_id=record.request.preview_id,
            title=title,
            summary=summary,
            actions=[],
        )
        await save_record(redis, record)
    await api.complete_check_run(
        record.check_run_id, conclusion="neutral", title=title, summary=summary
    )
