"""The reporter: run events from Redis become check runs, comments and pull requests.

It reads the stream every runner writes to (`trimo:run-events`) as a consumer
group, so several App processes share the work and an event is acknowledged
only after GitHub accepted what it caused: when the App restarts or GitHub
errs, the event is read again. In-progress check-run updates are throttled to
one every few seconds per run; a run's first and last word go out at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any, Final

import redis.asyncio as aioredis
from githubkit.exception import GitHubException

from app import runview
from app.github import RepoAPI
from app.handlers.context import Services
from app.handlers.runs import RETRY_ACTION, STOP_ACTION, show_queued, start_next
from app.pipelines import Pipeline, PipelineRun
from app.runview import RunView
from runner import keys
from runner.job import RunEvent, RunFinished, RunStarted, run_event_adapter

log = logging.getLogger("trimo.reporter")

GROUP: Final = "trimo-reporter"
VIEW_PREFIX: Final = "trimo:report:view:"
DIRTY: Final = "trimo:report:dirty"
PULL_OF_PIPELINE: Final = "trimo:pull-of-pipeline"
VIEW_TTL_SECONDS: Final = 14 * 24 * 3600
THROTTLE_SECONDS: Final = 3.0
CLAIM_IDLE_MS: Final = 60_000


class Reporter:
    """One consumer of the run-event stream."""

    def __init__(self, services: Services, consumer: str, throttle: float = THROTTLE_SECONDS):
        self.services = services
        self.redis: aioredis.Redis = services.redis
        self.consumer = consumer
        self.throttle = throttle
        self._backoff = 1.0

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(keys.ALL_RUN_EVENTS, GROUP, id="0", mkstream=True)
        except aioredis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self, stop: asyncio.Event) -> None:
        """Report until `stop` is set; GitHub or Redis trouble only delays, never drops."""
        group_ready = False
        while not stop.is_set():
            try:
                if not group_ready:
                    await self.ensure_group()
                    group_ready = True
                await self.step(block_ms=1000)
                await self.flush_due()
                self._backoff = 1.0
            except (GitHubException, aioredis.RedisError, OSError) as exc:
                log.warning("reporting paused for %.0fs: %s", self._backoff, exc)
                await _sleep_or_stop(stop, self._backoff)
                self._backoff = min(self._backoff * 2, 60.0)

    async def step(self, block_ms: int = 0) -> int:
        """Handle this consumer's unacknowledged events, then new ones; how many were handled."""
        handled = await self._handle_entries(await self._read("0", block_ms=None))
        claimed = await self.redis.xautoclaim(
            keys.ALL_RUN_EVENTS, GROUP, self.consumer, CLAIM_IDLE_MS, "0-0", count=50
        )
        handled += await self._handle_entries(claimed[1])
        handled += await self._handle_entries(await self._read(">", block_ms=block_ms or None))
        return handled

    async def _read(self, start: str, block_ms: int | None) -> list[tuple[Any, dict[Any, Any]]]:
        reply = await self.redis.xreadgroup(
            GROUP, self.consumer, {keys.ALL_RUN_EVENTS: start}, count=100, block=block_ms
        )
        return [entry for _stream, entries in reply or [] for entry in entries]

    async def _handle_entries(self, entries: list[tuple[Any, dict[Any, Any]]]) -> int:
        """In order; the first failure stops the batch, so a run's events never overtake."""
        for entry_id, fields in entries:
            if not fields:
                await self.redis.xack(keys.ALL_RUN_EVENTS, GROUP, entry_id)
                continue
            run_id = _text(fields.get(b"run_id") or fields.get("run_id"))
            raw = fields.get(b"event") or fields.get("event")
            try:
                event = run_event_adapter.validate_python(json.loads(raw or "null"))
            except ValueError:
                log.error("dropping a malformed event %s: %r", entry_id, raw)
                await self.redis.xack(keys.ALL_RUN_EVENTS, GROUP, entry_id)
                continue
            await self.handle(run_id, event)
            await self.redis.xack(keys.ALL_RUN_EVENTS, GROUP, entry_id)
        return len(entries)

    # --- one event ------------------------------------------------------------------

    async def handle(self, run_id: str, event: RunEvent) -> None:
        """Fold `event` into the run's view and tell GitHub what it needs to know now."""
        view = (await self._load(run_id) or RunView(run_id=run_id)).apply(event)
        located = await self.services.pipelines.get_run(run_id)
        if located is None:
            await self._save(view)  # a run the App did not start (local, or long forgotten)
            return
        pipeline, run = located
        api = await self.services.github.repo(pipeline.installation_id, pipeline.repo)
        if run.status == "finished":
            # Over already (reported, or stopped before it started): only make sure the
            # next run in line goes, in case an earlier attempt stopped short of that.
            if isinstance(event, RunFinished):
                await self._start_next(api, pipeline)
            return
        if isinstance(event, RunStarted):
            await self._started(api, pipeline, run, view, event)
        elif isinstance(event, RunFinished):
            await self._finished(api, pipeline, run, view, event)
            return
        elif event.type == "pushed" and pipeline.kind == "issue":
            await self._ensure_pull(api, pipeline, run, view)
        await self._save(view)
        await self._mark_dirty(run_id)

    async def _started(
        self, api: RepoAPI, pipeline: Pipeline, run: PipelineRun, view: RunView, event: RunStarted
    ) -> None:
        await self.services.pipelines.mark_running(
            run.run_id, runner=event.runner, started_at=event.at
        )
        if run.comment_id is not None and run.comment_kind is not None:
            await api.react(run.comment_kind, run.comment_id, "rocket")
        else:
            await api.react("issue", run.thread, "rocket")
        await self._update_check(api, pipeline, run, view)
        if run.progress_comment_id is not None:
            await api.update_comment(
                run.progress_comment_id,
                runview.progress_running(view, pipeline.branch, self._check_url(pipeline, run)),
            )

    async def _finished(
        self,
        api: RepoAPI,
        pipeline: Pipeline,
        run: PipelineRun,
        view: RunView,
        event: RunFinished,
    ) -> None:
        if event.commits and pipeline.kind == "issue":
            await self._ensure_pull(api, pipeline, run, view)
        if run.check_run_id is not None:
            title, summary = runview.check_finished(view, pipeline.branch)
            await api.update_check_run(
                run.check_run_id,
                title=title,
                summary=summary,
                actions=[RETRY_ACTION],
                conclusion=runview.conclusion_of(event),
            )
        pull = await self._pull_number(pipeline)
        if run.progress_comment_id is not None:
            await api.update_comment(
                run.progress_comment_id,
                runview.progress_finished(
                    view, pipeline.branch, self._check_url(pipeline, run), pull
                ),
            )
        if pull is not None and pipeline.kind == "issue":
            run.status, run.started = "finished", True
            run.outcome, run.commits = event.outcome, list(event.commits)
            await api.update_pull_body(pull, runview.pull_body(pipeline, closes=True))
        await self._save(view)
        # Recorded last: a failure above leaves the event unacknowledged, to be tried again.
        await self.services.pipelines.finish(event)
        await self.redis.srem(DIRTY, run.run_id)  # type: ignore[misc]
        await self._start_next(api, pipeline)

    async def _start_next(self, api: RepoAPI, pipeline: Pipeline) -> None:
        if await start_next(self.services, api, pipeline.id) is not None:
            latest = await self.services.pipelines.get(pipeline.id)
            if latest is not None:
                await show_queued(self.services, api, latest)

    async def _ensure_pull(
        self, api: RepoAPI, pipeline: Pipeline, run: PipelineRun, view: RunView
    ) -> None:
        """An issue pipeline's first commits get a pull request to the base branch."""
        if await self._pull_number(pipeline) is not None:
            return
        number = await api.open_pull_for(pipeline.branch)
        if number is None:
            issue_title = await self._issue_title(api, pipeline.number)
            number = await api.create_pull(
                head=pipeline.branch,
                base=pipeline.base_branch,
                title=runview.pull_title(issue_title),
                body=runview.pull_body(pipeline, closes=True),
            )
            log.info("opened pull request #%d for %s", number, pipeline.id)
        await self.redis.hset(PULL_OF_PIPELINE, pipeline.id, str(number))  # type: ignore[misc]

    async def _issue_title(self, api: RepoAPI, number: int) -> str:
        return await api.issue_title(number)

    async def _pull_number(self, pipeline: Pipeline) -> int | None:
        if pipeline.kind == "pull":
            return pipeline.number
        raw = await self.redis.hget(PULL_OF_PIPELINE, pipeline.id)  # type: ignore[misc]
        return int(raw) if raw is not None else None

    # --- throttled check-run updates ------------------------------------------------

    async def _mark_dirty(self, run_id: str) -> None:
        await self.redis.sadd(DIRTY, run_id)  # type: ignore[misc]

    async def flush_due(self) -> None:
        """Send the live summary of runs that changed, at most once per throttle period."""
        for raw in await self.redis.smembers(DIRTY):  # type: ignore[misc]
            run_id = _text(raw)
            view = await self._load(run_id)
            last = float(await self.redis.get(f"{VIEW_PREFIX}{run_id}:sent") or 0)
            if view is None:
                await self.redis.srem(DIRTY, run_id)  # type: ignore[misc]
                continue
            if time.time() - last < self.throttle:
                continue
            located = await self.services.pipelines.get_run(run_id)
            if located is None or located[1].status == "finished" or view.finished:
                await self.redis.srem(DIRTY, run_id)  # type: ignore[misc]
                continue
            pipeline, run = located
            api = await self.services.github.repo(pipeline.installation_id, pipeline.repo)
            await self._update_check(api, pipeline, run, view)
            await self.redis.srem(DIRTY, run_id)  # type: ignore[misc]

    async def _update_check(
        self, api: RepoAPI, pipeline: Pipeline, run: PipelineRun, view: RunView
    ) -> None:
        if run.check_run_id is None:
            return
        title, summary = runview.check_running(view, pipeline.branch, datetime.now(UTC))
        await api.update_check_run(
            run.check_run_id, title=title, summary=summary, actions=[STOP_ACTION]
        )
        await self.redis.set(f"{VIEW_PREFIX}{run.run_id}:sent", time.time(), ex=VIEW_TTL_SECONDS)

    # --- storage --------------------------------------------------------------------

    async def _load(self, run_id: str) -> RunView | None:
        raw = await self.redis.get(VIEW_PREFIX + run_id)
        return RunView.model_validate_json(raw) if raw is not None else None

    async def _save(self, view: RunView) -> None:
        await self.redis.set(VIEW_PREFIX + view.run_id, view.model_dump_json(), ex=VIEW_TTL_SECONDS)

    @staticmethod
    def _check_url(pipeline: Pipeline, run: PipelineRun) -> str:
        if run.check_run_id is None:
            return ""
        return f"{runview.html_url(pipeline.clone_url)}/runs/{run.check_run_id}"


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value
