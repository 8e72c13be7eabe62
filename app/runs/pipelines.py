"""Pipelines: one per issue or pull request, one branch, the ordered history of runs.

Runs of one pipeline never overlap: a new run waits in line until the active one finishes,
and `start_next_waiting` (called by the runs service, and by the reporter on a finished
event) starts the next.

`Pipeline`'s methods are the state machine, pure and tested without Redis. `Pipelines` is
its store: each change loads a pipeline under a per-pipeline Redis lock, applies one
transition and saves it. Talking to the runners' queues (and minting a run's token) is
`app.runs.dispatch`, called outside the lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import count
from typing import TYPE_CHECKING, Final, Literal

from arq.connections import ArqRedis
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from redis.asyncio.lock import Lock

from app import redisio
from app.conversation.naming import attempt_branch, pipeline_id
from app.conversation.policy import RunSettings
from app.runs import spend
from app.runs.runcounts import RunCounts
from app.runs.summary import PipelineSummary, summarise
from runner.contract import RunMode, SafeId
from runner.diffsummary import DiffSummary
from runner.events import Usage
from runner.job import (
    CommitInfo,
    FailingCheck,
    Outcome,
    ReviewContext,
    RunFinished,
    RunRecord,
    VerifyReport,
)
from runner.ranking import DEFAULT_RANK_BY, AttemptResult, PickMode, RankKey, rank

if TYPE_CHECKING:
    from app.runs.dispatch import Dispatch

log = logging.getLogger("trimo.pipelines")

PIPELINE_PREFIX: Final = "trimo:pipeline:"
PIPELINE_IDS: Final = "trimo:pipelines"
RUN_INDEX: Final = "trimo:pipeline-of-run"
BRANCH_INDEX: Final = "trimo:pipeline-of-branch"
THREAD_INDEX: Final = "trimo:pipeline-of-thread"
SUMMARY_PREFIX: Final = "trimo:pipeline-summary:"
BY_ACTIVITY: Final = "trimo:pipelines:by-activity"
"""Pipeline ids scored by their last change (epoch seconds): the board's index."""
CHANGES: Final = "trimo:pipelines:changes"
"""Pub/sub channel: the id of every pipeline that changed (the dashboard listens)."""
LOCK_SECONDS: Final = 10.0
"""How long a pipeline's lock outlives a holder that stops renewing it (killed, starved, cut
from Redis); a change holds it for Redis calls only."""
_FENCED_WRITE: Final = """
if ARGV[1] ~= '' and redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('set', KEYS[2], ARGV[2])
redis.call('set', KEYS[3], ARGV[3])
redis.call('zadd', KEYS[4], ARGV[4], ARGV[5])
redis.call('publish', ARGV[6], ARGV[5])
return 1
"""
_holding: ContextVar[Lock | None] = ContextVar("pipeline_lock", default=None)
"""The pipeline lock this task holds, which `_write` checks it still owns."""

RunStatus = Literal["waiting", "queued", "running", "finished"]
PipelineKind = Literal["issue", "pull", "branch"]
"""`branch`: started from the dashboard with no issue behind it (number 0 until its pull
request opens; the reporter opens it when the branch first has commits)."""
CommentKind = Literal["issue_comment", "review_comment"]
Pickup = Literal["absent", "taken_back", "started"]
"""Where a run's job stood when asked back: never queued (or gone), taken back, or begun."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class PipelineRun(BaseModel):
    """One run of a pipeline, from request to outcome."""

    run_id: SafeId
    prompt: str
    mode: RunMode = "code"
    review: ReviewContext | None = None
    """Where the review comment that asked for it points (the agent is told)."""
    ci_sha: str | None = None
    """Set on a run that failing checks started (not a person): the commit they failed on."""
    failing_checks: list[FailingCheck] = Field(default_factory=list)
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
    plan: str = ""
    """A discovery run's findings and plan, as the agent wrote them (hostile text)."""
    verify: VerifyReport | None = None
    """Its checks of `verify:` on the pushed head, when they ran."""
    usage: Usage | None = None
    """Tokens and cost the runner summed for it, when its agent reported them."""
    last_word: str = ""
    """Its agent's final message, cut short (hostile text)."""
    attempt: int = 0
    """Its number among the pipeline's attempts (0: an ordinary run)."""
    attempt_set: str | None = None
    """The set of attempts it belongs to (the id of the set's first run)."""
    branch: str | None = None
    """The branch it works on when not the pipeline's (an attempt's own)."""
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

    @property
    def automatic(self) -> bool:
        """Started by failing checks, not by a person."""
        return self.ci_sha is not None

    def result(self) -> AttemptResult:
        """Its evidence, as an attempt to rank (an unfinished run has no outcome yet)."""
        verify, usage, diff = self.verify, self.usage, self.diff
        took = (
            (self.finished_at - self.started_at).total_seconds()
            if self.finished_at and self.started_at
            else None
        )
        return AttemptResult(
            number=self.attempt,
            agent=self.agent,
            outcome=self.outcome if self.status == "finished" else None,
            reason=self.reason,
            verified=verify.passed if verify else None,
            checks_passed=len(verify.checks) - len(verify.failing) if verify else 0,
            checks_failed=len(verify.failing) if verify else 0,
            commits=len(self.commits),
            files_changed=len(diff.files) + diff.unlisted,
            lines_changed=diff.added + diff.removed,
            cost_usd=usage.cost_usd if usage else None,
            tokens=usage.input_tokens + usage.output_tokens if usage else 0,
            seconds=took,
            last_word=self.last_word,
            head_sha=self.head_sha,
        )

    @property
    def set_id(self) -> str:
        """What starts and ends together: its set of attempts, or the run alone."""
        return self.attempt_set or self.run_id

    def record(self, attempts: str = "") -> RunRecord:
        return RunRecord(
            attempts=attempts,
            run_id=self.run_id,
            prompt=self.prompt,
            agent=self.agent,
            mode=self.mode,
            plan=self.plan,
            outcome=self.outcome or Outcome.ERROR,
            reason=self.reason,
            commits=self.commits,
            diff=self.diff,
            started_at=self.started_at,
            finished_at=self.finished_at,
        )


class AttemptSet(BaseModel):
    """Attempts of one prompt that start together and are ranked when all have ended."""

    id: str
    runs: list[str]
    """Its runs' ids, by attempt number."""
    pick: PickMode = "manual"
    rank_by: list[RankKey] = Field(default_factory=lambda: list(DEFAULT_RANK_BY))
    comment_id: int | None = None
    """The thread comment that shows its ranked table."""
    picked: int | None = None
    """The attempt number kept: its commits are the pipeline branch's."""
    picked_by: str = ""
    """Who picked it (`auto`: the ranking did)."""
    picked_at: datetime | None = None
    pick_note: str = ""
    """Why the last pick was made or switched, as the table says it."""
    cleaned: bool = False
    """Its attempts' branches were deleted after the keep window."""
    start_sha: str | None = None
    """The commit its attempts started from (the pipeline branch's head, else its base's):
    each attempt's diff is against it."""


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
    title: str = ""
    """The issue's or pull request's title when the pipeline was made (or last asked on)."""
    closed: bool = False
    automatic_runs: int = 0
    """Runs started by failing checks since a person last asked for one."""
    active_run: str | None = None
    """The set of runs going now (`PipelineRun.set_id`): one run, or a set of attempts."""
    runs: list[PipelineRun] = Field(default_factory=list)
    attempt_sets: list[AttemptSet] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    def find(self, run_id: str) -> PipelineRun | None:
        return next((run for run in self.runs if run.run_id == run_id), None)

    def active(self) -> PipelineRun | None:
        return self.find(self.active_run) if self.active_run else None

    def active_runs(self) -> list[PipelineRun]:
        """The runs of the active set (one run, or its attempts), ended ones included."""
        return [r for r in self.runs if self.active_run and r.set_id == self.active_run]

    def waiting(self) -> list[PipelineRun]:
        """Runs in line, not yet started, oldest first (the active set excluded)."""
        return [r for r in self.runs if r.status == "waiting" and r.set_id != self.active_run]

    def ahead_of(self, run_id: str) -> PipelineRun | None:
        """The run that `run_id` waits for, None when it is next (or active)."""
        run = self.find(run_id)
        if self.active_run is not None and run is not None and run.set_id == self.active_run:
            return None
        if self.active_run is None:
            line = self.waiting()
            first = line[0] if line else None
            return (
                None if first is None or first.set_id == (run.set_id if run else run_id) else first
            )
        return self.active()

    def history(self) -> list[RunRecord]:
        """Earlier runs that a runner took up, for the next run's context; of a set of
        attempts, only the one picked (its record says how the set ranked)."""
        return [
            r.record(self.attempts_note(r))
            for r in self.runs
            if r.status == "finished" and r.started and (not r.attempt or self.is_picked(r))
        ]

    def attempt_set(self, set_id: str) -> AttemptSet | None:
        return next((s for s in self.attempt_sets if s.id == set_id), None)

    def attempts_of(self, attempt_set: AttemptSet) -> list[PipelineRun]:
        """The set's runs, by attempt number."""
        return [run for run_id in attempt_set.runs if (run := self.find(run_id)) is not None]

    def latest_attempt_set(self) -> AttemptSet | None:
        return self.attempt_sets[-1] if self.attempt_sets else None

    def attempt_numbered(self, number: int) -> tuple[AttemptSet, PipelineRun] | None:
        for attempt_set in self.attempt_sets:
            for run in self.attempts_of(attempt_set):
                if run.attempt == number:
                    return attempt_set, run
        return None

    def next_attempt_number(self) -> int:
        return max((run.attempt for run in self.runs), default=0) + 1

    def is_picked(self, run: PipelineRun) -> bool:
        found = self.attempt_set(run.set_id) if run.attempt else None
        return found is not None and found.picked == run.attempt

    def attempts_note(self, run: PipelineRun) -> str:
        """For a picked attempt: which attempts ran, how they ranked, why this one was kept."""
        found = self.attempt_set(run.set_id) if run.attempt else None
        if found is None or found.picked != run.attempt:
            return ""
        ranked = rank([r.result() for r in self.attempts_of(found)], found.rank_by)
        order = ", ".join(f"#{r.number} {r.agent} ({r.standing})" for r in ranked)
        why = "the ranking" if found.picked_by == "auto" else f"@{found.picked_by}"
        return (
            f"This was attempt #{run.attempt} of {len(found.runs)} of the same prompt, "
            f"ranked by {', '.join(found.rank_by)}: {order}. It was kept by {why}"
            + (f" ({found.pick_note})" if found.pick_note else "")
            + "; the others' commits are not on this branch."
        )

    def last_run(self) -> PipelineRun | None:
        return self.runs[-1] if self.runs else None

    def answered_checks_on(self, sha: str) -> bool:
        """Whether failing checks on commit `sha` already started a run."""
        return any(run.ci_sha == sha for run in self.runs)

    # --- transitions (pure: they change this object only) -----------------------------

    def add(self, run: PipelineRun) -> None:
        """Put `run` in line (idempotent per run id); a closed pipeline reopens. Automatic
        runs are counted; a person's request starts the count again."""
        if self.find(run.run_id) is None:
            self.runs.append(run)
            self.closed = False
            self.automatic_runs = self.automatic_runs + 1 if run.automatic else 0

    def next_to_start(self) -> list[PipelineRun]:
        """The runs to queue now (one, or a set of attempts), made active; none when a set is
        busy, none waits or the pipeline is closed.

        Active runs that were never queued (queueing failed) are returned again.
        """
        if self.closed:
            return []
        if self.active_run is None:
            line = self.waiting()
            self.active_run = line[0].set_id if line else None
        return [run for run in self.active_runs() if run.status == "waiting"]

    def mark_queued(self, run_id: str) -> PipelineRun | None:
        """`run_id`, of the active set, is in its runners' queue; None if no longer due."""
        run = self.find(run_id)
        if run is None or run.status != "waiting" or self.active_run != run.set_id:
            return None
        run.status = "queued"
        run.queued_at = utcnow()
        return run

    def mark_running(self, run_id: str, runner: str, at: datetime) -> None:
        run = self.find(run_id)
        if run is not None and run.status != "finished":
            run.status, run.started, run.runner, run.started_at = "running", True, runner, at

    def record_finish(self, finished: RunFinished) -> PipelineRun | None:
        """How `finished.run_id` ended; the pipeline is free for the next run."""
        run = self.find(finished.run_id)
        if run is None:
            return None
        run.status = "finished"
        run.started = True
        run.outcome = finished.outcome
        run.reason = finished.reason
        run.head_sha = finished.head_sha
        run.commits = list(finished.commits)
        run.diff = finished.diff
        run.plan = finished.plan
        run.verify = finished.verify
        run.usage = finished.usage
        run.last_word = finished.last_word
        run.finished_at = finished.at
        self._free_if_over(run)
        return run

    def fail_start(self, run_id: str, reason: str, taken_back: bool = False) -> PipelineRun | None:
        """A run no runner took (waiting; queued only once `taken_back` from its queue)
        could not be started: it ends as an error."""
        run = self.find(run_id)
        if run is None or run.status not in (("waiting", "queued") if taken_back else ("waiting",)):
            return None
        self._end_unstarted(run, Outcome.ERROR, reason)
        return run

    def stop_run(self, run_id: str, reason: str, pickup: Pickup) -> Stopped | None:
        """Drop `run_id` if no runner has it (per `pickup`), else it is aborting."""
        run = self.find(run_id)
        if run is None or run.status == "finished":
            return None
        if run.status in ("waiting", "queued") and pickup != "started":
            self._end_unstarted(run, Outcome.CANCELLED, reason)
            return Stopped(run=run, how="dropped")
        return Stopped(run=run, how="aborting")

    def close(self, reason: str, pickups: Mapping[str, Pickup]) -> list[Stopped]:
        """Close the pipeline: runs not started are dropped, started ones are aborting."""
        self.closed = True
        stopped = [
            self.stop_run(run.run_id, reason, pickups.get(run.run_id, "absent"))
            for run in self.runs
        ]
        return [item for item in stopped if item is not None]

    def _end_unstarted(self, run: PipelineRun, outcome: Outcome, reason: str) -> None:
        run.status = "finished"
        run.outcome = outcome
        run.reason = reason
        run.finished_at = utcnow()
        self._free_if_over(run)

    def _free_if_over(self, run: PipelineRun) -> None:
        """The pipeline is free once every run of `run`'s set has ended."""
        if self.active_run == run.set_id and all(
            r.status == "finished" for r in self.active_runs()
        ):
            self.active_run = None


@dataclass(frozen=True)
class Stopped:
    """What stopping a run did: `dropped` (never ran, now cancelled) or `aborting`."""

    run: PipelineRun
    how: Literal["dropped", "aborting"]


class Pipelines:
    """The pipeline store; `dispatch` queues runs for runners (needed to start or stop runs)."""

    def __init__(self, redis: ArqRedis, dispatch: Dispatch | None = None) -> None:
        self.redis = redis
        self._dispatch = dispatch
        self._counts = RunCounts(redis)

    @property
    def dispatch(self) -> Dispatch:
        if self._dispatch is None:
            raise RuntimeError("Pipelines needs a dispatch to start or stop runs")
        return self._dispatch

    # --- reading -------------------------------------------------------------------

    async def get(self, pipeline_id: str) -> Pipeline | None:
        raw = await self.redis.get(PIPELINE_PREFIX + pipeline_id)
        return Pipeline.model_validate_json(raw) if raw is not None else None

    async def pipeline_of_run(self, run_id: str) -> str | None:
        return await redisio.hget(self.redis, RUN_INDEX, run_id)

    async def get_run(self, run_id: str) -> tuple[Pipeline, PipelineRun] | None:
        """The pipeline holding `run_id`, and the run."""
        pipeline_id = await self.pipeline_of_run(run_id)
        pipeline = await self.get(pipeline_id) if pipeline_id else None
        run = pipeline.find(run_id) if pipeline else None
        return (pipeline, run) if pipeline and run else None

    async def find_by_branch(self, repo: str, branch: str) -> Pipeline | None:
        """The pipeline working on `branch` of `repo` (an issue's, once its PR is open)."""
        pipeline_id = await redisio.hget(self.redis, BRANCH_INDEX, _branch_key(repo, branch))
        return await self.get(pipeline_id) if pipeline_id else None

    async def for_thread(self, repo: str, number: int) -> Pipeline | None:
        """The pipeline that runs asked for on issue or pull request `number` belong to."""
        found = await redisio.hget(self.redis, THREAD_INDEX, _thread_key(repo, number))
        return await self.get(found or pipeline_id(repo, number))

    async def ids(self) -> list[str]:
        return sorted(await redisio.smembers(self.redis, PIPELINE_IDS))

    async def recent(self) -> list[tuple[str, float]]:
        """(pipeline id, when it last changed), the latest first; pipelines saved before the
        index existed are added to it."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(BY_ACTIVITY)
        pipe.scard(PIPELINE_IDS)
        indexed, known = await pipe.execute()
        if indexed < known:
            await self._reindex()
        raw = await self.redis.zrevrange(BY_ACTIVITY, 0, -1, withscores=True)
        return [(redisio.as_text(member) or "", float(score)) for member, score in raw]

    async def summaries(self, ids: list[str]) -> list[PipelineSummary]:
        """The summaries of `ids` that exist, in order: one round trip."""
        if not ids:
            return []
        raws = await self.redis.mget([SUMMARY_PREFIX + pid for pid in ids])
        found = [redisio.as_text(raw) or "" for raw in raws if raw is not None]
        try:
            return _SUMMARIES.validate_json("[" + ",".join(found) + "]")
        except ValidationError:  # one unreadable summary must not hide the others
            return [s for raw in found if (s := _summary_or_none(raw)) is not None]

    async def _reindex(self) -> None:
        for pid in await self.ids():
            pipeline = await self.get(pid)
            if pipeline is not None and not await self.redis.exists(SUMMARY_PREFIX + pid):
                await self._write(pipeline)

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
            pipeline.title = seed.title or pipeline.title
            pipeline.add(run)
            await self._save(pipeline)
            pipe = self.redis.pipeline(transaction=False)
            pipe.sadd(PIPELINE_IDS, pipeline.id)
            pipe.hset(RUN_INDEX, run.run_id, pipeline.id)
            pipe.hset(BRANCH_INDEX, _branch_key(pipeline.repo, pipeline.branch), pipeline.id)
            if run.thread:
                pipe.hset(THREAD_INDEX, _thread_key(pipeline.repo, run.thread), pipeline.id)
            await pipe.execute()
            return pipeline

    async def add_attempts(
        self,
        seed: Pipeline,
        runs: list[PipelineRun],
        attempt_set: AttemptSet,
        taken: frozenset[int] = frozenset(),
    ) -> Pipeline:
        """Put a set of attempts in line on pipeline `seed.id` (created from `seed` if new),
        numbered after the pipeline's earlier attempts and past the numbers in `taken`
        (their branches exist already), each on its own branch.

        Idempotent per set id: a set already there is left as it is (a retried delivery).
        """
        async with self._locked(seed.id):
            pipeline = await self.get(seed.id) or seed.model_copy(update={"runs": []})
            pipeline.installation_id = seed.installation_id
            pipeline.clone_url = seed.clone_url
            pipeline.title = seed.title or pipeline.title
            if pipeline.attempt_set(attempt_set.id) is None:
                free = (n for n in count(pipeline.next_attempt_number()) if n not in taken)
                for number, run in zip(free, runs, strict=False):  # `free` never ends
                    run.attempt, run.attempt_set = number, attempt_set.id
                    run.branch = attempt_branch(pipeline.branch, number)
                    pipeline.add(run)
                pipeline.attempt_sets.append(attempt_set)
            await self._save(pipeline)
            pipe = self.redis.pipeline(transaction=False)
            pipe.sadd(PIPELINE_IDS, pipeline.id)
            for run in runs:
                pipe.hset(RUN_INDEX, run.run_id, pipeline.id)
            pipe.hset(BRANCH_INDEX, _branch_key(pipeline.repo, pipeline.branch), pipeline.id)
            if runs and runs[0].thread:
                pipe.hset(THREAD_INDEX, _thread_key(pipeline.repo, runs[0].thread), pipeline.id)
            await pipe.execute()
            return pipeline

    async def change_attempt_set(
        self, pipeline_id: str, set_id: str, change: Callable[[AttemptSet], object]
    ) -> Pipeline | None:
        """Apply `change` to a set of attempts under its pipeline's lock, and save it (not
        when `change` returns False)."""
        async with self._locked(pipeline_id):
            pipeline = await self.get(pipeline_id)
            found = pipeline.attempt_set(set_id) if pipeline else None
            if pipeline is None or found is None or change(found) is False:
                return None
            await self._save(pipeline)
            return pipeline

    async def attach(
        self,
        run_id: str,
        *,
        check_run_id: int | None = None,
        progress_comment_id: int | None = None,
    ) -> PipelineRun | None:
        """Remember the GitHub objects that report on `run_id`; the run as saved with them
        (None when unknown). A run over already is nobody's to report any more: see
        `app.runs.ended`."""
        updates: dict[str, int] = {}
        if check_run_id is not None:
            updates["check_run_id"] = check_run_id
        if progress_comment_id is not None:
            updates["progress_comment_id"] = progress_comment_id
        if not updates:
            return None
        pipeline = await self._change_run(run_id, lambda p: _set(p.find(run_id), updates))
        return pipeline.find(run_id) if pipeline is not None else None

    async def mark_running(
        self, run_id: str, *, runner: str, started_at: datetime | None = None
    ) -> None:
        """A runner started `run_id` (the reporter calls this on a `started` event)."""
        at = started_at or utcnow()
        await self._change_run(run_id, lambda p: p.mark_running(run_id, runner, at))

    async def finish(self, finished: RunFinished) -> Pipeline | None:
        """Record how a run ended and free its pipeline; then call `start_next_waiting`.

        Its spend is added first (once per run), so a try that fails after it is not lost."""
        found = await self.get_run(finished.run_id)
        if found is not None:
            pipeline, run = found
            await spend.record(
                self.redis, run.run_id, repo=pipeline.repo, person=run.requested_by,
                agent=run.agent, at=finished.at, usage=finished.usage,
            )  # fmt: skip
        return await self._change_run(
            finished.run_id, lambda p: p.record_finish(finished) is not None
        )

    async def start_next_waiting(self, pipeline_id: str) -> PipelineRun | None:
        """Start what is next in line if nothing is active: one run, or a set of attempts
        (queued together); the first run it queued, if any.

        Safe to call at any time and again after a failure: active runs that were never
        queued (minting or enqueueing failed) are queued now. The queue (and GitHub, for the
        token) is called between two short locked changes, never under the lock.
        """
        async with self._locked(pipeline_id):
            pipeline = await self.get(pipeline_id)
            if pipeline is None:
                return None
            before = pipeline.active_run
            runs = pipeline.next_to_start()
            if pipeline.active_run != before:
                await self._save(pipeline)
        if not runs:
            return None
        await asyncio.gather(*(self.dispatch.enqueue(pipeline, run) for run in runs))
        async with self._locked(pipeline_id):
            pipeline = await self.get(pipeline_id)
            if pipeline is None:
                return None
            queued = [q for run in runs if (q := pipeline.mark_queued(run.run_id)) is not None]
            if not queued:
                return None
            await self._save(pipeline)
            return queued[0]

    async def fail_start(
        self, pipeline_id: str, run_id: str, reason: str, taken_back: bool = False
    ) -> PipelineRun | None:
        """`run_id` could not be started (its launch failed for good): end it as an error."""
        async with self._locked(pipeline_id):
            pipeline = await self.get(pipeline_id)
            failed = pipeline.fail_start(run_id, reason, taken_back) if pipeline else None
            if pipeline is None or failed is None:
                return None
            await self._save(pipeline)
            return failed

    async def stop(self, pipeline_id: str, run_id: str, reason: str) -> Stopped | None:
        """Stop one run: drop it if no runner has it yet, else ask its runner to abort.

        None when the run is unknown or already finished. After `dropped`, report it and
        call `start_next_waiting`; an `aborting` run ends with the runner's finished event.
        """
        found = await self.get(pipeline_id)
        run = found.find(run_id) if found else None
        if run is None or run.status == "finished":
            return None
        pickup = await self.dispatch.take_back(run)
        async with self._locked(pipeline_id):
            pipeline = await self.get(pipeline_id)
            stopped = pipeline.stop_run(run_id, reason, pickup) if pipeline else None
            if pipeline is None or stopped is None:
                return None
            await self._save(pipeline)
        if stopped.how == "aborting":
            await self.dispatch.abort(stopped.run)
        return stopped

    async def close(self, pipeline_id: str, reason: str) -> list[Stopped]:
        """Close the pipeline: abort its active run and drop the waiting ones."""
        found = await self.get(pipeline_id)
        if found is None:
            return []
        pickups = {
            run.run_id: await self.dispatch.take_back(run)
            for run in found.runs
            if run.status != "finished"
        }
        async with self._locked(pipeline_id):
            pipeline = await self.get(pipeline_id)
            if pipeline is None:
                return []
            stopped = pipeline.close(reason, pickups)
            await self._save(pipeline)
        for item in stopped:
            if item.how == "aborting":
                await self.dispatch.abort(item.run)
        return stopped

    # --- internals -----------------------------------------------------------------

    async def _change_run(
        self, run_id: str, change: Callable[[Pipeline], object]
    ) -> Pipeline | None:
        """Apply `change` to the pipeline holding `run_id` under its lock, and save it."""
        pipeline_id = await self.pipeline_of_run(run_id)
        if pipeline_id is None:
            return None
        async with self._locked(pipeline_id):
            pipeline = await self.get(pipeline_id)
            if pipeline is None or pipeline.find(run_id) is None:
                return None
            if change(pipeline) is False:
                return None
            await self._save(pipeline)
            return pipeline

    async def _save(self, pipeline: Pipeline) -> None:
        pipeline.updated_at = utcnow()
        await self._write(pipeline)

    async def _write(self, pipeline: Pipeline) -> None:
        """The pipeline, its summary and its place in the index; then say it changed. Under
        the pipeline's lock, only while the lock is still ours (one Redis call, so an expiry
        cannot fall between the check and the write)."""
        key = f"{PIPELINE_PREFIX}{pipeline.id}:lock"
        lock = _holding.get()
        fence = redisio.owner_token(lock) if lock is not None and lock.name == key else ""
        written = await redisio.evaluate(
            self.redis,
            _FENCED_WRITE,
            [key, PIPELINE_PREFIX + pipeline.id, SUMMARY_PREFIX + pipeline.id, BY_ACTIVITY],
            [
                fence,
                pipeline.model_dump_json(),
                summarise(pipeline).model_dump_json(),
                str(pipeline.updated_at.timestamp()),
                pipeline.id,
                CHANGES,
            ],
        )
        if not written:
            raise redisio.LockLost(
                f"pipeline {pipeline.id}: its lock expired before this change was saved"
            )
        await self._counts.track((run.run_id, run.status, run.outcome) for run in pipeline.runs)

    @asynccontextmanager
    async def _locked(self, pipeline_id: str) -> AsyncIterator[None]:
        """The pipeline's lock, renewed while held; a save under it lands only while it is
        still this holder's (a holder starved past LOCK_SECONDS gets `LockLost`,
        and its delivery is tried again, rather than overwriting a newer change)."""
        async with redisio.waited(
            self.redis, f"{PIPELINE_PREFIX}{pipeline_id}:lock", LOCK_SECONDS
        ) as lock:
            token = _holding.set(lock)
            try:
                yield
            finally:
                _holding.reset(token)


def _summary_or_none(raw: str) -> PipelineSummary | None:
    try:
        return PipelineSummary.model_validate_json(raw)
    except ValidationError:
        log.warning("an unreadable pipeline summary was skipped: %.200r", raw)
        return None


_SUMMARIES: Final = TypeAdapter(list[PipelineSummary])
"""Summaries parsed in one call (a thousand at once cost a third of one by one)."""


def _set(run: PipelineRun | None, updates: Mapping[str, object]) -> None:
    for name, value in updates.items():
        setattr(run, name, value)


def _branch_key(repo: str, branch: str) -> str:
    return f"{repo.lower()}:{branch}"


def _thread_key(repo: str, number: int) -> str:
    return f"{repo.lower()}#{number}"
