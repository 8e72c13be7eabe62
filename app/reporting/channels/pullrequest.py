"""The pull request channel: an issue's (or the dashboard's) pipeline gets a pull request
when its branch first has commits, and its body follows the pipeline's runs."""

from __future__ import annotations

import logging
from typing import Final

import redis.asyncio as aioredis
from githubkit.exception import RequestFailed

from app.github.client import failure_detail, is_transient
from app.redisio import hdel, hget, hset
from app.reporting import runview
from app.reporting.budget import Priority
from app.reporting.channels.steps import STEPS_PREFIX, Steps, Target, timed
from app.runs.pipelines import Pipeline
from runner.job import RunFinished

log = logging.getLogger("trimo.reporter")

PULL_OF_PIPELINE: Final = "trimo:pull-of-pipeline"
OPENS_PULLS: Final = ("issue", "branch")
"""Pipeline kinds whose branch gets a pull request when it first has commits."""
PULL_PROBLEM: Final = "flag:pull-problem"
PULL_TITLE_FIELD: Final = "title:"
"""+ a pipeline id: the field of `PULL_OF_PIPELINE` keeping its pull request's title, beside
its number, so a board reads both with one HMGET."""
PULL_TITLE_CHARS: Final = 256
"""GitHub's own limit on a pull request's title; longer input is cut when kept."""


def pull_title_field(pipeline_id: str) -> str:
    return PULL_TITLE_FIELD + pipeline_id


async def keep_pull_title(redis: aioredis.Redis, pipeline_id: str, title: str) -> None:
    """Keep the title of the pipeline's pull request (user input: cut, shown escaped)."""
    await hset(redis, PULL_OF_PIPELINE, {pull_title_field(pipeline_id): title[:PULL_TITLE_CHARS]})


async def pull_title_of(redis: aioredis.Redis, pipeline_id: str) -> str:
    """The kept title of the pipeline's pull request; empty when none is kept."""
    return await hget(redis, PULL_OF_PIPELINE, pull_title_field(pipeline_id)) or ""


async def keep_pull(redis: aioredis.Redis, pipeline_id: str, number: int, title: str) -> None:
    """Remember the pipeline's pull request and its title (the board shows both)."""
    await hset(
        redis,
        PULL_OF_PIPELINE,
        {pipeline_id: str(number), pull_title_field(pipeline_id): title[:PULL_TITLE_CHARS]},
    )


async def pull_of_pipeline(redis: aioredis.Redis, pipeline: Pipeline) -> int | None:
    """The pipeline's pull request: its own, or the one the reporter opened for its branch."""
    if pipeline.kind == "pull":
        return pipeline.number
    raw = await hget(redis, PULL_OF_PIPELINE, pipeline.id)
    return int(raw) if raw is not None and raw.isdigit() else None


def pull_problem(exc: RequestFailed) -> str:
    """Why GitHub would not open a pull request, in its own words, one line."""
    try:
        data = exc.response.json()
    except ValueError:
        data = {}
    reasons: list[str] = []
    if isinstance(data, dict):
        for error in data.get("errors") or []:
            if isinstance(error, dict):
                text = error.get("message") or " ".join(
                    str(error[k]) for k in ("field", "code") if error.get(k)
                )
                if text:
                    reasons.append(str(text))
        if not reasons and data.get("message"):
            reasons.append(str(data["message"]))
    text = "; ".join(reasons) or f"HTTP {exc.response.status_code}"
    return (text.strip().splitlines() or [""])[0][:200]


class PullRequest:
    """Opens the pipeline's pull request and keeps its body current."""

    def __init__(self, redis: aioredis.Redis, steps: Steps) -> None:
        self.redis = redis
        self.steps = steps

    async def number(self, pipeline: Pipeline) -> int | None:
        return await pull_of_pipeline(self.redis, pipeline)

    async def problem(self, run_id: str) -> str:
        """Why GitHub would not open the pipeline's pull request, if it would not."""
        return await self.steps.flag(run_id, PULL_PROBLEM) or ""

    async def ensure(self, t: Target, priority: Priority, final: bool) -> None:
        """The pipeline's pull request to its base branch, opened if there is none.

        When GitHub will not open it (one exists that cannot be found, no diff, the base
        branch deleted), the reason is kept for the progress comment, and nothing waits.
        """
        api, pipeline = t.api, t.pipeline
        if await self.number(pipeline) is not None:
            return
        key = STEPS_PREFIX + t.view.run_id
        if not final and await hget(self.redis, key, PULL_PROBLEM) is not None:
            return  # said already; tried once more with the last word
        found = await timed(api.open_pull_for(pipeline.branch))
        if found is not None:
            number, title = found.number, found.title
        else:
            issue_title = (
                await timed(api.issue_title(pipeline.number)) if pipeline.number else pipeline.title
            )
            title = runview.pull_title(issue_title)
            await self.steps.spend(pipeline, priority)
            try:
                number = await timed(
                    api.create_pull(
                        head=pipeline.branch,
                        base=pipeline.base_branch,
                        title=title,
                        body=runview.pull_body(pipeline, closes=pipeline.kind == "issue"),
                    )
                )
                log.info("opened pull request #%d for %s", number, pipeline.id)
            except RequestFailed as exc:
                if is_transient(exc):
                    raise
                found = await timed(api.open_pull_for(pipeline.branch))  # opened meanwhile?
                if found is None:
                    problem = pull_problem(exc)
                    log.warning("%s: no pull request: %s", pipeline.id, failure_detail(exc))
                    await hset(self.redis, key, {PULL_PROBLEM: problem})
                    return
                number, title = found.number, found.title
        await keep_pull(self.redis, pipeline.id, number, title)
        await hdel(self.redis, key, PULL_PROBLEM)

    async def catch_up(self, t: Target) -> bool:
        """Open the pull request once the branch has commits, and keep its body current.
        Whether the progress comment must look again (the pull request, or why there is
        none, changed: its last word may have been said meanwhile)."""
        pipeline, run_id = t.pipeline, t.run.run_id
        if pipeline.kind not in OPENS_PULLS or t.run.attempt:
            return False  # an attempt's commits reach the pull request once it is picked
        event = t.view.finished
        before = (await self.number(pipeline), await self.problem(run_id))
        if event is None:
            if t.view.pushed_commits:
                await self.ensure(t, Priority.FIRST, final=False)
        else:
            if event.commits:
                await self.ensure(t, Priority.FINAL, final=True)
            pull = await self.number(pipeline)
            if pull is not None:
                await self.finished(t, event, pull)
        return (await self.number(pipeline), await self.problem(run_id)) != before

    async def finished(self, t: Target, event: RunFinished, pull: int) -> None:
        """The pull request's body lists the pipeline's runs, this one now ended."""
        pipeline, run = t.pipeline, t.run
        run.status, run.started = "finished", True
        run.outcome, run.commits = event.outcome, list(event.commits)
        body = runview.pull_body(pipeline, closes=pipeline.kind == "issue")
        await self.steps.once(
            pipeline, run, "pull", "final:pull-body", Priority.FINAL,
            lambda: t.api.update_pull_body(pull, body),
        )  # fmt: skip
