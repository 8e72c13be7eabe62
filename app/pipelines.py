"""Pipelines in Redis: one per issue or pull request, one branch, the ordered history of runs.

Runs of one pipeline never overlap: a new run waits in line until the active one finishes,
and `start_next_waiting` (called by the handlers, and by the reporter on a finished event)
starts the next. Every change happens under a per-pipeline Redis lock.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal, TypeAlias

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix
from arq.jobs import Job, ResultNotFound
from pydantic import BaseModel, Field, SecretStr
from redis.exceptions import WatchError

from app.naming import pipeline_id
from app.policy import RunSettings
from runner.contract import RUN_FUNCTION, SafeId, run_queue
from runner.diffsummary import DiffSummary
from runner.job import (
    CommitInfo,
    Outcome,
    RepoRef,
    RunFinished,
    RunRecord,
    RunRequest,
)

log = logging.getLogger("trimo.pipelines")

PIPELINE_PREFIX: Final = "trimo:pipeline:"
PIPELINE_IDS: Final = "trimo:pipelines"
RUN_INDEX: Final = "trimo:pipeline-of-run"
BRANCH_INDEX: Final = "trimo:pipeline-of-branch"
THREAD_INDEX: Final = "trimo:pipeline-of-thread"
LOCK_SECONDS: Final = 120.0
"""Longest one change may hold a pipeline's lock (a launch mints a token on GitHub)."""

RunStatus = Literal["waiting", "queued", "running", "finished"]
PipelineKind = Literal["issue", "pull"]
CommentKind = Literal["issue_comment", "review_comment"]
TokenMinter: TypeAlias = Callable[[int, str], Awaitable[str]]
"""(installation id, repository name) -> a token for that one repository."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class PipelineRun(BaseModel):
    """One run of a pipeline, from request to outcome."""

    run_id: SafeId
    prompt: str
    settings: RunSettings
    requested_by: str
    thread: int
    """Issue or pull request number where the run was asked for and is reported."""
    comment_id: int | None = None
    comment_kind: CommentKind | None = None
    check_run_id: int | None = None
    progress_comment_id: int | None = None
    status: RunStatus = "waiting"
    outcome: Outcome | None = None
    reason: str = ""
    started: bool = False
    """Whether a runner took it up (False for runs stopped while they waited)."""
    runner: str | None = None
    head_sha: str | None = None
    commits: list[CommitInfo] = Field(default_factory=list)
    diff: DiffSummary = Field(default_factory=DiffSummary)
    requested_at: datetime = Field(default_factory=utcnow)
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def agent(self) -> str:
        return self.settings.agent

    @property
    def label(self) -> str:
        return self.settings.label

    def record(self) -> RunRecord:
        return RunRecord(
            run_id=self.run_id,
            prompt=self.prompt,
            agent=self.agent,
            outcome=self.outcome or Outcome.ERROR,
            reason=self.reason,
            commits=self.commits,
            diff=self.diff,
            started_at=self.started_at,
            finished_at=self.finished_at,
        )


class Pipeline(BaseModel):
    """An issue or pull request, its branch, and its runs in the order they were asked for."""

    id: SafeId
    repo: str
    number: int
    kind: PipelineKind
    branch: str
    base_branch: str
    clone_url: str
    installation_id: int
    closed: bool = False
    active_run: str | None = None
    runs: list[PipelineRun] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    def find(self, run_id: str) -> PipelineRun | None:
        return next((run for run in self.runs if run.run_id == run_id), None)

    def active(self) -> PipelineRun | None:
        return self.find(self.active_run) if self.active_run else None

    def waiting(self) -> list[PipelineRun]:
        """Runs in line, not yet started, oldest first (the active one excluded)."""
        return [r for r in self.runs if r.status == "waiting" and r.run_id != self.active_run]

    def ahead_of(self, run_id: str) -> PipelineRun | None:
        """The run that `run_id` waits for, None when it is next (or active)."""
        if self.active_run == run_id:
            return None
        if self.active_run is None:
            line = self.waiting()
            first = line[0] if line else None
            return None if first is None or first.run_id == run_id else first
        return self.active()

    def history(self) -> list[RunRecord]:
        """Earlier runs that a runner took up, for the next run's context."""
        return [r.record() for r in self.runs if r.status == "finished" and r.started]

    def last_run(self) -> PipelineRun | None:
        return self.runs[-1] if self.runs else None


@dataclass(frozen=True)
class Stopped:
    """What stopping a run did: `dropped` (never ran, now cancelled) or `aborting`."""

    run: PipelineRun
    how: Literal["dropped", "aborting"]


class Pipelines:
    """The pipeline store and its run queueing; `mint_token` is needed to start runs."""

    def __init__(self, redis: ArqRedis, mint_token: TokenMinter | None = None) -> None:
        self.redis = redis
        self._mint_token = mint_token

    # --- reading -------------------------------------------------------------------

    async def get(self, pipeline_id: str) -> Pipeline | None:
        raw = await self.redis.get(PIPELINE_PREFIX + pipeline_id)
        return Pipeline.model_validate_json(raw) if raw is not None else None

    async def pipeline_of_run(self, run_id: str) -> str | None:
        raw = await self.redis.hget(RUN_INDEX, run_id)  # type: ignore[misc]
        return _text(raw)

    async def get_run(self, run_id: str) -> tuple[Pipeline, PipelineRun] | None:
        """The pipeline holding `run_id`, and the run."""
        pipeline_id = await self.pipeline_of_run(run_id)
        pipeline = await self.get(pipeline_id) if pipeline_id else None
        run = pipeline.find(run_id) if pipeline else None
        return (pipeline, run) if pipeline and run else None

    async def find_by_branch(self, repo: str, branch: str) -> Pipeline | None:
        """The pipeline working on `branch` of `repo` (an issue's, once its PR is open)."""
        raw = await self.redis.hget(BRANCH_INDEX, _branch_key(repo, branch))  # type: ignore[misc]
        pipeline_id = _text(raw)
        return await self.get(pipeline_id) if pipeline_id else None

    async def for_thread(self, repo: str, number: int) -> Pipeline | None:
        """The pipeline that runs asked for on issue or pull request `number` belong to."""
        raw = await self.redis.hget(THREAD_INDEX, _thread_key(repo, number))  # type: ignore[misc]
        return await self.get(_text(raw) or pipeline_id(repo, number))

    async def ids(self) -> list[str]:
        members = await self.redis.smembers(PIPELINE_IDS)  # type: ignore[misc]
        return sorted(_text(m) or "" for m in members)

    # --- changing ------------------------------------------------------------------

    async def add_run(self, seed: Pipeline, run: PipelineRun) -> Pipeline:
        """Put `run` in line on pipeline `seed.id` (created from `seed` if new).

        Idempotent: a run id already there is left as it is. A closed pipeline reopens.
        The seed's installation and clone URL replace stored ones (an App reinstalled).
        """
        async with self._locked(seed.id):
            pipeline = await self.get(seed.id) or seed.model_copy(update={"runs": []})
            pipeline.installation_id = seed.installation_id
            pipeline.clone_url = seed.clone_url
            if pipeline.find(run.run_id) is None:
                pipeline.runs.append(run)
                pipeline.closed = False
            await self._save(pipeline)
            pipe = self.redis.pipeline(transaction=False)
            pipe.sadd(PIPELINE_IDS, pipeline.id)
            pipe.hset(RUN_INDEX, run.run_id, pipeline.id)
            pipe.hset(BRANCH_INDEX, _branch_key(pipeline.repo, pipeline.branch), pipeline.id)
            pipe.hset(THREAD_INDEX, _thread_key(pipeline.repo, run.thread), pipeline.id)
            await pipe.execute()
            return pipeline

    async def attach(
        self,
        run_id: str,
        *,
        check_run_id: int | None = None,
        progress_comment_id: int | None = None,
    ) -> None:
        """Remember the GitHub objects that report on `run_id`."""
        updates: dict[str, int] = {}
        if check_run_id is not None:
            updates["check_run_id"] = check_run_id
        if progress_comment_id is not None:
            updates["progress_comment_id"] = progress_comment_id
        await self._update_run(run_id, updates)

    async def mark_running(
        self, run_id: str, *, runner: str, started_at: datetime | None = None
    ) -> None:
        """A runner started `run_id` (the reporter calls this on a `started` event)."""
        await self._update_run(
            run_id,
            {
                "status": "running",
                "started": True,
                "runner": runner,
                "started_at": started_at or utcnow(),
            },
            unless_finished=True,
        )

    async def finish(self, finished: RunFinished) -> Pipeline | None:
        """Record how a run ended and free its pipeline; then call `start_next_waiting`."""
        pipeline_id = await self.pipeline_of_run(finished.run_id)
        if pipeline_id is None:
            return None
        async with self._locked(pipeline_id):
            pipeline = await self.get(pipeline_id)
            run = pipeline.find(finished.run_id) if pipeline else None
            if pipeline is None or run is None:
                return None
            run.status = "finished"
            run.started = True
            run.outcome = finished.outcome
            run.reason = finished.reason
            run.head_sha = finished.head_sha
            run.commits = list(finished.commits)
            run.diff = finished.diff
            run.finished_at = finished.at
            if pipeline.active_run == run.run_id:
                pipeline.active_run = None
            await self._save(pipeline)
            return pipeline

    async def start_next_waiting(self, pipeline_id: str) -> PipelineRun | None:
        """Start the next run in line if none is active; the run it queued, if any.

        Safe to call at any time and again after a failure: an active run that was never
        queued (minting or enqueueing failed) is queued now.
        """
        async with self._locked(pipeline_id):
            pipeline = await self.get(pipeline_id)
            if pipeline is None or pipeline.closed:
                return None
            run = pipeline.active()
            if run is None:
                line = pipeline.waiting()
                if not line:
                    if pipeline.active_run is not None:
                        pipeline.active_run = None
                        await self._save(pipeline)
                    return None
                run = line[0]
                pipeline.active_run = run.run_id
                await self._save(pipeline)
            if run.status != "waiting":
                return None
            await self._launch(pipeline, run)
            run.status = "queued"
            run.queued_at = utcnow()
            await self._save(pipeline)
            return run

    async def fail_start(self, pipeline_id: str, run_id: str, reason: str) -> PipelineRun | None:
        """`run_id` could not be started (its launch failed for good): end it as an error."""
        async with self._locked(pipeline_id):
            pipeline = await self.get(pipeline_id)
            run = pipeline.find(run_id) if pipeline else None
            if pipeline is None or run is None or run.status != "waiting":
                return None
            run.status = "finished"
            run.outcome = Outcome.ERROR
            run.reason = reason
            run.finished_at = utcnow()
            if pipeline.active_run == run_id:
                pipeline.active_run = None
            await self._save(pipeline)
            return run

    async def stop(self, pipeline_id: str, run_id: str, reason: str) -> Stopped | None:
        """Stop one run: drop it if no runner has it yet, else ask its runner to abort.

        None when the run is unknown or already finished. After `dropped`, report it and
        call `start_next_waiting`; an `aborting` run ends with the runner's finished event.
        """
        async with self._locked(pipeline_id):
            pipeline = await self.get(pipeline_id)
            run = pipeline.find(run_id) if pipeline else None
            if pipeline is None or run is None:
                return None
            stopped = await self._stop(pipeline, run, reason)
            await self._save(pipeline)
            return stopped

    async def close(self, pipeline_id: str, reason: str) -> list[Stopped]:
        """Close the pipeline: abort its active run and drop the waiting ones."""
        async with self._locked(pipeline_id):
            pipeline = await self.get(pipeline_id)
            if pipeline is None:
                return []
            pipeline.closed = True
            stopped: list[Stopped] = []
            for run in pipeline.runs:
                result = await self._stop(pipeline, run, reason)
                if result is not None:
                    stopped.append(result)
            await self._save(pipeline)
            return stopped

    # --- internals -----------------------------------------------------------------

    async def _stop(self, pipeline: Pipeline, run: PipelineRun, reason: str) -> Stopped | None:
        if run.status == "finished":
            return None
        if run.status == "waiting" or (
            run.status == "queued" and await self._dequeue_unstarted(run)
        ):
            run.status = "finished"
            run.outcome = Outcome.CANCELLED
            run.reason = reason
            run.finished_at = utcnow()
            if pipeline.active_run == run.run_id:
                pipeline.active_run = None
            return Stopped(run=run, how="dropped")
        await self._abort(run)
        return Stopped(run=run, how="aborting")

    async def _dequeue_unstarted(self, run: PipelineRun) -> bool:
        """Take a queued job back before any runner starts it; False if one already has.

        Writing arq's in-progress key in the same transaction defeats a runner that is
        claiming the job at this moment (it watches that key).
        """
        queue = run_queue(run.label)
        in_progress = in_progress_key_prefix + run.run_id
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(in_progress)
            if await pipe.exists(in_progress) or await pipe.zscore(queue, run.run_id) is None:
                return False
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.zrem(queue, run.run_id)
            pipe.delete(job_key_prefix + run.run_id)
            pipe.psetex(in_progress, 5000, b"dequeued")
            try:
                await pipe.execute()
            except WatchError:
                return False
        return True

    async def _abort(self, run: PipelineRun) -> None:
        """Ask arq to cancel the run's job, without waiting for it to end."""
        job = Job(run.run_id, self.redis, _queue_name=run_queue(run.label))
        with suppress(TimeoutError, ResultNotFound):
            await job.abort(timeout=0, poll_delay=0.05)

    async def _launch(self, pipeline: Pipeline, run: PipelineRun) -> None:
        if self._mint_token is None:
            raise RuntimeError("Pipelines needs mint_token to start runs")
        repo_name = pipeline.repo.partition("/")[2]
        token = await self._mint_token(pipeline.installation_id, repo_name)
        settings = run.settings
        request = RunRequest(
            run_id=run.run_id,
            pipeline=pipeline.id,
            repo=RepoRef(full_name=pipeline.repo, clone_url=pipeline.clone_url),
            branch=pipeline.branch,
            base_branch=pipeline.base_branch,
            prompt=run.prompt,
            agent=settings.agent,
            image=settings.image,
            timeout_s=settings.timeout_s,
            network=settings.network,
            resources=settings.resources,
            history=pipeline.history(),
            runner_label=settings.label,
            token=SecretStr(token),
        )
        job = await self.redis.enqueue_job(
            RUN_FUNCTION,
            request.dump_for_queue(),
            _job_id=run.run_id,
            _queue_name=run_queue(settings.label),
        )
        log.info(
            "run %s of %s %s to %s",
            run.run_id,
            pipeline.id,
            "queued" if job is not None else "was already queued",
            run_queue(settings.label),
        )

    async def _update_run(
        self, run_id: str, updates: Mapping[str, object], unless_finished: bool = False
    ) -> None:
        pipeline_id = await self.pipeline_of_run(run_id)
        if pipeline_id is None:
            return
        async with self._locked(pipeline_id):
            pipeline = await self.get(pipeline_id)
            run = pipeline.find(run_id) if pipeline else None
            if pipeline is None or run is None:
                return
            if unless_finished and run.status == "finished":
                return
            for name, value in updates.items():
                setattr(run, name, value)
            await self._save(pipeline)

    async def _save(self, pipeline: Pipeline) -> None:
        pipeline.updated_at = utcnow()
        await self.redis.set(PIPELINE_PREFIX + pipeline.id, pipeline.model_dump_json())

    @asynccontextmanager
    async def _locked(self, pipeline_id: str) -> AsyncIterator[None]:
        lock = self.redis.lock(
            f"{PIPELINE_PREFIX}{pipeline_id}:lock",
            timeout=LOCK_SECONDS,
            blocking_timeout=LOCK_SECONDS,
        )
        async with lock:
            yield


def _branch_key(repo: str, branch: str) -> str:
    return f"{repo.lower()}:{branch}"


def _thread_key(repo: str, number: int) -> str:
    return f"{repo.lower()}#{number}"


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value
