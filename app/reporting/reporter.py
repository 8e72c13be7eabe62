"""The reporter: run events from Redis become check runs, comments and pull requests.

It reads the stream every runner writes to (`trimo:run-events`) as a consumer
group, so several App processes share the work, and fans each event out to the
channels in `app.reporting.channels`: check run, progress comment, pull request,
reactions. The channels are independent: one's failure never delays another.

- The check run goes with the run's events: runs are handled concurrently, a
  run's events in order, and an event is acknowledged once its check run (and
  Trimo's own bookkeeping) is done, or once the reporter gave up on it. Only the
  check run's own trouble holds a run's events back.
- The other channels each have a lane per run (`app.reporting.owed`): an event
  marks the channels it concerns owed, and each lane brings its channel up to
  the run's latest state on its own, retried on its own.

Failures, for an event and for a lane alike:

- GitHub busy or slow (5xx, timeouts, rate limits, no answer within 10 s): tried
  again with backoff, a bounded number of times.
- A report object gone: a deleted progress comment or check run is made again;
  a pull request GitHub will not open is explained in the progress comment.
- The thread, the installation or a permission gone (403, 404, 410): after a
  few tries that channel of the run (or, when the run itself cannot be reached,
  its whole GitHub output) is given up and logged; Trimo's own bookkeeping (the
  pipeline, the next run) goes on.
- Anything else, or trouble that outlasts its tries: the event (or the lane's
  update) is parked in the dead-letter stream `trimo:report:dead` with its
  error, counted on `/metrics`, and can be replayed.

Every write takes a unit of its installation's write budget (`app.reporting.budget`): a
run's first and last words go first; live check-run updates are merged (the
latest state wins) and paced by what the budget leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from datetime import UTC, datetime
from typing import Any, Final

import redis.asyncio as aioredis

from app.edge.events import VERIFY_EVENT
from app.github.client import RepoAPI
from app.redisio import ensure_group, hdel, held, hgetall, hset, settle, smembers, srem
from app.reporting import owed
from app.reporting.budget import LiveRun, Priority, WriteBudget, due_live
from app.reporting.channels.checkrun import CHECK_OFF_FLAG, CheckRun
from app.reporting.channels.comment import ProgressComment
from app.reporting.channels.pullrequest import PullRequest
from app.reporting.channels.reactions import Reactions
from app.reporting.channels.slack import Slack
from app.reporting.channels.steps import (
    GONE_FLAG,
    STEPS_PREFIX,
    VIEW_TTL_SECONDS,
    Channel,
    LateWrites,
    OverBudget,
    Steps,
    Target,
    all_of,
    classify,
    describe,
    off_flag,
    timed,
)
from app.reporting.runview import RunView
from app.runs import attempts, making, previews
from app.runs.pipelines import Pipeline, PipelineRun
from app.runs.service import show_queued, start_next
from app.services import Services
from runner import contract as keys
from runner import logs
from runner.job import Outcome, RunEvent, RunFinished, RunStarted, run_event_adapter

log = logging.getLogger("trimo.reporter")

GROUP: Final = "trimo-reporter"
VIEW_PREFIX: Final = "trimo:report:view:"
DIRTY: Final = "trimo:report:dirty"
"""Runs with news since their last live update."""
RUNNING: Final = "trimo:report:running"
"""Running runs → their installation, for live updates."""
TRIES: Final = "trimo:report:tries"
"""Stream entry → failed tries so far."""
DEAD_LETTERS: Final = "trimo:report:dead"
CLAIM_IDLE_MS: Final = 60_000
TRANSIENT_TRIES: Final = 10
GONE_TRIES: Final = 3
BUG_TRIES: Final = 3
MAX_BACKOFF_SECONDS: Final = 60.0
OVER_BUDGET_WAIT_SECONDS: Final = 2.0
CONCURRENCY: Final = 16
DEAD_LETTERS_MAXLEN: Final = 10_000
OWES: Final[dict[str, tuple[Channel, ...]]] = {
    "started": ("reactions", "comment"),
    "pushed": ("pull",),
    "finished": ("comment", "pull"),
}
"""The channels each event owes an update, beside the check run."""
RUN_LOCK_PREFIX: Final = "trimo:report:lock:"
"""Per run: held by the one App process reporting it now. The stream's entries of one run
may go to different consumers; the lock keeps them from reporting it at once (a `started`
landing after the `finished` would leave its check run in progress forever)."""
RUN_LOCK_SECONDS: Final = 10.0
"""Renewed while held: an App process killed (or cut from Redis) mid-report holds its run
back this long at most."""
RUN_LOCK_BUSY_SECONDS: Final = 0.5
"""How long a run another process is reporting waits before this one looks again."""
MAKING_WAIT_SECONDS: Final = 0.05
"""How long a run whose check run is being made waits before the reporter looks again."""
LANE_PASSES: Final = 3
"""A lane owed anew while it ran goes again at once, this many times in all (then it waits
for the next step, so that a run's stream of events cannot hold a slot for ever)."""
IDLE_BLOCK_MS: Final = 1000
"""How long a read of the stream waits for new events when no run waits its turn."""
BUSY_LOOK_SECONDS: Final = 0.05
"""How soon the events of a run being reported (that came meanwhile) are looked at again."""


class Reporter:
    """One consumer of the run-event stream."""

    def __init__(
        self, services: Services, consumer: str, budget: WriteBudget | None = None
    ) -> None:
        self.services = services
        self.redis: aioredis.Redis = services.redis
        self.consumer = consumer
        self.steps = Steps(self.redis, budget or WriteBudget(self.redis))
        self.check = CheckRun(services, self.steps)
        self.comment = ProgressComment(services, self.steps)
        self.pull = PullRequest(self.redis, self.steps)
        self.reactions = Reactions(self.steps)
        self.slack = Slack(services.settings, self.redis)
        self._busy: dict[str, asyncio.Task[None]] = {}
        self._held: dict[str, float] = {}
        self._next_block_ms = IDLE_BLOCK_MS
        """How long the next read waits for new events: shorter while a run waits its turn."""
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self.backoff = 1.0
        """The first wait after a failure, doubled on each further try."""

    @property
    def budget(self) -> WriteBudget:
        return self.steps.budget

    @budget.setter
    def budget(self, budget: WriteBudget) -> None:
        self.steps.budget = budget

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
                await self.step(block_ms=self._next_block_ms, wait=False)
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
        self._next_block_ms = IDLE_BLOCK_MS
        for run_id, items in by_run.items():
            if run_id in self._busy or self._held.get(run_id, 0.0) > now:
                # looked at again soon, not only when the next new event comes
                due_in = self._held.get(run_id, now + BUSY_LOOK_SECONDS) - now
                self._next_block_ms = min(self._next_block_ms, max(10, int(due_in * 1000)))
                continue
            started.append(self._start(run_id, self._report_run(run_id, items)))
            taken += len(items)
        for member in await owed.due(self.redis):
            if member not in self._busy:
                started.append(self._start(member, self._lane(member)))
                taken += 1
        if wait:
            while self._busy:  # and the lanes those runs owed meanwhile
                await asyncio.gather(*self._busy.values(), return_exceptions=True)
        return taken

    def _start(self, key: str, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """`work` on a run (`key` its id) or a lane (`<run>|<channel>`), one at a time."""
        task = asyncio.create_task(work)
        self._busy[key] = task
        task.add_done_callback(lambda _task: self._busy.pop(key, None))
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
            if await making.pending(self.redis, run_id):
                self._hold(run_id, MAKING_WAIT_SECONDS)  # its check run is on its way
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
        if kind != "gone":  # the check run's trouble holds no other channel
            await self._owe(run_id, *OWES.get(event.type, ()))
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

    async def _park(
        self, entry_id: str, run_id: str, raw: Any, error: str, channel: str = ""
    ) -> None:
        """Park an event (or, with `channel`, a channel's update of a run) for the operator."""
        await self.redis.xadd(
            DEAD_LETTERS,
            {
                "entry": entry_id,
                "run_id": run_id,
                "channel": channel,
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
        lane = owed.parse(f"{fields.get('run_id', '')}|{fields.get('channel', '')}")
        if lane is not None:  # a channel's update, not an event: that channel is owed again
            await owed.owe(self.redis, *lane)
        else:
            await self.redis.xadd(
                keys.ALL_RUN_EVENTS,
                {"run_id": fields.get("run_id", ""), "event": fields.get("event", "")},
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
        target = Target(api, pipeline, run, view)
        speak = await self.steps.flag(run_id, GONE_FLAG) is None
        if run.status == "finished":
            # Over already (reported, or stopped before it started): only make sure the
            # next run in line goes, in case an earlier attempt stopped short of that.
            if isinstance(event, RunFinished):
                await self._attempt_ended(api, pipeline, run)
                await self._start_next(api, pipeline)
                if not run.attempt:
                    await self._fix_if_failing(pipeline, run, event)
            return
        if speak:
            await self._save(view)  # what the other channels' lanes read
        if isinstance(event, RunFinished):
            await self._finished(target, speak, event)
            await self._attempt_ended(api, pipeline, run)  # a pick first: the next run builds on it
            await self._start_next(api, pipeline)
            return
        if isinstance(event, RunStarted):
            running = self.services.pipelines.mark_running(
                run.run_id, runner=event.runner, started_at=event.at
            )
            if not speak:
                await running
            else:  # "in progress" waits for no bookkeeping
                async with self._then_the_others(run_id, event):
                    await all_of(running, self._in_progress(target))
                await self._mark_sent(run_id)
        elif speak:
            await self._owe(run_id, *OWES.get(event.type, ()))
        if event.type == "push_refused":
            await self.redis.delete(f"{VIEW_PREFIX}{run_id}:sent")  # shown with the next update
        await self._save(view)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(RUNNING, run_id, str(pipeline.installation_id))
        pipe.sadd(DIRTY, run_id)
        await pipe.execute()

    async def _finished(self, t: Target, speak: bool, event: RunFinished) -> None:
        """The check run's end, then the pipeline's bookkeeping."""
        if speak:
            async with self._then_the_others(t.run.run_id, event):
                await self.steps.wait_out_late_writes(t.run.run_id, "check")
                await self.check.finished(t, event)
        else:
            await self.check.end_anyway(t, event)
        await self._save(t.view)
        # Recorded last: a failure above leaves the event unacknowledged, to be tried again.
        await self.services.pipelines.finish(event)
        if speak:
            self.slack.finished(t.pipeline, t.run, event)
        if not t.run.attempt:  # an attempt's commits are not the pipeline branch's
            await self._fix_if_failing(t.pipeline, t.run, event)
            await self._refresh_preview(t.api, t.pipeline, event)
        pipe = self.redis.pipeline(transaction=False)
        pipe.srem(DIRTY, t.run.run_id)
        pipe.hdel(RUNNING, t.run.run_id)
        await pipe.execute()

    async def _fix_if_failing(
        self, pipeline: Pipeline, run: PipelineRun, event: RunFinished
    ) -> None:
        """A run whose checks of `verify:` failed: the App worker decides on a fixing run
        (`VERIFY_EVENT`), queued once per run; the run's report never waits on it."""
        from app.edge.web import enqueue_delivery  # the edge's metrics import the reporter

        if event.verify is None or event.verify.passed or event.outcome is Outcome.CANCELLED:
            return
        if not run.settings.verify_fix_attempts:
            return  # the repository only reports (the worker reads its config again anyway)
        owner, _, name = pipeline.repo.partition("/")
        payload = {
            "action": "failed",
            "repository": {
                "name": name, "full_name": pipeline.repo, "owner": {"login": owner},
                "clone_url": pipeline.clone_url,
            },
            "installation": {"id": pipeline.installation_id},
            "sender": {"login": run.requested_by, "type": "User"},
            "run_id": event.run_id,
        }  # fmt: skip
        try:
            delivery_id = "vf" + hashlib.sha256(event.run_id.encode()).hexdigest()[:30]
            await timed(enqueue_delivery(self.services.redis, VERIFY_EVENT, delivery_id, payload))
        except Exception as exc:
            log.warning("run %s: no fixing run was asked for: %s", event.run_id, describe(exc))

    async def _refresh_preview(self, api: RepoAPI, pipeline: Pipeline, event: RunFinished) -> None:
        """New commits refresh the pipeline's preview (or start one, with `auto`); the run's
        report never waits on it."""
        try:
            await timed(previews.after_run(self.services, api, pipeline, event))
        except Exception as exc:
            log.warning("run %s: its preview was not refreshed: %s", event.run_id, describe(exc))

    async def _attempt_ended(self, api: RepoAPI, pipeline: Pipeline, run: PipelineRun) -> None:
        """An attempt's end shows in its set's table (ranked, and kept with `pick: auto`,
        once the last one has ended)."""
        if run.attempt:
            await attempts.attempt_ended(self.services, api, pipeline.id, run.run_id)

    async def _start_next(self, api: RepoAPI, pipeline: Pipeline) -> None:
        started = await timed(start_next(self.services, api, pipeline.id))
        if started is not None:
            latest = await self.services.pipelines.get(pipeline.id)
            if latest is not None:
                await self.steps.unsure_if_unanswered(
                    started.run_id, show_queued(self.services, api, latest), "check", "comment"
                )

    # --- the other channels, each in a lane of its own ------------------------------------

    @contextlib.asynccontextmanager
    async def _then_the_others(self, run_id: str, event: RunEvent) -> AsyncIterator[None]:
        """The check run's step first, then the other channels' lanes, whether the check run
        managed or not: its trouble is its own (it is retried with the event)."""
        try:
            yield
        finally:
            await self._owe(run_id, *OWES.get(event.type, ()))

    async def _owe(self, run_id: str, *channels: Channel) -> None:
        """The run owes `channels` an update: their lanes start now, beside this one."""
        for member in await owed.owe(self.redis, run_id, *channels):
            if member not in self._busy:
                self._start(member, self._lane(member))

    async def _lane(self, member: str) -> None:
        """Bring one channel of one run up to date; its failures are its own."""
        parsed = owed.parse(member)
        if parsed is None:
            await self.redis.zrem(owed.OWED, member)
            return
        run_id, channel = parsed
        async with self._slots, self._run_lock(member) as mine:
            if not mine:
                return  # another process has the lane; it stays owed
            for _ in range(LANE_PASSES):
                leased = await owed.lease(self.redis, member)
                if leased is None:
                    return  # done meanwhile
                with logs.log_context(run_id=run_id):
                    try:
                        await self._catch_up(run_id, channel)
                    except Exception as exc:
                        await self._lane_failed(member, leased, run_id, channel, exc)
                        return
                    released = await owed.release(self.redis, member, leased, None)
                    await owed.forget_tries(self.redis, member)
                if released != owed.OWED_ANEW:
                    return
                # Owed anew while it ran (the run's next event, say its end): once more now,
                # not at the next step.

    async def _catch_up(self, run_id: str, channel: Channel) -> None:
        located = await self.services.pipelines.get_run(run_id)
        view = await self._load(run_id)
        if located is None or view is None:
            return
        flags = await hgetall(self.redis, STEPS_PREFIX + run_id)
        if GONE_FLAG in flags or off_flag(channel) in flags:
            return
        pipeline, run = located
        logs.bind(pipeline=pipeline.id, repo=pipeline.repo)
        api = await self.services.github.repo(pipeline.installation_id, pipeline.repo)
        target = Target(api, pipeline, run, view)
        if channel == "comment":
            await self.comment.catch_up(target)
        elif channel == "reactions":
            await self.reactions.catch_up(target)
        elif await self.pull.catch_up(target):
            await self._owe(run_id, "comment")  # its last word names the pull request

    async def _lane_failed(
        self, member: str, leased: int, run_id: str, channel: Channel, exc: Exception
    ) -> None:
        if isinstance(exc, OverBudget | LateWrites):  # no try counted
            wait = exc.seconds if isinstance(exc, LateWrites) else OVER_BUDGET_WAIT_SECONDS
            await owed.release(self.redis, member, leased, wait)
            return
        kind = classify(exc)
        detail = describe(exc)
        tries = await owed.failed_try(self.redis, member)
        limit = {"transient": TRANSIENT_TRIES, "gone": GONE_TRIES, "bug": BUG_TRIES}[kind]
        if tries < limit:
            delay = min(MAX_BACKOFF_SECONDS, self.backoff * 2.0 ** (tries - 1))
            log.warning(
                "run %s: its %s failed (%s; try %d of %d), again in %.0fs",
                run_id, channel, detail, tries, limit, delay,
            )  # fmt: skip
            if kind == "bug":
                log.debug("run %s: the failure", run_id, exc_info=exc)
            await owed.release(self.redis, member, leased, delay)
            return
        if kind == "gone":
            log.warning("run %s: its %s given up: %s", run_id, channel, detail)
            await self.steps.set_flag(run_id, off_flag(channel), detail)
        else:
            log.error("run %s: its %s parked after %d tries: %s", run_id, channel, tries, detail)
            await self._park("", run_id, "", f"{channel}: {detail}", channel)
        await owed.release(self.redis, member, leased, None)
        await owed.forget_tries(self.redis, member)

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
        await self.steps.spend(pipeline, Priority.LIVE)
        await srem(self.redis, DIRTY, run_id)  # news from now on makes it dirty again
        await self._mark_sent(run_id)
        api = await self.services.github.repo(pipeline.installation_id, pipeline.repo)
        target = Target(api, pipeline, run, view)
        await self.check.live(target)
        await self._end_again_if_over(target)

    async def _in_progress(self, t: Target) -> None:
        await self.check.started(t)
        await self._end_again_if_over(t)

    async def _end_again_if_over(self, t: Target) -> None:
        """After an "in progress" write to the check run: if the run ended meanwhile, say its
        end again, last. A starved process's run lock can expire while its write is on the
        way, and another process then reports the end, which the write may land after (the
        end's view is saved before the end is sent, so it is seen here)."""
        after = await self._load(t.run.run_id)
        if after is not None and after.finished is not None:
            log.info("run %s: it ended while an update was on its way; its end again", t.run.run_id)
            await self.check.again(Target(t.api, t.pipeline, t.run, after), after.finished)

    @contextlib.asynccontextmanager
    async def _run_lock(self, run_id: str) -> AsyncIterator[bool]:
        """Whether this process got `run_id` to itself (across App processes)."""
        async with held(self.redis, RUN_LOCK_PREFIX + run_id, RUN_LOCK_SECONDS) as mine:
            yield mine

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


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value
