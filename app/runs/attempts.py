"""Attempts: one prompt run several times side by side, ranked on evidence, one kept.

A set of attempts is accepted like one run (👀, a check run per attempt, one table comment
instead of progress comments), starts together, and is ranked when its last attempt ends.
Picking one moves the pipeline's branch to that attempt's head through GitHub's refs API:
a fast-forward, since every attempt started from the branch's head. A later pick within
`TRIMO_ATTEMPTS_KEEP_DAYS` switches (the branch is reset, and the table says why), unless
anything was built on the first pick since; then the attempts' branches are deleted.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Final, Literal

from githubkit.exception import RequestFailed

from app import redisio
from app.conversation.commands import RunCommand
from app.conversation.naming import attempt_branch, attempts_fit, inline_code
from app.conversation.policy import RunSettings, attempts_refusal
from app.conversation.repoconfig import RepoConfig
from app.conversation.thread import Conversation, fenced
from app.github.client import RepoAPI, failure_detail, is_transient, status_of
from app.reporting import attemptsview
from app.reporting.channels.pullrequest import OPENS_PULLS, keep_pull, pull_of_pipeline
from app.reporting.runview import pull_body, pull_title, title_and_summary
from app.runs import making
from app.runs.pipelines import AttemptSet, Pipeline, PipelineRun, utcnow
from app.runs.service import (
    MAX_PROMPT_IN_CHECK,
    head_sha_for,
    make_check_run,
    run_names,
    run_settings,
    shorten,
    start_next,
    together,
)
from app.services import Services
from runner.job import ReviewContext
from runner.ranking import auto_pick, rank
from runner.templating import render

log = logging.getLogger("trimo.attempts")

TABLE_LOCK_PREFIX: Final = "trimo:attempts:table-lock:"
PICK_LOCK_PREFIX: Final = "trimo:attempts:pick-lock:"
SPARE_NUMBERS: Final = 4
"""Attempt numbers looked up past those a set needs, in case some are taken."""
MAX_LOOKED_UP: Final = 64
"""The most attempt numbers whose branches are looked up for one set (someone may have
made many branches named like its attempts')."""
CLEAN_FUNCTION: Final = "clean_attempts"
"""The App worker's job that deletes a set's branches once its keep window is over."""


async def accept_attempts(
    conv: Conversation,
    config: RepoConfig,
    seed: Pipeline,
    command: RunCommand,
    agents: list[str],
    head_sha: str | None,
    review: ReviewContext | None = None,
) -> None:
    """Attempts of `command`'s prompt, one per entry of `agents`: check the cap and each
    agent's settings, then put the set in line and start it."""
    from_config = command.attempts is None and not command.agents
    refusal = attempts_refusal(len(agents), conv.services.policy, from_config)
    if refusal is not None:
        await conv.reply("refused_policy.md.j2", message=refusal.message)
        return
    if not attempts_fit(seed.branch):
        await conv.reply(
            "refused_policy.md.j2",
            message=f"the branch {inline_code(seed.branch, 80)} is too long to name its "
            "attempts' branches beside it (`<branch>-attempt-N`, at most 200 characters): "
            "ask for one run (`--attempts 1`).",
        )
        return
    settings: dict[str, RunSettings] = {}
    for agent in dict.fromkeys(agents):
        one = replace(command, agent=agent, agents=(), attempts=None)
        found = await run_settings(conv, config, one)
        if found is None:
            return
        settings[agent] = found
    delivery, services, api = conv.delivery, conv.services, conv.api
    base_id = delivery.run_id(seed.id)
    runs = [
        PipelineRun(
            run_id=f"{base_id[: 100 - len(str(k)) - 1]}.{k}",
            prompt=command.prompt,
            review=review,
            settings=settings[agent],
            requested_by=conv.source.user,
            thread=conv.thread.number,
            comment_id=conv.source.target_id if conv.source.comment_kind else None,
            comment_kind=conv.source.comment_kind,
        )
        for k, agent in enumerate(agents, 1)
    ]
    delivery.trace.run_ids.extend(run.run_id for run in runs)
    attempt_set = AttemptSet(
        id=runs[0].run_id,
        runs=[run.run_id for run in runs],
        pick=config.pick,
        rank_by=list(config.rank_by),
    )
    _, taken = await together(conv.react("eyes"), _taken_numbers(services, api, seed, len(runs)))
    if taken is None:
        await conv.reply(
            "refused_policy.md.j2",
            message=f"so many branches are named like this pipeline's attempts' "
            f"({inline_code(attempt_branch(seed.branch, 1), 80)} and on) that none is free "
            "for a new attempt: delete them, or ask for one run (`--attempts 1`).",
        )
        return
    pipeline, sha = await together(
        services.pipelines.add_attempts(seed, runs, attempt_set, taken),
        head_sha_for(api, seed, head_sha),
    )
    saved = pipeline.attempt_set(attempt_set.id) or attempt_set
    made = pipeline.attempts_of(saved)

    async def check_run(run: PipelineRun) -> None:
        names = run_names(pipeline, run)
        title, summary = title_and_summary(
            render(
                "github/check_queued.md.j2",
                user=conv.source.user,
                prompt_block=fenced(shorten(run.prompt, MAX_PROMPT_IN_CHECK), "text"),
                **names,
            )
        )
        await make_check_run(conv, pipeline, run, sha, title, summary, f"check-run-{run.attempt}")

    async def table() -> None:
        if not conv.thread.number:
            return
        text = _comment(services, pipeline, saved, None)
        comment_id = await delivery.once("attempts", lambda: api.comment(conv.thread.number, text))
        if comment_id is not None:
            await services.pipelines.change_attempt_set(
                pipeline.id, saved.id, lambda s: _set_comment(s, comment_id)
            )

    async def remember_start() -> None:
        if sha is not None:
            await services.pipelines.change_attempt_set(
                pipeline.id, saved.id, lambda s: _set_start(s, sha)
            )

    for run in made:
        await making.begin(services.redis, run.run_id)
    try:
        await together(
            together(*(check_run(run) for run in made)),
            together(
                table(),
                start_next(services, api, pipeline.id, branches_seen=True),
                remember_start(),
            ),
        )
    finally:
        for run in made:
            await making.done(services.redis, run.run_id)
    log.info(
        "delivery %s: %d attempts accepted on %s (%s)",
        delivery.delivery_id,
        len(made),
        pipeline.id,
        ", ".join(f"#{run.attempt} {run.agent}" for run in made),
    )


async def _taken_numbers(
    services: Services, api: RepoAPI, seed: Pipeline, wanted: int
) -> frozenset[int] | None:
    """The next attempt numbers whose branches exist on GitHub already (left by a pipeline
    whose record was lost, or made by a person), looked up until `wanted` free ones are
    found: an attempt never continues a branch that is not its own. None when none were
    free within `MAX_LOOKED_UP` numbers."""
    known = await services.pipelines.get(seed.id) or seed
    first = end = known.next_attempt_number()
    taken: set[int] = set()
    while end - first - len(taken) < wanted:
        if end - first >= MAX_LOOKED_UP:
            return None
        numbers = range(end, end + wanted + SPARE_NUMBERS)
        heads = await asyncio.gather(
            *(api.branch_head(attempt_branch(known.branch, n)) for n in numbers)
        )
        taken |= {n for n, head in zip(numbers, heads, strict=True) if head is not None}
        end = numbers.stop
    return frozenset(taken)


def _set_comment(attempt_set: AttemptSet, comment_id: int) -> None:
    attempt_set.comment_id = comment_id


def _set_start(attempt_set: AttemptSet, sha: str) -> None:
    attempt_set.start_sha = sha


def _comment(
    services: Services, pipeline: Pipeline, attempt_set: AttemptSet, pull: int | None
) -> str:
    settings = services.settings
    return attemptsview.comment(
        pipeline,
        attempt_set,
        keep_days=settings.attempts_keep_days,
        dashboard_url=settings.public_url,
        pull=pull,
    )


# --- after each attempt ends ---------------------------------------------------------------


async def attempt_ended(services: Services, api: RepoAPI, pipeline_id: str, run_id: str) -> None:
    """Show the set's table as it stands; once all have ended, rank it and, with `pick:
    auto`, keep the top attempt when it passed verification. Safe to call again."""
    pipeline = await services.pipelines.get(pipeline_id)
    run = pipeline.find(run_id) if pipeline else None
    attempt_set = pipeline.attempt_set(run.set_id) if pipeline and run and run.attempt else None
    if pipeline is None or attempt_set is None:
        return
    ended = attemptsview.all_ended(pipeline, attempt_set)
    automatic = ended and attempt_set.pick == "auto" and attempt_set.picked is None
    if automatic and pipeline.closed:  # closing it said what to keep: nothing
        note = "It was closed before every attempt had ended, so none was kept automatically."
        await services.pipelines.change_attempt_set(
            pipeline.id, attempt_set.id, lambda s: setattr(s, "pick_note", note)
        )
    elif automatic:
        ranked = rank([r.result() for r in pipeline.attempts_of(attempt_set)], attempt_set.rank_by)
        top = auto_pick(ranked)
        if top is not None:
            picked = await pick(services, api, pipeline.id, top.number, "auto")
            if picked.how in ("picked", "switched", "already"):
                return  # the pick shows the table
            note = f"Attempt #{top.number} passed, yet was not kept: {picked.message}"
            await services.pipelines.change_attempt_set(
                pipeline.id, attempt_set.id, lambda s: setattr(s, "pick_note", note)
            )
    await show_table(services, api, pipeline.id, attempt_set.id)


async def show_table(services: Services, api: RepoAPI, pipeline_id: str, set_id: str) -> None:
    """Edit the set's comment to show its table as saved now (a deleted comment is let
    be). One writer at a time, each reading the pipeline under the lock: a writer that read
    an older state never lands after a newer one."""
    async with redisio.waited(services.redis, f"{TABLE_LOCK_PREFIX}{set_id}", 30):
        pipeline = await services.pipelines.get(pipeline_id)
        attempt_set = pipeline.attempt_set(set_id) if pipeline else None
        if pipeline is None or attempt_set is None or attempt_set.comment_id is None:
            return
        pull = await pull_of_pipeline(services.redis, pipeline)
        text = _comment(services, pipeline, attempt_set, pull)
        try:
            await api.update_comment(attempt_set.comment_id, text)
        except RequestFailed as exc:
            if is_transient(exc):
                raise
            log.warning(
                "%s: the attempts' table could not be shown (%s)", pipeline_id, failure_detail(exc)
            )


# --- picking -------------------------------------------------------------------------------

PickHow = Literal[
    "picked", "switched", "already", "unknown", "running", "no_work", "moved_on", "cleaned",
    "refused",
]  # fmt: skip


@dataclass(frozen=True)
class Picked:
    """What a pick did, and the sentence that says so to whoever asked."""

    how: PickHow
    message: str
    pipeline: Pipeline | None = None


async def pick(services: Services, api: RepoAPI, pipeline_id: str, number: int, by: str) -> Picked:
    """Keep attempt `number` of `pipeline_id`: its head becomes the pipeline's branch, its
    pull request is opened (or its body brought up to date) and the table says so.

    Nothing is lost: a branch someone pushed to, or that runs built on since the last
    pick, is left as it is and the pick refused with the reason.
    """
    pipeline = await services.pipelines.get(pipeline_id)
    found = pipeline.attempt_numbered(number) if pipeline else None
    if pipeline is None or found is None:
        return Picked("unknown", f"There is no attempt #{number} on this pipeline.")
    async with redisio.waited(services.redis, f"{PICK_LOCK_PREFIX}{found[0].id}", 60):
        return await _pick(services, api, pipeline_id, number, by)


async def _pick(services: Services, api: RepoAPI, pipeline_id: str, number: int, by: str) -> Picked:
    """`pick`, under the set's lock: two people picking at once take turns, each seeing
    what the other did."""
    pipeline = await services.pipelines.get(pipeline_id)
    found = pipeline.attempt_numbered(number) if pipeline else None
    if pipeline is None or found is None:
        return Picked("unknown", f"There is no attempt #{number} on this pipeline.")
    attempt_set, run = found
    branch = pipeline.branch
    if attempt_set.picked == number:
        # Asked again, or a pick tried again after GitHub failed it midway: what follows the
        # move (cleaning, pull request, table) is done again; each is safe to repeat.
        if not attempt_set.cleaned:
            await _schedule_cleaning(services, pipeline.id, attempt_set.id)
        pull = await _open_pull(services, api, pipeline)
        await show_table(services, api, pipeline.id, attempt_set.id)
        where = f", in pull request #{pull}" if pull else ""
        return Picked(
            "already", f"Attempt #{number} is already kept on `{branch}`{where}.", pipeline
        )
    if attempt_set.cleaned:
        return Picked(
            "cleaned",
            f"Attempt #{number}'s branch was deleted {services.settings.attempts_keep_days} "
            "days after the first pick, so it can no longer be picked.",
            pipeline,
        )
    if run.status != "finished":
        return Picked(
            "running", f"Attempt #{number} is still running: pick it once it has ended.", pipeline
        )
    if not run.commits or run.head_sha is None:
        return Picked(
            "no_work", f"Attempt #{number} made no commits: there is nothing to keep.", pipeline
        )
    if any(r.status in ("waiting", "queued") for r in pipeline.attempts_of(attempt_set)):
        # It starts from the branch as it is then: from the pick, not the set's commit.
        return Picked(
            "running",
            f"An attempt of this set has yet to start from `{branch}`: pick attempt "
            f"#{number} once it has started (or been stopped).",
            pipeline,
        )
    previous = pipeline.attempt_numbered(attempt_set.picked) if attempt_set.picked else None
    current = await api.branch_head(branch)
    if previous is not None and current != previous[1].head_sha:
        return Picked(
            "moved_on",
            f"`{branch}` has commits since attempt #{previous[1].attempt} was kept "
            f"(a follow-up run, or a push), so switching to #{number} would drop them. "
            f"Attempt #{number} stays on `{run.branch}`.",
            pipeline,
        )
    if pipeline.active_run not in (None, attempt_set.id):
        # It works on the branch: moved from under it, its commits would be refused.
        return Picked(
            "running",
            f"A run is going on `{branch}` now: pick attempt #{number} once it has ended.",
            pipeline,
        )
    note = ""
    try:
        if previous is None and current is None:
            await api.create_branch(branch, run.head_sha)
        elif previous is None:
            await api.move_branch(branch, run.head_sha)
        else:
            await api.move_branch(branch, run.head_sha, force=True)
            note = (
                f"Switched from attempt #{previous[1].attempt} by @{by}: the branch was reset "
                f"to #{number}; #{previous[1].attempt} is still on `{previous[1].branch}`."
            )
    except RequestFailed as exc:
        if is_transient(exc):
            raise
        if status_of(exc) == 422 and "fast forward" in failure_detail(exc).lower():
            return Picked(
                "moved_on",
                f"`{branch}` moved on since the attempts started (someone pushed to it), so "
                f"attempt #{number} cannot simply become it. It stays on `{run.branch}`: "
                "merge it by hand, or ask for a new run.",
                pipeline,
            )
        return Picked(
            "refused",
            f"GitHub would not move `{branch}` to attempt #{number} ({failure_detail(exc)}). "
            f"It stays on `{run.branch}`.",
            pipeline,
        )
    saved = await services.pipelines.change_attempt_set(
        pipeline.id, attempt_set.id, lambda s: _record_pick(s, number, by, note)
    )
    pipeline = saved or pipeline
    attempt_set = pipeline.attempt_set(attempt_set.id) or attempt_set
    if previous is None:
        await _schedule_cleaning(services, pipeline.id, attempt_set.id)
    pull = await _open_pull(services, api, pipeline)
    await show_table(services, api, pipeline.id, attempt_set.id)
    how: PickHow = "switched" if previous is not None else "picked"
    where = f" and pull request #{pull}" if pull else ""
    return Picked(
        how, f"Attempt #{number} is kept: its commits are now `{branch}`{where}.", pipeline
    )


def _record_pick(attempt_set: AttemptSet, number: int, by: str, note: str) -> None:
    attempt_set.picked, attempt_set.picked_by = number, by
    attempt_set.picked_at, attempt_set.pick_note = utcnow(), note


async def _open_pull(services: Services, api: RepoAPI, pipeline: Pipeline) -> int | None:
    """The pipeline's pull request, opened now if it has none (its body brought up to
    date, listing the kept attempt); None when GitHub would not open one (logged)."""
    number = await pull_of_pipeline(services.redis, pipeline)
    body = pull_body(pipeline, closes=pipeline.kind == "issue")
    try:
        if number is None and pipeline.kind in OPENS_PULLS:
            found = await api.open_pull_for(pipeline.branch)
            if found is None:
                title = pull_title(
                    await api.issue_title(pipeline.number) if pipeline.number else pipeline.title
                )
                number = await api.create_pull(
                    head=pipeline.branch, base=pipeline.base_branch, title=title, body=body
                )
                await keep_pull(services.redis, pipeline.id, number, title)
                return number
            number = found.number
            await keep_pull(services.redis, pipeline.id, number, found.title)
        if number is not None and pipeline.kind in OPENS_PULLS:
            await api.update_pull_body(number, body)
    except RequestFailed as exc:
        if is_transient(exc):
            raise
        log.warning("%s: no pull request after the pick (%s)", pipeline.id, failure_detail(exc))
    return number


async def _schedule_cleaning(services: Services, pipeline_id: str, set_id: str) -> None:
    """Delete the set's branches once the keep window after its first pick is over."""
    from app.edge.web import QUEUE_NAME  # the edge's metrics import the reporter, and this

    days = services.settings.attempts_keep_days
    await services.redis.enqueue_job(
        CLEAN_FUNCTION,
        pipeline_id,
        set_id,
        _job_id=f"clean-attempts:{set_id}",
        _queue_name=QUEUE_NAME,
        _defer_by=timedelta(days=days),
    )


async def clean_attempts(services: Services, pipeline_id: str, set_id: str) -> int:
    """Delete the branches of a set's attempts where their attempts left them (the kept
    one's commits are the pipeline branch's; a branch someone pushed to since is theirs);
    how many GitHub deleted."""
    pipeline = await services.pipelines.get(pipeline_id)
    attempt_set = pipeline.attempt_set(set_id) if pipeline else None
    if pipeline is None or attempt_set is None or attempt_set.cleaned:
        return 0
    api = await services.github.repo(pipeline.installation_id, pipeline.repo)
    deleted = 0
    for run in pipeline.attempts_of(attempt_set):
        if not run.branch:
            continue
        head = await api.branch_head(run.branch)
        if head is not None and head != run.head_sha:
            # Someone pushed to it (or opened a pull request and built on it): their work.
            log.info("%s: %s is kept, it moved on since its attempt", pipeline_id, run.branch)
            continue
        if head is not None and await api.delete_branch(run.branch):
            deleted += 1
    saved = await services.pipelines.change_attempt_set(
        pipeline_id, set_id, lambda s: setattr(s, "cleaned", True)
    )
    if saved is not None:
        await show_table(services, api, pipeline_id, set_id)
    log.info("%s: %d attempt branch(es) of %s deleted", pipeline_id, deleted, set_id)
    return deleted


async def pick_attempt(conv: Conversation, pipeline: Pipeline | None, number: int) -> None:
    """`/trimo pick N` (and the dashboard's Pick): keep attempt N, and say what came of it."""
    await conv.react("eyes")
    if pipeline is None:
        picked = Picked("unknown", "No attempts ran here, so there is nothing to pick.")
    else:
        picked = await pick(conv.services, conv.api, pipeline.id, number, conv.source.user)
    await conv.reply("pick.md.j2", how=picked.how, message=picked.message)
