"""The reporter: run events from Redis become check runs, comments and pull requests.

It reads the stream every runner writes to (`trimo:run-events`) as a consumer
group, so several App processes share the work. An event is acknowledged once
GitHub accepted what it caused, or once the reporter gave up on it.

Each run is reported on its own: runs are handled concurrently, a run's events
in order, and a failure holds back only that run.

- GitHub busy or slow (5xx, timeouts, rate limits, no answer within 10 s): the
  run is tried again with backoff, a bounded number of times.
- A report object gone: a deleted progress comment or check run is made again;
  a pull request GitHub will not open is explained in the progress comment.
- The thread, the installation or a permission gone (403, 404, 410): after a
  few tries the run's GitHub output is given up and logged; Trimo's own
  bookkeeping (the pipeline, the next run) goes on.
- Anything else, or trouble that outlasts its tries: the event is parked in the
  dead-letter stream `trimo:report:dead` with its error, and acknowledged.

Every write takes a unit of its installation's write budget (`app.reporting.budget`): a
run's first and last words go first; live check-run updates are merged (the
latest state wins) and paced by what the budget leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar

import redis.asyncio as aioredis
from githubkit.exception import RequestError, RequestFailed
from redis.exceptions import LockError

from app.github.client import CheckAction, ReactionTarget, RepoAPI, failure_detail, is_transient
from app.redisio import ensure_group, hdel, hget, hgetall, hset, settle, smembers, srem
from app.reporting import runview
from app.reporting.budget import LiveRun, Priority, WriteBudget, due_live
from app.reporting.runview import RunView
from app.runs import previews
from app.runs.pipelines import Pipeline, PipelineRun
from app.runs.service import (
    CHECK_NAME,
    RETRY_ACTION,
    STOP_ACTION,
    show_queued,
    start_next,
)
from app.services import Services
from runner import contract as keys
from runner import logs
from runner.job import Outcome, RunEvent, RunFinished, RunStarted, run_event_adapter

log = logging.getLogger("trimo.reporter")

GROUP: Final = "trimo-reporter"
VIEW_PREFIX: Final = "trimo:report:view:"
STEPS_PREFIX: Final = "trimo:report:steps:"
"""Per run: the GitHub steps already done (so a retry repeats none), and its flags."""
DIRTY: Final = "trimo:report:dirty"
"""Runs with news since their last live update."""
RUNNING: Final = "trimo:report:running"
"""Running runs → their installation, for live updates."""
TRIES: Final = "trimo:report:tries"
"""Stream entry → failed tries so far."""
DEAD_LETTERS: Final = "trimo:report:dead"
PULL_OF_PIPELINE: Final = "trimo:pull-of-pipeline"
OPENS_PULLS: Final = ("issue", "branch")
"""Pipeline kinds whose branch gets a pull request when it first has commits."""
VIEW_TTL_SECONDS: Final = 14 * 24 * 3600
CLAIM_IDLE_MS: Final = 60_000
CALL_TIMEOUT_SECONDS: Final = 10.0
TRANSIENT_TRIES: Final = 10
GONE_TRIES: Final = 3
BUG_TRIES: Final = 3
MAX_BACKOFF_SECONDS: Final = 60.0
OVER_BUDGET_WAIT_SECONDS: Final = 2.0
LATE_WRITE_SECONDS: Final = 30.0
"""How long a write GitHub did not answer may still land (and undo a later one)."""
CONCURRENCY: Final = 16
DEAD_LETTERS_MAXLEN: Final = 10_000
RUN_LOCK_PREFIX: Final = "trimo:report:lock:"
"""Per run: held by the one App process reporting it now. The stream's entries of one run
may go to different consumers; the lock keeps them from reporting it at once (a `started`
landing after the `finished` would leave its check run in progress forever)."""
RUN_LOCK_SECONDS: Final = 300.0
RUN_LOCK_BUSY_SECONDS: Final = 0.5
"""How long a run another process is reporting waits before this one looks again."""

GONE_FLAG: Final = "flag:gone"
CHECK_OFF_FLAG: Final = "flag:check-off"
PULL_PROBLEM: Final = "flag:pull-problem"
UNSURE_FLAG: Final = "flag:unsure"
"""When (epoch seconds) a write of the run last went unanswered: it may land later."""

Failure = Literal["transient", "gone", "bug"]
T = TypeVar("T")


class OverBudget(Exception):
    """The installation's write budget has no room now: the run waits, no try is counted."""


class LateWrites(Exception):
    """A write GitHub did not answer may still land: the run's last word waits it out, so
    that no stale "running" lands after it. No try is counted."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"a late write may land within {seconds:.0f}s")
        self.seconds = seconds


class Unsettled(Exception):
    """GitHub said a report object is gone, yet it is there: try again later."""


async def pull_of_pipeline(redis: aioredis.Redis, pipeline: Pipeline) -> int | None:
    """The pipeline's pull request: its own, or the one the reporter opened for its branch."""
    if pipeline.kind == "pull":
        return pipeline.number
    raw = await hget(redis, PULL_OF_PIPELINE, pipeline.id)
    return int(raw) if raw is not None and raw.isdigit() else None


def classify(exc: BaseException) -> Failure:
    """What a failure means for the run being reported."""
    if isinstance(exc, TimeoutError | OSError | aioredis.RedisError | Unsettled):
        return "transient"
    if isinstance(exc, RequestFailed) and exc.response.status_code == 401:
        return "gone"  # the installation was removed: its tokens stop working
    if is_transient(exc):
        return "transient"
    if isinstance(exc, RequestFailed):
        return "gone"  # 403 not accessible / suspended, 404 or 301 deleted or moved, 410, 422
    return "bug"


def describe(exc: BaseException) -> str:
    if isinstance(exc, RequestFailed):
        return failure_detail(exc)
    if isinstance(exc, TimeoutError):
        return f"no answer within {CALL_TIMEOUT_SECONDS:.0f}s"
    return f"{type(exc).__name__}: {exc}"


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


class Reporter:
    """One consumer of the run-event stream."""

    def __init__(
        self, services: Services, consumer: str, budget: WriteBudget | None = None
    ) -> None:
        self.services = services
        self.redis: aioredis.Redis = services.redis
        self.consumer = consumer
        self.budget = budget or WriteBudget(self.redis)
        self._busy: dict[str, asyncio.Task[None]] = {}
        self._held: dict[str, float] = {}
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self.backoff = 1.0
        """The first wait after a failure, doubled on each further try."""

    async def ensure_group(self) -> None:
        await ensure_group(self.redis, keys.ALL_RUN_EVENTS, GROUP)

    async def run(self, stop: asyncio.Event) -> None:
        """Report until `stop` is set. Only Redis trouble pauses everything; nothing ends it."""
        backoff = 1.0
        group_ready = False
        while not stop.is_set():
            try:
                if not group_ready:
                    await self.ensure_group()
                    group_ready = True
                await self.step(block_ms=1000, wait=False)
                await self.flush_due(wait=False)
                backoff = 1.0
            except Exception as exc:  # a bug here must not end reporting for everyone
                log.warning("reporting paused for %.0fs: %s", backoff, describe(exc))
                await _sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        await self.drain()

    async def drain(self) -> None:
        """Wait for the runs being reported now."""
        if self._busy:
            await asyncio.gather(*self._busy.values(), return_exceptions=True)

    # --- reading the stream --------------------------------------------------------------

    async def step(self, block_ms: int = 0, wait: bool = True) -> int:
        """Start reporting this consumer's unacknowledged events, then new ones.

        Runs are reported concurrently; a run already being reported, or waiting out a
        backoff, keeps its events for a later step. With `wait`, returns after the runs
        started here are done. How many events were taken up.
        """
        entries = await self._read("0", block_ms=None, count=1000)
        claimed = await self.redis.xautoclaim(
            keys.ALL_RUN_EVENTS, GROUP, self.consumer, CLAIM_IDLE_MS, "0-0", count=50
        )
        entries += claimed[1]
        entries += await self._read(">", block_ms=block_ms or None, count=100)
        by_run: dict[str, list[tuple[str, Any]]] = {}
        seen: set[str] = set()
        for raw_id, fields in entries:
            entry_id = _text(raw_id)
            if entry_id in seen:
                continue
            seen.add(entry_id)
            if not fields:  # deleted from the stream meanwhile
                await self._ack(entry_id)
                continue
            run_id = _text(fields.get(b"run_id") or fields.get("run_id"))
            by_run.setdefault(run_id, []).append(
                (entry_id, fields.get(b"event") or fields.get("event"))
            )
        now = time.monotonic()
        started: list[asyncio.Task[None]] = []
        taken = 0
        for run_id, items in by_run.items():
            if run_id in self._busy or self._held.get(run_id, 0.0) > now:
                continue
            started.append(self._start(run_id, self._report_run(run_id, items)))
            taken += len(items)
        if wait and started:
            await asyncio.gather(*started)
        return taken

    def _start(self, run_id: str, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._busy[run_id] = task
        task.add_done_callback(lambda _task: self._busy.pop(run_id, None))
        return task

    async def _read(
        self, start: str, block_ms: int | None, count: int
    ) -> list[tuple[Any, dict[Any, Any]]]:
        reply = await self.redis.xreadgroup(
            GROUP, self.consumer, {keys.ALL_RUN_EVENTS: start}, count=count, block=block_ms
        )
        return [entry for _stream, entries in reply or [] for entry in entries]

    async def _ack(self, entry_id: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.xack(keys.ALL_RUN_EVENTS, GROUP, entry_id)
        pipe.hdel(TRIES, entry_id)
        await pipe.execute()

    # --- one run's events, isolated ---------------------------------------------------------

    async def _report_run(self, run_id: str, items: list[tuple[str, Any]]) -> None:
        """`run_id`'s events in order; the first that must wait holds back the rest."""
        async with self._slots, self._run_lock(run_id) as mine:
            if not mine:
                self._hold(run_id, RUN_LOCK_BUSY_SECONDS)
                return
            with logs.log_context(run_id=run_id):
                for entry_id, raw in items:
                    try:
                        if not await self._report(run_id, entry_id, raw):
                            return
                    except Exception:  # Redis gone while settling: the entry stays pending
                        log.exception("run %s: event %s left for later", run_id, entry_id)
                        self._hold(run_id, 5.0)
                        return

    async def _report(self, run_id: str, entry_id: str, raw: Any) -> bool:
        """Report one event; False when the run must wait (the event stays pending)."""
        try:
            event = run_event_adapter.validate_python(json.loads(_text(raw) or "null"))
        except ValueError as exc:
            await self._park(entry_id, run_id, raw, f"malformed event: {exc}")
            await self._ack(entry_id)
            return True
        try:
            await self.handle(run_id, event)
        except Exception as exc:  # one run's trouble, whatever it is, stays that run's
            return await self._failed(run_id, entry_id, raw, event, exc)
        await self._ack(entry_id)
        self._held.pop(run_id, None)
        return True

    async def _failed(
        self, run_id: str, entry_id: str, raw: Any, event: RunEvent, exc: Exception
    ) -> bool:
        if isinstance(exc, OverBudget):
            self._hold(run_id, OVER_BUDGET_WAIT_SECONDS)
            return False
        if isinstance(exc, LateWrites):
            self._hold(run_id, exc.seconds)
            return False
        kind = classify(exc)
        detail = describe(exc)
        tries = int(await settle(self.redis.hincrby(TRIES, entry_id, 1)))
        limit = {"transient": TRANSIENT_TRIES, "gone": GONE_TRIES, "bug": BUG_TRIES}[kind]
        if tries < limit:
            delay = min(MAX_BACKOFF_SECONDS, self.backoff * 2.0 ** (tries - 1))
            log.warning(
                "run %s: reporting %s failed (%s; try %d of %d), again in %.0fs",
                run_id, event.type, detail, tries, limit, delay,
            )  # fmt: skip
            if kind == "bug":
                log.debug("run %s: the failure", run_id, exc_info=exc)
            self._hold(run_id, delay)
            return False
        if kind == "gone":
            log.warning("run %s: GitHub output given up: %s", run_id, detail)
            await hset(self.redis, STEPS_PREFIX + run_id, {GONE_FLAG: detail})
        else:
            log.error(
                "run %s: %s event parked after %d tries: %s", run_id, event.type, tries, detail
            )
            await self._park(entry_id, run_id, raw, detail)
        await self._bookkeep(run_id, event)
        await self._ack(entry_id)
        return True

    def _hold(self, run_id: str, seconds: float) -> None:
        self._held[run_id] = time.monotonic() + seconds

    async def _bookkeep(self, run_id: str, event: RunEvent) -> None:
        """Trimo's own side of an event GitHub will not hear about: the pipeline goes on."""
        try:
            view = (await self._load(run_id) or RunView(run_id=run_id)).apply(event)
            await self._save(view)
            pipelines = self.services.pipelines
            if isinstance(event, RunStarted):
                await pipelines.mark_running(run_id, runner=event.runner, started_at=event.at)
            elif isinstance(event, RunFinished):
                pipeline = await pipelines.finish(event)
                pipe = self.redis.pipeline(transaction=False)
                pipe.srem(DIRTY, run_id)
                pipe.hdel(RUNNING, run_id)
                await pipe.execute()
                if pipeline is not None:
                    api = await self.services.github.repo(pipeline.installation_id, pipeline.repo)
                    await self._start_next(api, pipeline)
        except Exception as exc:
            log.error("run %s: bookkeeping of %s failed: %s", run_id, event.type, describe(exc))

    async def _park(self, entry_id: str, run_id: str, raw: Any, error: str) -> None:
        await self.redis.xadd(
            DEAD_LETTERS,
            {
                "entry": entry_id,
                "run_id": run_id,
                "event": _text(raw),
                "error": error[:2000],
                "at": datetime.now(UTC).isoformat(),
            },
            maxlen=DEAD_LETTERS_MAXLEN,
            approximate=True,
        )

    async def parked(self, count: int = 100) -> list[dict[str, str]]:
        """The latest parked events, newest first, with their dead-letter id."""
        entries = await self.redis.xrevrange(DEAD_LETTERS, count=count)
        return [
            {"id": _text(entry_id), **{_text(k): _text(v) for k, v in fields.items()}}
            for entry_id, fields in entries
        ]

    async def replay(self, dead_id: str) -> bool:
        """Put parked event `dead_id` back on the stream; whether there was one."""
        found = await self.redis.xrange(DEAD_LETTERS, dead_id, dead_id)
        if not found:
            return False
        fields = {_text(k): _text(v) for k, v in found[0][1].items()}
        await self.redis.xadd(
            keys.ALL_RUN_EVENTS, {"run_id": fields.get("run_id", ""), "event": fields["event"]}
        )
        if fields.get("run_id"):
            await hdel(self.redis, STEPS_PREFIX + fields["run_id"], GONE_FLAG)
        await self.redis.xdel(DEAD_LETTERS, dead_id)
        return True

    # --- one event ------------------------------------------------------------------

    async def handle(self, run_id: str, event: RunEvent) -> None:
        """Fold `event` into the run's view and tell GitHub what it needs to know now."""
        if isinstance(event, RunFinished):  # its log stays TRIMO_LOG_RETENTION_DAYS from now
            days = self.services.settings.log_retention_days
            await self.redis.expire(keys.run_events(run_id), days * 24 * 3600)
        view = (await self._load(run_id) or RunView(run_id=run_id)).apply(event)
        located = await self.services.pipelines.get_run(run_id)
        if located is None:
            await self._save(view)  # a run the App did not start (local, or long forgotten)
            return
        pipeline, run = located
        logs.bind(pipeline=pipeline.id, repo=pipeline.repo)
        api = await self.services.github.repo(pipeline.installation_id, pipeline.repo)
        speak = await hget(self.redis, STEPS_PREFIX + run_id, GONE_FLAG) is None
        if run.status == "finished":
            # Over already (reported, or stopped before it started): only make sure the
            # next run in line goes, in case an earlier attempt stopped short of that.
            if isinstance(event, RunFinished):
                await self._start_next(api, pipeline)
            return
        if isinstance(event, RunFinished):
            if speak:
                await self._wait_out_late_writes(run_id)
            await self._finished(api, speak, pipeline, run, view, event)
            await self._start_next(api, pipeline)
            return
        if isinstance(event, RunStarted):
            await self.services.pipelines.mark_running(
                run.run_id, runner=event.runner, started_at=event.at
            )
            if speak:
                await self._started(api, pipeline, run, view)
        elif event.type == "pushed" and pipeline.kind in OPENS_PULLS and speak:
            await self._ensure_pull(api, pipeline, view, Priority.FIRST, final=False)
        elif event.type == "push_refused":
            await self.redis.delete(f"{VIEW_PREFIX}{run_id}:sent")  # shown with the next update
        await self._save(view)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(RUNNING, run_id, str(pipeline.installation_id))
        pipe.sadd(DIRTY, run_id)
        await pipe.execute()

    async def _started(
        self, api: RepoAPI, pipeline: Pipeline, run: PipelineRun, view: RunView
    ) -> None:
        """🚀, in progress and the progress comment, all at once."""
        target: ReactionTarget = "issue"
        target_id = run.thread
        if run.comment_id is not None and run.comment_kind is not None:
            target, target_id = run.comment_kind, run.comment_id
        title, summary = runview.check_running(view, pipeline.branch, datetime.now(UTC))
        body = runview.progress_running(view, pipeline.branch, self._check_url(pipeline, run))

        async def rocket() -> None:
            if target_id:  # a run asked from the dashboard with no thread has nothing to mark
                await api.react(target, target_id, "rocket")

        await _all(
            self._once(
                pipeline, run, "first:check", Priority.FIRST,
                lambda: self._edit_check(
                    api, pipeline, run, view, title, summary, [STOP_ACTION], None, Priority.FIRST
                ),
            ),
            self._once(
                pipeline, run, "first:react", Priority.FIRST,
                rocket,
            ),
            self._once(
                pipeline, run, "first:progress", Priority.FIRST,
                lambda: self._edit_progress(api, pipeline, run, body, Priority.FIRST),
            ),
        )  # fmt: skip
        await self._mark_sent(run.run_id)

    async def _finished(
        self,
        api: RepoAPI,
        speak: bool,
        pipeline: Pipeline,
        run: PipelineRun,
        view: RunView,
        event: RunFinished,
    ) -> None:
        if speak:
            await self._final_word(api, pipeline, run, view, event)
        else:
            await self._end_check_anyway(api, pipeline, run, view, event)
        await self._save(view)
        # Recorded last: a failure above leaves the event unacknowledged, to be tried again.
        await self.services.pipelines.finish(event)
        await self._refresh_preview(api, pipeline, event)
        pipe = self.redis.pipeline(transaction=False)
        pipe.srem(DIRTY, run.run_id)
        pipe.hdel(RUNNING, run.run_id)
        await pipe.execute()

    async def _final_word(
        self, api: RepoAPI, pipeline: Pipeline, run: PipelineRun, view: RunView, event: RunFinished
    ) -> None:
        if event.commits and pipeline.kind in OPENS_PULLS:
            await self._ensure_pull(api, pipeline, view, Priority.FINAL, final=True)
        pull = await self._pull_number(pipeline)
        problem = await hget(self.redis, STEPS_PREFIX + run.run_id, PULL_PROBLEM) or ""
        title, summary = runview.check_finished(view, pipeline.branch, run.mode)
        check_url = self._check_url(pipeline, run)
        body = runview.progress_finished(view, pipeline.branch, check_url, pull, problem, run.mode)
        steps = [
            self._once(
                pipeline, run, "final:check", Priority.FINAL,
                lambda: self._edit_check(
                    api, pipeline, run, view, title, summary, [RETRY_ACTION],
                    runview.conclusion_of(event, run.mode), Priority.FINAL,
                ),
            ),
            self._once(
                pipeline, run, "final:progress", Priority.FINAL,
                lambda: self._edit_progress(api, pipeline, run, body, Priority.FINAL),
            ),
        ]  # fmt: skip
        answered = event.outcome is Outcome.SUCCESS or event.plan.strip()
        if run.mode == "discover" and answered and run.thread:  # thread 0: the dashboard's
            plan = runview.plan_comment(view, pipeline, run, check_url)
            steps.append(
                self._once(
                    pipeline, run, "final:plan", Priority.FINAL,
                    lambda: api.comment(run.thread, plan),
                )
            )  # fmt: skip
        if pull is not None and pipeline.kind in OPENS_PULLS:
            run.status, run.started = "finished", True
            run.outcome, run.commits = event.outcome, list(event.commits)
            pull_body = runview.pull_body(pipeline, closes=pipeline.kind == "issue")
            steps.append(
                self._once(
                    pipeline, run, "final:pull-body", Priority.FINAL,
                    lambda: api.update_pull_body(pull, pull_body),
                )
            )  # fmt: skip
        await _all(*steps)

    async def _end_check_anyway(
        self, api: RepoAPI, pipeline: Pipeline, run: PipelineRun, view: RunView, event: RunFinished
    ) -> None:
        """The run's thread is gone, but its check run lives on the commit: end it, best
        effort, so it does not show as running for ever."""
        title, summary = runview.check_finished(view, pipeline.branch, run.mode)
        try:
            await self._once(
                pipeline, run, "final:check", Priority.FINAL,
                lambda: self._edit_check(
                    api, pipeline, run, view, title, summary, [],
                    runview.conclusion_of(event, run.mode), Priority.FINAL,
                ),
            )  # fmt: skip
        except OverBudget:
            raise
        except Exception as exc:
            log.warning("run %s: its check run could not be ended: %s", run.run_id, describe(exc))

    async def _refresh_preview(self, api: RepoAPI, pipeline: Pipeline, event: RunFinished) -> None:
        """New commits refresh the pipeline's preview (or start one, with `auto`); the run's
        report never waits on it."""
        try:
            await _timed(previews.after_run(self.services, api, pipeline, event))
        except Exception as exc:
            log.warning("run %s: its preview was not refreshed: %s", event.run_id, describe(exc))

    async def _start_next(self, api: RepoAPI, pipeline: Pipeline) -> None:
        started = await _timed(start_next(self.services, api, pipeline.id))
        if started is not None:
            latest = await self.services.pipelines.get(pipeline.id)
            if latest is not None:
                await self._unsure_if_unanswered(
                    started.run_id, show_queued(self.services, api, latest)
                )

    # --- writes that may land late --------------------------------------------------------

    async def _unsure_if_unanswered(self, run_id: str, write: Awaitable[T]) -> T:
        """`write` within 10 s; if GitHub did not answer, remember that it may still land."""
        try:
            return await _timed(write)
        except (TimeoutError, RequestError):
            await hset(self.redis, STEPS_PREFIX + run_id, {UNSURE_FLAG: str(time.time())})
            raise

    async def _wait_out_late_writes(self, run_id: str) -> None:
        """`LateWrites` while a write of the run that went unanswered may still land."""
        raw = await hget(self.redis, STEPS_PREFIX + run_id, UNSURE_FLAG)
        left = float(raw or 0) + LATE_WRITE_SECONDS - time.time()
        if left > 0:
            log.info("run %s: its last word waits %.0fs for a late write to land", run_id, left)
            raise LateWrites(left)

    # --- GitHub steps, within the budget, each at most once --------------------------------

    async def _spend(self, pipeline: Pipeline, priority: Priority) -> None:
        if not await self.budget.take(pipeline.installation_id, priority):
            raise OverBudget(f"installation {pipeline.installation_id}")

    async def _once(
        self,
        pipeline: Pipeline,
        run: PipelineRun,
        step: str,
        priority: Priority,
        make: Callable[[], Awaitable[object]],
    ) -> None:
        """The write `make` unless done for this run already, within budget and 10 s."""
        key = STEPS_PREFIX + run.run_id
        if await hget(self.redis, key, step) is not None:
            return
        await self._spend(pipeline, priority)
        await self._unsure_if_unanswered(run.run_id, make())
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, step, "1")
        pipe.expire(key, VIEW_TTL_SECONDS)
        await pipe.execute()

    async def _edit_progress(
        self, api: RepoAPI, pipeline: Pipeline, run: PipelineRun, body: str, priority: Priority
    ) -> None:
        """Edit the progress comment; when it was deleted, post a new one."""
        if run.progress_comment_id is None:
            return
        try:
            await api.update_comment(run.progress_comment_id, body)
            return
        except RequestFailed as exc:
            if exc.response.status_code != 404:
                raise
            if await _timed(api.comment_exists(run.progress_comment_id)):
                raise Unsettled(
                    f"progress comment {run.progress_comment_id}: 404, yet there"
                ) from exc
        log.info("run %s: the progress comment was deleted; posting a new one", run.run_id)
        await self._spend(pipeline, priority)
        comment_id = await _timed(api.comment(run.thread, body))
        await self.services.pipelines.attach(run.run_id, progress_comment_id=comment_id)
        run.progress_comment_id = comment_id

    async def _edit_check(
        self,
        api: RepoAPI,
        pipeline: Pipeline,
        run: PipelineRun,
        view: RunView,
        title: str,
        summary: str,
        actions: list[CheckAction],
        conclusion: runview.CheckConclusion | None,
        priority: Priority,
    ) -> None:
        """Update the check run; make a new one when it is gone, carry on without if refused."""
        key = STEPS_PREFIX + run.run_id
        if run.check_run_id is None or await hget(self.redis, key, CHECK_OFF_FLAG) is not None:
            return
        try:
            await api.update_check_run(
                run.check_run_id, title=title, summary=summary, actions=actions,
                conclusion=conclusion,
            )  # fmt: skip
            return
        except RequestFailed as exc:
            if is_transient(exc):
                raise
            gone = exc.response.status_code == 404
            detail = failure_detail(exc)
            if gone and await _timed(api.check_run_exists(run.check_run_id)):
                raise Unsettled(f"check run {run.check_run_id}: 404, yet there") from exc
        sha = view.head_sha or view.base_sha
        if gone and sha is not None:
            log.info("run %s: check run %s is gone; making a new one", run.run_id, run.check_run_id)
            await self._spend(pipeline, priority)
            try:
                check_id = await _timed(
                    api.create_check_run(
                        name=CHECK_NAME, head_sha=sha, external_id=run.run_id,
                        title=title, summary=summary, actions=actions,
                    )
                )  # fmt: skip
            except RequestFailed as again:
                if is_transient(again):
                    raise
                detail = failure_detail(again)
            else:
                await self.services.pipelines.attach(run.run_id, check_run_id=check_id)
                run.check_run_id = check_id
                await self._spend(pipeline, priority)
                await _timed(
                    api.update_check_run(
                        check_id, title=title, summary=summary, actions=actions,
                        conclusion=conclusion,
                    )
                )  # fmt: skip
                return
        # Refused (no `checks: write` any more) or nothing to hang it on: comments carry on.
        log.warning("run %s: no check run from now on (%s)", run.run_id, detail)
        await hset(self.redis, key, {CHECK_OFF_FLAG: detail})

    async def _ensure_pull(
        self, api: RepoAPI, pipeline: Pipeline, view: RunView, priority: Priority, final: bool
    ) -> None:
        """An issue's (or the dashboard's) pipeline's first commits get a pull request to the
        base branch.

        When GitHub will not open it (one exists that cannot be found, no diff, the base
        branch deleted), the reason is kept for the progress comment, and nothing waits.
        """
        if await self._pull_number(pipeline) is not None:
            return
        key = STEPS_PREFIX + view.run_id
        if not final and await hget(self.redis, key, PULL_PROBLEM) is not None:
            return  # said already; tried once more with the last word
        number = await _timed(api.open_pull_for(pipeline.branch))
        if number is None:
            issue_title = (
                await _timed(api.issue_title(pipeline.number))
                if pipeline.number
                else pipeline.title
            )
            await self._spend(pipeline, priority)
            try:
                number = await _timed(
                    api.create_pull(
                        head=pipeline.branch,
                        base=pipeline.base_branch,
                        title=runview.pull_title(issue_title),
                        body=runview.pull_body(pipeline, closes=pipeline.kind == "issue"),
                    )
                )
                log.info("opened pull request #%d for %s", number, pipeline.id)
            except RequestFailed as exc:
                if is_transient(exc):
                    raise
                number = await _timed(api.open_pull_for(pipeline.branch))  # opened meanwhile?
                if number is None:
                    problem = pull_problem(exc)
                    log.warning("%s: no pull request: %s", pipeline.id, failure_detail(exc))
                    await hset(self.redis, key, {PULL_PROBLEM: problem})
                    return
        await hset(self.redis, PULL_OF_PIPELINE, {pipeline.id: str(number)})
        await hdel(self.redis, key, PULL_PROBLEM)

    async def _pull_number(self, pipeline: Pipeline) -> int | None:
        return await pull_of_pipeline(self.redis, pipeline)

    # --- live check-run updates, merged and paced ------------------------------------------

    async def flush_due(self, wait: bool = True) -> None:
        """Send the live summaries the write budget lets through now (see `budget.due_live`)."""
        running = await hgetall(self.redis, RUNNING)
        dirty = await smembers(self.redis, DIRTY)
        by_installation: dict[int, list[str]] = {}
        for run_id, owner in running.items():
            by_installation.setdefault(int(owner), []).append(run_id)
        started: list[asyncio.Task[None]] = []
        for installation, run_ids in by_installation.items():
            sent = await self.redis.mget([f"{VIEW_PREFIX}{run_id}:sent" for run_id in run_ids])
            runs = [
                LiveRun(run_id=run_id, changed=run_id in dirty, last_sent=float(last or 0))
                for run_id, last in zip(run_ids, sent, strict=True)
            ]
            usage = await self.budget.usage(installation)
            for run_id in due_live(runs, usage, self.budget.limits, self.budget.clock()):
                if run_id not in self._busy:
                    started.append(self._start(run_id, self._live(run_id)))
        if wait and started:
            await asyncio.gather(*started)

    async def _live(self, run_id: str) -> None:
        async with self._slots, self._run_lock(run_id) as mine:
            if not mine:
                return  # another process reports the run now; a later update merges this
            try:
                await self._live_update(run_id)
            except OverBudget:
                pass  # merged into a later update
            except Exception as exc:
                kind = classify(exc)
                log.warning("run %s: live update failed (%s)", run_id, describe(exc))
                if kind != "transient":
                    await hdel(self.redis, RUNNING, run_id)

    async def _live_update(self, run_id: str) -> None:
        located = await self.services.pipelines.get_run(run_id)
        view = await self._load(run_id)
        flags = await hgetall(self.redis, STEPS_PREFIX + run_id)
        if (
            located is None
            or located[1].status == "finished"
            or view is None
            or view.finished is not None
            or GONE_FLAG in flags
            or CHECK_OFF_FLAG in flags
            or located[1].check_run_id is None
        ):
            await hdel(self.redis, RUNNING, run_id)
            await srem(self.redis, DIRTY, run_id)
            return
        pipeline, run = located
        await self._spend(pipeline, Priority.LIVE)
        await srem(self.redis, DIRTY, run_id)  # news from now on makes it dirty again
        await self._mark_sent(run_id)
        api = await self.services.github.repo(pipeline.installation_id, pipeline.repo)
        title, summary = runview.check_running(view, pipeline.branch, datetime.now(UTC))
        await self._unsure_if_unanswered(
            run_id,
            self._edit_check(
                api, pipeline, run, view, title, summary, [STOP_ACTION], None, Priority.LIVE
            ),
        )

    @contextlib.asynccontextmanager
    async def _run_lock(self, run_id: str) -> AsyncIterator[bool]:
        """Whether this process got `run_id` to itself (across App processes)."""
        lock = self.redis.lock(RUN_LOCK_PREFIX + run_id, timeout=RUN_LOCK_SECONDS)
        if not await lock.acquire(blocking=False):
            yield False
            return
        try:
            yield True
        finally:
            with contextlib.suppress(LockError):  # expired meanwhile: nothing to release
                await lock.release()

    async def _mark_sent(self, run_id: str) -> None:
        await self.redis.set(
            f"{VIEW_PREFIX}{run_id}:sent", self.budget.clock(), ex=VIEW_TTL_SECONDS
        )

    # --- storage --------------------------------------------------------------------

    async def _load(self, run_id: str) -> RunView | None:
        raw = await self.redis.get(VIEW_PREFIX + run_id)
        return RunView.model_validate_json(raw) if raw is not None else None

    async def _save(self, view: RunView) -> None:
        # The run page shows its tokens and cost for as long as its log stays.
        keep = max(VIEW_TTL_SECONDS, self.services.settings.log_retention_days * 24 * 3600)
        await self.redis.set(VIEW_PREFIX + view.run_id, view.model_dump_json(), ex=keep)

    @staticmethod
    def _check_url(pipeline: Pipeline, run: PipelineRun) -> str:
        if run.check_run_id is None:
            return ""
        return f"{runview.html_url(pipeline.clone_url)}/runs/{run.check_run_id}"


async def _timed(call: Awaitable[T]) -> T:
    """`call`, or TimeoutError when GitHub takes longer than `CALL_TIMEOUT_SECONDS`."""
    return await asyncio.wait_for(call, CALL_TIMEOUT_SECONDS)


async def _all(*steps: Awaitable[None]) -> None:
    """Run independent steps at once; all finish, then the first failure is raised."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value
