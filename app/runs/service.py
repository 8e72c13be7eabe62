"""The runs service: accept a run, start the next in line, stop, retry, report dropped runs.

Handlers call it with the `Conversation` of whoever asked; the reporter calls `start_next`
and `show_queued` when a run ends; the dashboard will call it too. Every GitHub side effect
of a delivery goes through `Delivery.once`, so a retried job repeats none.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, overload

from githubkit.exception import RequestFailed

from app.conversation.commands import RunCommand
from app.conversation.naming import (
    branch_pipeline_id,
    inline_code,
    issue_branch,
    pipeline_id,
    slugify,
)
from app.conversation.policy import (
    Refusal,
    RunSettings,
    effective_run,
    monthly_refusal,
    planned_agents,
)
from app.conversation.repoconfig import RepoConfig
from app.conversation.thread import Conversation, fenced
from app.github.client import CheckAction, RepoAPI, failure_detail, is_transient
from app.reporting.runview import title_and_summary
from app.runs import ended, making, spend
from app.runs.pipelines import Pipeline, PipelineRun, Stopped, utcnow
from app.services import Delivery, Services
from runner.contract import AGENTS, DEFAULT_LABEL, RunMode
from runner.job import FailingCheck, Resources, ReviewContext, is_valid_branch_name
from runner.registry import runners_with_label
from runner.templating import render

log = logging.getLogger("trimo.app")

CHECK_NAME = "Trimo"
STOP_ACTION = CheckAction(
    label="Stop", identifier="stop", description="Stop this run; its work is kept"
)
RETRY_ACTION = CheckAction(label="Retry", identifier="retry", description="Run this prompt again")
MAX_PROMPT_IN_CHECK = 2000
MAX_PROMPT_IN_STATUS = 50
T1 = TypeVar("T1")
T2 = TypeVar("T2")
T3 = TypeVar("T3")


@dataclass(frozen=True)
class ChecksFailed:
    """Why an automatic run started: checks failed on commit `sha` of the pipeline branch."""

    sha: str
    checks: list[FailingCheck]


# --- commands ------------------------------------------------------------------------------


async def request_run(conv: Conversation, config: RepoConfig, command: RunCommand) -> None:
    """`/trimo run`, `/trimo discover` (and the labels): check everything, then accept."""
    if conv.thread.state == "closed":
        await conv.reply("closed_thread.md.j2", kind=conv.thread.kind)
        return
    target = await _target(conv, config)
    if target is None:
        return
    seed, head_sha = target
    if await _as_attempts(conv, config, seed, command, head_sha, conv.thread.review):
        return
    settings = await run_settings(conv, config, command)
    if settings is None:
        return
    prompt = command.prompt
    if command.mode == "discover":
        thread = conv.thread
        prompt = render(
            "discover_request.md.j2", title=thread.title, body=thread.body, focus=prompt
        ).strip()
    await accept_run(conv, seed, prompt, settings, head_sha, conv.thread.review, mode=command.mode)


async def follow_up(
    conv: Conversation, config: RepoConfig, pipeline: Pipeline, command: RunCommand
) -> None:
    """A new run on `pipeline`'s branch (the dashboard's follow-up, for a pipeline with no
    issue behind it: there is no thread to find it from)."""
    if pipeline.closed:
        await conv.reply("closed_thread.md.j2", kind=conv.thread.kind)
        return
    if await _as_attempts(conv, config, pipeline, command, None):
        return
    settings = await run_settings(conv, config, command)
    if settings is not None:
        await accept_run(conv, pipeline, command.prompt, settings, None)


async def start_branch_pipeline(
    conv: Conversation, config: RepoConfig, command: RunCommand, base_branch: str
) -> Pipeline | None:
    """A pipeline with no issue behind it, on a new branch `<prefix><slug of the prompt>`
    from `base_branch` (else the default branch), and its first run. The reporter opens its
    pull request when it first has commits. A run that may not go is recorded as failed
    with the reason, so the dashboard shows it."""
    repo = conv.thread.repo
    base = base_branch or repo.default_branch
    title = _first_line(command.prompt, 200)
    branch = await _free_branch(conv, config.branch_prefix, slugify(title))
    if branch is None or not is_valid_branch_name(base):
        await conv.reply("unsafe_branch.md.j2", branch=inline_code(branch or base))
        return None
    seed = Pipeline(
        id=branch_pipeline_id(repo.full_name, branch),
        number=0,
        kind="branch",
        branch=branch,
        base_branch=base,
        repo=repo.full_name,
        clone_url=repo.clone_url,
        installation_id=conv.thread.installation_id,
        title=title,
    )
    if await _as_attempts(conv, config, seed, command, None):
        return seed
    settings = await run_settings(conv, config, command)
    if settings is None:
        await record_refused(conv, seed, command.prompt, command.agent or config.agent)
        return None
    await accept_run(conv, seed, command.prompt, settings, None)
    return seed


async def _as_attempts(
    conv: Conversation,
    config: RepoConfig,
    seed: Pipeline,
    command: RunCommand,
    head_sha: str | None,
    review: ReviewContext | None = None,
    agents: list[str] | None = None,
) -> bool:
    """Accept the request as a set of attempts when more than one is asked for (by the
    command, or by `attempts:`); False when it is one run, for the caller to accept."""
    agents = agents or planned_agents(config, command)
    if len(agents) < 2:
        return False
    from app.runs.attempts import accept_attempts  # attempts build on this module

    await accept_attempts(conv, config, seed, command, agents, head_sha, review)
    return True


async def record_refused(conv: Conversation, seed: Pipeline, prompt: str, agent: str) -> None:
    """Keep a run that may not go as failed, with what would have been replied (there is no
    thread for it), so the person who asked sees why on the dashboard."""
    said = conv.unsaid[-1] if conv.unsaid else "refused"
    reason = " ".join(said.replace("`", "").replace("*", "").split())[:500]
    run_id = conv.delivery.run_id(seed.id)
    settings = RunSettings(
        agent=agent, image=conv.services.policy.default_image, label=DEFAULT_LABEL,
        timeout_minutes=1, network="none", resources=Resources(),
    )  # fmt: skip
    run = PipelineRun(
        run_id=run_id, prompt=prompt, settings=settings, requested_by=conv.source.user, thread=0
    )
    pipelines = conv.services.pipelines
    await pipelines.add_run(seed, run)
    await pipelines.fail_start(seed.id, run_id, reason)


async def _free_branch(conv: Conversation, prefix: str, slug: str) -> str | None:
    """`<prefix><slug>`, or with `-2`, `-3`… when a pipeline or GitHub has that branch."""
    pipelines, repo = conv.services.pipelines, conv.thread.repo.full_name
    for attempt in range(1, 20):
        branch = f"{prefix}{slug}" if attempt == 1 else f"{prefix}{slug}-{attempt}"
        if not is_valid_branch_name(branch):
            return None
        taken = await pipelines.find_by_branch(repo, branch) is not None
        if not taken and await conv.api.branch_head(branch) is None:
            return branch
    return None


async def retry_run(
    conv: Conversation, config: RepoConfig, pipeline: Pipeline | None, run: PipelineRun | None
) -> None:
    """Queue `run`'s prompt again, with its options, under today's config and policy."""
    if pipeline is None or run is None:
        await conv.reply("nothing_to_retry.md.j2")
        return
    if pipeline.closed or conv.thread.state == "closed":
        await conv.reply("closed_thread.md.j2", kind=conv.thread.kind)
        return
    command = RunCommand(
        prompt=run.prompt,
        agent=run.agent,
        label=run.label,
        timeout_minutes=run.settings.timeout_minutes,
        network=run.settings.network,
        mode=run.mode,
    )
    attempt_set = pipeline.attempt_set(run.set_id) if run.attempt else None
    if attempt_set is not None:
        agents = [r.agent for r in pipeline.attempts_of(attempt_set)]
        await _as_attempts(conv, config, pipeline, command, None, run.review, agents)
        return
    settings = await run_settings(conv, config, command)
    if settings is not None:
        await accept_run(conv, pipeline, run.prompt, settings, None, run.review, mode=run.mode)


async def stop_run(
    conv: Conversation,
    pipeline: Pipeline | None,
    run: PipelineRun | None,
    *,
    with_its_set: bool = False,
) -> None:
    """Stop `run` (the active one, for `/trimo stop`: `with_its_set`, every attempt of it)
    and say what happened."""
    services = conv.services
    runs = [run] if run is not None else []
    if pipeline is not None and run is not None and run.attempt and with_its_set:
        runs = [r for r in pipeline.runs if r.set_id == run.set_id and r.status != "finished"]
    reason = f"stopped by @{conv.source.user}"
    stops = [
        stopped
        for each in runs
        if pipeline is not None
        and (stopped := await services.pipelines.stop(pipeline.id, each.run_id, reason))
    ]
    if pipeline is None or not stops:
        await conv.reply("stop.md.j2", how="nothing", run_id="", waiting=0)
        return
    await conv.react("eyes")
    for stopped in stops:
        if stopped.how == "dropped":
            await report_dropped(
                conv.delivery, conv.api, pipeline, stopped, "stop", conv.source.user
            )
    if any(stopped.how == "dropped" for stopped in stops):
        await start_next(services, conv.api, pipeline.id)
    dropped_attempt = next((s.run for s in stops if s.how == "dropped" and s.run.attempt), None)
    if dropped_attempt is not None:
        from app.runs.attempts import attempt_ended  # attempts build on this module

        await attempt_ended(services, conv.api, pipeline.id, dropped_attempt.run_id)
    after = await services.pipelines.get(pipeline.id)
    if any(stopped.how == "dropped" for stopped in stops) and after is not None:
        await show_queued(services, conv.api, after)
    await conv.reply(
        "stop.md.j2",
        how="aborting" if any(stopped.how == "aborting" for stopped in stops) else "dropped",
        run_id=", ".join(inline_code(stopped.run.run_id) for stopped in stops),
        attempts=len(stops) if len(stops) > 1 else 0,
        waiting=len(after.waiting()) if after else 0,
    )


async def send_status(conv: Conversation, pipeline: Pipeline | None) -> None:
    await conv.react("eyes")
    runs = pipeline.runs if pipeline else []
    await conv.reply(
        "status.md.j2",
        kind=conv.thread.kind,
        branch=inline_code(pipeline.branch) if pipeline else "",
        closed=pipeline.closed if pipeline else False,
        runs=[
            {
                "id": inline_code(run.run_id),
                "user": "failing checks" if run.automatic else run.requested_by,
                "mode": run.mode,
                "agent": inline_code(run.agent),
                "status": run.status,
                "outcome": run.outcome.value if run.outcome else "",
                "prompt": _table_cell(run.prompt),
            }
            for run in runs
        ],
    )


async def thread_pipeline(conv: Conversation) -> Pipeline | None:
    """The pipeline of the thread's runs; for a pull request, also the one on its branch."""
    thread, pipelines = conv.thread, conv.services.pipelines
    found = await pipelines.for_thread(thread.repo.full_name, thread.number)
    if found is not None or not thread.is_pull:
        return found
    pull = thread.pull or await conv.api.pull(thread.number)
    if pull.is_fork:
        return None
    return await pipelines.find_by_branch(thread.repo.full_name, pull.head_ref)


# --- accepting a run -------------------------------------------------------------------


async def accept_run(
    conv: Conversation,
    seed: Pipeline,
    prompt: str,
    settings: RunSettings,
    head_sha: str | None,
    review: ReviewContext | None = None,
    *,
    mode: RunMode = "code",
    checks_failed: ChecksFailed | None = None,
) -> None:
    """The pipeline entry, then at once: start it if it is next, 👀, the progress comment,
    and the check run on the commit the branch lookups find.

    No GitHub round trip comes before queueing the run but its token's (minted beside the
    config and the role when a run was asked for, `config_and_role`): its runner starts
    while GitHub answers the rest. Its events wait for both report objects (`making`). Each
    is recorded on the run as soon as it exists, so a failure later on (the issue deleted,
    say) can still complete it.
    """
    delivery, api, services = conv.delivery, conv.api, conv.services
    run_id = delivery.run_id(seed.id)
    delivery.trace.run_ids.append(run_id)
    run = PipelineRun(
        run_id=run_id,
        prompt=prompt,
        mode=mode,
        review=review,
        ci_sha=checks_failed.sha if checks_failed else None,
        failing_checks=checks_failed.checks if checks_failed else [],
        settings=settings,
        requested_by=conv.source.user,
        thread=conv.thread.number,
        comment_id=conv.source.target_id if conv.source.comment_kind else None,
        comment_kind=conv.source.comment_kind,
    )
    pipeline = await services.pipelines.add_run(seed, run)
    code = run_names(pipeline, run)
    title, summary = title_and_summary(
        render(
            "github/check_queued.md.j2",
            user=conv.source.user,
            prompt_block=fenced(shorten(prompt, MAX_PROMPT_IN_CHECK), "text"),
            **code,
        )
    )

    async def check_run() -> None:
        sha = await head_sha_for(api, pipeline, head_sha)
        await make_check_run(conv, pipeline, run, sha, title, summary)

    async def progress_comment() -> None:
        if not conv.thread.number:
            return  # no thread yet (a pipeline started from the dashboard)
        progress = await progress_text(services, pipeline, run)
        comment_id = await delivery.once(
            "progress", lambda: api.comment(conv.thread.number, progress)
        )
        if comment_id is not None:
            await _record_progress_comment(services, api, pipeline, run_id, comment_id)

    async def start() -> PipelineRun | None:
        try:
            return await start_next(services, api, pipeline.id)
        finally:  # a run that waits gets a token of its own when its turn comes
            services.pipelines.dispatch.drop_ahead(pipeline.installation_id, pipeline.repo)

    await making.begin(services.redis, run_id)
    try:
        started, _, _ = await together(
            start(), together(conv.react("eyes"), progress_comment()), check_run()
        )
    finally:
        await making.done(services.redis, run_id)
    log.info(
        "delivery %s: run %s accepted on %s (%s)",
        delivery.delivery_id,
        run_id,
        pipeline.id,
        f"started {started.run_id}" if started else "waits its turn",
    )


def check_name(run: PipelineRun) -> str:
    """The name of `run`'s check run: attempts are told apart by their number."""
    return f"{CHECK_NAME} · attempt {run.attempt}" if run.attempt else CHECK_NAME


def is_trimo_check(name: str) -> bool:
    """Whether a check run of that name is one of Trimo's runs (never a failing CI check)."""
    return name == CHECK_NAME or name.startswith(f"{CHECK_NAME} · attempt ")


async def make_check_run(
    conv: Conversation,
    pipeline: Pipeline,
    run: PipelineRun,
    sha: str | None,
    title: str,
    summary: str,
    step: str = "check-run",
) -> None:
    """`run`'s check run on commit `sha`, made once per delivery and `step`, and recorded."""
    delivery, api = conv.delivery, conv.api
    name = check_name(run)
    if sha is not None:  # a retry keeps to it: the run, queued first, may have moved its branch
        sha = await delivery.first(f"{step}:sha", sha)

    async def create() -> int | None:
        if sha is None:
            return None
        try:
            return await api.create_check_run(
                name=name,
                head_sha=sha,
                external_id=run.run_id,
                title=title,
                summary=summary,
                actions=[STOP_ACTION],
            )
        except RequestFailed as exc:
            if is_transient(exc):
                raise
            # Without `checks: write` the run still goes ahead, reported by comments.
            log.warning("run %s: no check run (%s)", run.run_id, failure_detail(exc))
            return None

    async def earlier() -> int | None:
        """The check run an earlier try made although GitHub's answer never came."""
        if sha is None:
            return None
        return await api.find_check_run(name=name, head_sha=sha, external_id=run.run_id)

    check_run_id = await delivery.once(step, create, recover=earlier)
    if check_run_id is not None:
        await _record_check_run(conv.services, api, pipeline, run.run_id, check_run_id)


async def _record_check_run(
    services: Services, api: RepoAPI, pipeline: Pipeline, run_id: str, check_run_id: int
) -> None:
    """Record the run's check run; if the run is over already, complete it with its
    outcome here (its end was reported without it, and nobody else ever will)."""
    end = await _record(services, pipeline, run_id, check_run_id=check_run_id)
    if end is not None:
        log.info("run %s ended before its check run was recorded: completed now", run_id)
        await _late_write(
            run_id,
            api.update_check_run(
                check_run_id,
                title=end.title,
                summary=end.summary,
                actions=[RETRY_ACTION] if end.ran else [],
                conclusion=end.conclusion,
            ),
        )


async def _record_progress_comment(
    services: Services, api: RepoAPI, pipeline: Pipeline, run_id: str, comment_id: int
) -> None:
    """Record the run's progress comment; if the run is over already, it says how."""
    end = await _record(services, pipeline, run_id, progress_comment_id=comment_id)
    if end is not None:
        await _late_write(run_id, api.update_comment(comment_id, end.comment))


async def _record(
    services: Services, pipeline: Pipeline, run_id: str, **objects: int
) -> ended.Ending | None:
    """Record report objects on the run; how it ended when it is over already."""
    run = await services.pipelines.attach(run_id, **objects)
    return await ended.ending(services.redis, pipeline, run) if run is not None else None


async def _late_write(run_id: str, write: Awaitable[None]) -> None:
    """A report object's last word after its run ended; GitHub's final refusal (the
    object or its thread deleted meanwhile) is only logged, a passing failure retried."""
    try:
        await write
    except RequestFailed as exc:
        if is_transient(exc):
            raise
        log.warning("run %s: its end could not be shown (%s)", run_id, failure_detail(exc))


async def head_sha_for(api: RepoAPI, pipeline: Pipeline, known: str | None) -> str | None:
    """The commit a new run's check run goes on: `known`, else the branch's head, else its
    base's (both asked at once: a new pipeline's branch does not exist yet)."""
    if known is not None:
        return known
    branch, base = await together(
        api.branch_head(pipeline.branch), api.branch_head(pipeline.base_branch)
    )
    return branch or base


async def start_next(
    services: Services, api: RepoAPI, pipeline_id: str, *, branches_seen: bool = False
) -> PipelineRun | None:
    """`start_next_waiting`; a run GitHub will not give a token for ends as an error, said so.

    The reporter can call this on a finished event too, with the pipeline's repository API.
    A set of attempts that waited is checked first (`branches_seen`: it was just now).
    """
    pipelines = services.pipelines
    if not branches_seen:
        await _drop_foreign_branches(services, api, pipeline_id)
    try:
        return await pipelines.start_next_waiting(pipeline_id)
    except RequestFailed as exc:
        if is_transient(exc):
            raise
        detail = failure_detail(exc)
    pipeline = await pipelines.get(pipeline_id)
    for run in pipeline.active_runs() if pipeline else []:
        if run.status == "waiting":
            await fail_unstarted(services, api, pipeline_id, run.run_id, detail, "not_started")
    return None


async def _drop_foreign_branches(services: Services, api: RepoAPI, pipeline_id: str) -> None:
    """A set of attempts about to start after waiting in line: an attempt whose branch
    someone made meanwhile (its name was on the thread) ends before it starts, never
    continuing commits that are not its own."""
    pipeline = await services.pipelines.get(pipeline_id)
    line = pipeline.waiting() if pipeline is not None and pipeline.active_run is None else []
    if not line or not line[0].attempt:
        return
    runs = [run for run in line if run.set_id == line[0].set_id and run.branch]
    heads = await asyncio.gather(*(api.branch_head(run.branch or "") for run in runs))
    for run, head in zip(runs, heads, strict=True):
        if head is not None:
            detail = f"its branch {run.branch} was made by someone else while it waited"
            await fail_unstarted(services, api, pipeline_id, run.run_id, detail)


async def fail_unstarted(
    services: Services,
    api: RepoAPI,
    pipeline_id: str,
    run_id: str,
    detail: str,
    why: Literal["not_started", "failed_early"] = "failed_early",
    *,
    taken_back: bool = False,
) -> PipelineRun | None:
    """End a run no runner has taken as an error with `detail`, and say so where it reports.

    The pipeline is told first (so the next run may go); GitHub's reports follow, best
    effort: a thread that is gone does not keep the run open. `why` picks the words:
    `not_started` when GitHub refused the run's token, else a failure before it started.
    """
    failed = await services.pipelines.fail_start(pipeline_id, run_id, detail, taken_back)
    if failed is None:
        return None
    log.warning("run %s of %s could not start: %s", run_id, pipeline_id, detail)
    context = {"run_id": inline_code(run_id), "detail": inline_code(detail, 120)}
    check_run_id, comment_id = failed.check_run_id, failed.progress_comment_id
    try:
        if check_run_id is not None:
            title, summary = title_and_summary(render(f"github/check_{why}.md.j2", **context))
            await api.complete_check_run(
                check_run_id, conclusion="failure", title=title, summary=summary
            )
        if comment_id is not None:
            await api.update_comment(comment_id, render(f"github/run_{why}.md.j2", **context))
    except RequestFailed as exc:
        if is_transient(exc):
            raise
        log.warning("run %s: its failure could not be shown (%s)", run_id, failure_detail(exc))
    if failed.attempt:
        from app.runs.attempts import attempt_ended  # attempts build on this module

        await attempt_ended(services, api, pipeline_id, run_id)
    return failed


async def progress_text(services: Services, pipeline: Pipeline, run: PipelineRun) -> str:
    """The progress comment of a run not yet started: what it waits for."""
    ahead = pipeline.ahead_of(run.run_id)
    online = await runners_with_label(services.redis, run.label)
    return render(
        "github/progress.md.j2",
        user=run.requested_by,
        kind=thread_kind(pipeline, run),
        waiting_for=inline_code(ahead.run_id) if ahead else "",
        runner_online=bool(online),
        **run_names(pipeline, run),
    )


async def show_queued(services: Services, api: RepoAPI, pipeline: Pipeline) -> None:
    """Refresh the progress comment of the pipeline's active run after it left the line.

    Call after `start_next_waiting` started a run that had waited for another; editing a
    comment is idempotent, so retries are harmless.
    """
    run = pipeline.active()
    if run is not None and run.progress_comment_id is not None:
        await api.update_comment(
            run.progress_comment_id, await progress_text(services, pipeline, run)
        )


def thread_kind(pipeline: Pipeline, run: PipelineRun) -> str:
    """What the thread `run` was asked on is: its pipeline's kind, or a pull request."""
    return "issue" if pipeline.kind == "issue" and run.thread == pipeline.number else "pull request"


async def report_dropped(
    delivery: Delivery,
    api: RepoAPI,
    pipeline: Pipeline,
    stopped: Stopped,
    cause: Literal["stop", "closed"],
    by: str,
) -> None:
    """Tell GitHub that a run which never started was cancelled (no runner will)."""
    run = stopped.run
    context = {
        "run_id": inline_code(run.run_id),
        "cause": cause,
        "by": by,
        "kind": thread_kind(pipeline, run),
    }
    check_run_id, comment_id = run.check_run_id, run.progress_comment_id
    if check_run_id is not None:
        title, summary = title_and_summary(render("github/check_cancelled.md.j2", **context))

        async def complete() -> None:
            await api.complete_check_run(
                check_run_id, conclusion="cancelled", title=title, summary=summary
            )

        await delivery.once(f"cancel-check:{run.run_id}", complete)
    if comment_id is not None:
        body = render("github/run_cancelled.md.j2", **context)

        async def note() -> None:
            await api.update_comment(comment_id, body)

        await delivery.once(f"cancel-note:{run.run_id}", note)


# --- helpers --------------------------------------------------------------------------------


async def _target(conv: Conversation, config: RepoConfig) -> tuple[Pipeline, str | None] | None:
    """The pipeline a run here belongs to (a seed if new), and a head sha when known."""
    thread, repo = conv.thread, conv.thread.repo
    pipelines = conv.services.pipelines
    where = {
        "clone_url": repo.clone_url,
        "installation_id": thread.installation_id,
        "title": thread.title,
    }
    if not thread.is_pull:
        if not is_valid_branch_name(repo.default_branch):
            await conv.reply("unsafe_branch.md.j2", branch=inline_code(repo.default_branch))
            return None
        existing = await pipelines.get(pipeline_id(repo.full_name, thread.number))
        if existing is not None:
            return existing.model_copy(update=where), None
        seed = Pipeline(
            id=pipeline_id(repo.full_name, thread.number),
            number=thread.number,
            kind="issue",
            branch=issue_branch(config.branch_prefix, thread.number, thread.title),
            base_branch=repo.default_branch,
            repo=repo.full_name,
            clone_url=repo.clone_url,
            installation_id=thread.installation_id,
            title=thread.title,
        )
        return seed, None
    pull = thread.pull or await conv.api.pull(thread.number)
    if pull.is_fork:
        await conv.reply(
            "fork_pull.md.j2",
            head_repo=inline_code(pull.head_repo or "a deleted fork"),
            base_repo=inline_code(repo.full_name),
            head_ref=inline_code(pull.head_ref),
        )
        return None
    if not (is_valid_branch_name(pull.head_ref) and is_valid_branch_name(pull.base_ref)):
        await conv.reply("unsafe_branch.md.j2", branch=inline_code(pull.head_ref))
        return None
    if pull.head_ref == repo.default_branch:
        await conv.reply("default_branch_pull.md.j2", branch=inline_code(pull.head_ref))
        return None
    existing = await pipelines.find_by_branch(repo.full_name, pull.head_ref)
    if existing is not None:
        return existing.model_copy(update=where), pull.head_sha
    seed = Pipeline(
        id=pipeline_id(repo.full_name, pull.number),
        number=pull.number,
        kind="pull",
        branch=pull.head_ref,
        base_branch=pull.base_ref,
        repo=repo.full_name,
        clone_url=repo.clone_url,
        installation_id=thread.installation_id,
        title=thread.title,
    )
    return seed, pull.head_sha


async def run_settings(
    conv: Conversation, config: RepoConfig, command: RunCommand
) -> RunSettings | None:
    agent = command.agent or config.agent
    if agent not in AGENTS:
        await conv.reply(
            "unknown_agent.md.j2",
            agent=inline_code(agent),
            from_config=command.agent is None,
            agents=", ".join(inline_code(name) for name in AGENTS),
        )
        return None
    result = effective_run(config, command, conv.services.policy)
    if not isinstance(result, Refusal):
        result = await _within_monthly_caps(conv) or result
    if isinstance(result, Refusal):
        await conv.reply("refused_policy.md.j2", message=result.message)
        return None
    return result


async def _within_monthly_caps(conv: Conversation) -> Refusal | None:
    """A refusal when the repository or the person asking has reached a monthly cap."""
    policy = conv.services.policy
    if policy.monthly_usd is None and policy.monthly_usd_per_person is None:
        return None
    repo_micro, person_micro = await spend.month_to_date(
        conv.services.redis, utcnow().date(), conv.thread.repo.full_name, conv.source.user
    )
    return monthly_refusal(
        policy,
        repo_micro / spend.MICRO,
        person_micro / spend.MICRO,
        conv.services.settings.public_url,
    )


@overload
async def together(a: Awaitable[T1], b: Awaitable[T2], /) -> tuple[T1, T2]: ...
@overload
async def together(
    a: Awaitable[T1], b: Awaitable[T2], c: Awaitable[T3], /
) -> tuple[T1, T2, T3]: ...
async def together(*steps: Awaitable[Any]) -> tuple[Any, ...]:
    """Independent GitHub calls at once: all end (each records what it made), then the
    first failure is raised."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return tuple(results)


def run_names(pipeline: Pipeline, run: PipelineRun) -> dict[str, str]:
    return {
        "run_id": inline_code(run.run_id),
        "agent": inline_code(run.agent),
        "label": inline_code(run.label),
        "branch": inline_code(pipeline.branch),
        "mode": run.mode,
        "automatic": inline_code(run.ci_sha[:7]) if run.ci_sha else "",
    }


def _first_line(text: str, limit: int) -> str:
    return shorten((text.strip().splitlines() or [""])[0].strip(), limit)


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _table_cell(prompt: str) -> str:
    first = (prompt.strip().splitlines() or [""])[0]
    return inline_code(first, MAX_PROMPT_IN_STATUS).replace("|", "\\|")
