"""The runners' queues: enqueue a run (with its token), take a queued run back, abort one.

The only App module that knows arq's keys. `Pipelines` decides what to start or stop and
calls this outside its lock; job ids are run ids, so enqueueing twice queues once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Final, TypeAlias

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix
from arq.jobs import Job, ResultNotFound
from pydantic import SecretStr
from redis.exceptions import WatchError

from app.redisio import sadd
from app.runs.budget import Budget, MonthlyCaps, budget_for
from app.runs.pipelines import Pickup, Pipeline, PipelineRun
from runner.contract import (
    PREVIEW_FUNCTION,
    RUN_FUNCTION,
    RUN_LABELS,
    attempt_pipeline,
    preview_queue,
    preview_wanted,
    run_queue,
    run_taken,
)
from runner.job import RepoRef, RunRequest
from runner.previews.job import PreviewRequest

log = logging.getLogger("trimo.dispatch")

PREFETCH_SECONDS: Final = 60.0
"""How long a token minted ahead of its run is given to a run (tokens live 60 minutes)."""
TokenMinter: TypeAlias = Callable[[int, str], Awaitable[str]]
"""(installation id, repository name) -> a token for that one repository."""


def run_request(
    pipeline: Pipeline, run: PipelineRun, token: str | None, budget: Budget | None = None
) -> RunRequest:
    """What a runner gets for `run` of `pipeline`; `budget` (when it starts) over the run's
    own `max_cost_usd`."""
    settings = run.settings
    budget = budget or Budget(settings.max_cost_usd)
    return RunRequest(
        run_id=run.run_id,
        pipeline=attempt_pipeline(pipeline.id, run.attempt) if run.attempt else pipeline.id,
        repo=RepoRef(full_name=pipeline.repo, clone_url=pipeline.clone_url),
        branch=run.branch or pipeline.branch,
        base_branch=pipeline.base_branch,
        from_branch=pipeline.branch if run.branch else None,
        prompt=run.prompt,
        mode=run.mode,
        review=run.review,
        failing_checks=run.failing_checks,
        agent=settings.agent,
        image=settings.image,
        timeout_s=settings.timeout_s,
        network=settings.network,
        allowed_hosts=list(settings.allowed_hosts),
        resources=settings.resources,
        max_cost_usd=budget.usd,
        budget_cap=budget.cap,
        budget_shown=budget.shown,
        setup=settings.setup,
        history=pipeline.history(),
        verify=settings.verify if run.mode == "code" else [],
        verify_timeout_s=settings.verify_timeout_minutes * 60,
        runner_label=settings.label,
        token=SecretStr(token) if token else None,
    )


class Dispatch:
    """The runners' queues, as the App uses them."""

    def __init__(
        self, redis: ArqRedis, mint_token: TokenMinter, caps: MonthlyCaps | None = None
    ) -> None:
        self.redis = redis
        self.mint_token = mint_token
        self.caps = caps or MonthlyCaps()
        self._minted: dict[tuple[int, str], tuple[float, str]] = {}

    async def prefetch(self, installation_id: int, repo: str) -> None:
        """Mint a token for repository `repo` (owner/name) ahead of `enqueue`, which takes it
        (once, within `PREFETCH_SECONDS`), unless one is held already. Never raises:
        `enqueue` mints again and tells why."""
        key = (installation_id, repo.partition("/")[2])
        held = self._minted.get(key)
        if held is not None and held[0] > time.monotonic():
            return
        try:
            token = await self.mint_token(*key)
        except Exception as exc:
            log.info("%s: no token ahead of time (%s)", repo, exc)
            return
        self._minted[key] = (time.monotonic() + PREFETCH_SECONDS, token)

    def drop_ahead(self, installation_id: int, repo: str) -> None:
        """Forget a token minted ahead for `repo` that no run took."""
        self._minted.pop((installation_id, repo.partition("/")[2]), None)

    async def _token(self, installation_id: int, repo_name: str) -> str:
        minted = self._minted.pop((installation_id, repo_name), None)
        if minted is not None and minted[0] > time.monotonic():
            return minted[1]
        return await self.mint_token(installation_id, repo_name)

    async def enqueue(self, pipeline: Pipeline, run: PipelineRun) -> None:
        """Queue `run` for runners of its label, with a token for its one repository and its
        budget as of now (what the monthly caps leave)."""
        token = await self._token(pipeline.installation_id, pipeline.repo.partition("/")[2])
        budget = await budget_for(
            self.redis, self.caps, run.settings.max_cost_usd, pipeline.repo, run.requested_by
        )
        request = run_request(pipeline, run, token, budget)
        queue = run_queue(run.label)
        job = await self.redis.enqueue_job(
            RUN_FUNCTION, request.dump_for_queue(), _job_id=run.run_id, _queue_name=queue
        )
        await sadd(self.redis, RUN_LABELS, run.label)
        log.info(
            "run %s of %s %s to %s",
            run.run_id,
            pipeline.id,
            "queued" if job is not None else "was already queued",
            queue,
        )

    async def enqueue_preview(self, request: PreviewRequest, installation_id: int) -> None:
        """Queue a preview for runners of its label, with a token to fetch its repository;
        it becomes the one its pipeline wants (a runner stops any other)."""
        token = await self._token(installation_id, request.repo.full_name.partition("/")[2])
        request = request.model_copy(update={"token": SecretStr(token)})
        await self.redis.set(preview_wanted(request.pipeline), request.preview_id)
        queue = preview_queue(request.runner_label)
        await self.redis.enqueue_job(
            PREVIEW_FUNCTION,
            request.dump_for_queue(),
            _job_id=request.preview_id,
            _queue_name=queue,
        )
        log.info("preview %s of %s queued to %s", request.preview_id, request.pipeline, queue)

    async def take_back(self, run: PipelineRun) -> Pickup:
        """Take `run`'s job back before any runner starts it.

        Writing arq's in-progress key in the same transaction defeats a runner that is
        claiming the job at this moment (it watches that key). A run a runner took is
        started even while its hold on the job has lapsed (Redis was away).
        """
        queue = run_queue(run.label)
        in_progress = in_progress_key_prefix + run.run_id
        taken = run_taken(run.run_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(in_progress, taken)
            if await pipe.exists(in_progress, taken):
                return "started"
            if await pipe.zscore(queue, run.run_id) is None:
                # Never queued (still waiting), or a runner already has it or had it.
                return "absent" if run.status == "waiting" else "started"
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.zrem(queue, run.run_id)
            pipe.delete(job_key_prefix + run.run_id)
            pipe.psetex(in_progress, 5000, b"dequeued")
            try:
                await pipe.execute()
            except WatchError:
                return "started"
        return "taken_back"

    async def abort(self, run: PipelineRun) -> None:
        """Ask arq to cancel the run's job, without waiting for it to end."""
        job = Job(run.run_id, self.redis, _queue_name=run_queue(run.label))
        with suppress(TimeoutError, ResultNotFound):
            await job.abort(timeout=0, poll_delay=0.05)
