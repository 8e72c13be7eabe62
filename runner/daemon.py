"""`trimo runner`: an arq worker that executes queued runs on this machine.

One arq worker per label (queue `trimo:runs:<label>`) shares one limit of runs
at a time. The daemon announces itself with a heartbeat, publishes every run's
events, removes what a killed earlier process left on the host and saves the work of its
runs, marks runs of vanished runners failed, gc-s its mirrors, and drains on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import signal
import socket
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import docker.errors
import redis
import redis.asyncio as aioredis
from arq.worker import Worker, func
from pydantic import SecretStr

from runner import (
    __version__,
    contract,
    descriptors,
    figures,
    images,
    leftovers,
    logs,
    mirrors,
    pipelinedir,
    redisurl,
    registry,
    sdnotify,
    stopping,
    warm,
)
from runner.disk import parse_size
from runner.engine import RunEngine, StopSignal
from runner.errors import TrimoError
from runner.job import Outcome, RunEvent, RunFinished, RunRequest, RunStarted
from runner.keptstore import KeptStore
from runner.network import egress, firewall
from runner.policy import RunnerPolicy, refusal
from runner.previews import manager, sandbox
from runner.previews.job import PreviewRequest, PreviewStopped
from runner.previews.links import Links
from runner.previews.manager import Limits, PreviewManager
from runner.previews.proxy import PreviewProxy, ProxyLimits
from runner.previews.routes import Routes
from runner.publisher import EventPublisher
from runner.redisio import settle
from runner.settings import RunnerSettings

log = logging.getLogger("trimo.runner")

REAP_INTERVAL_SECONDS = 10.0
TAKE_RETRY_SECONDS = 1.0
TAKE_SAY_SECONDS = 30.0
PICKUPS = 10
"""How often a run's job may be picked up (again after its runner died holding it; a run
already taken is not run again: registry.take)."""
SWEEP_INTERVAL_SECONDS = 3600.0
CLOSED_POLL_SECONDS = 30.0
IMAGES_SECONDS = 60.0
"""How often the runner looks at its images again for its heartbeat."""


TOKEN_FRESH_SECONDS = 40 * 60
"""A run's token (minted when it was queued, valid 60 min) older than this is renewed."""
TOKEN_WAIT_SECONDS = 30


async def execute_run(ctx: dict[str, Any], payload: dict[str, Any]) -> str:
    """The arq job: run one request. Returns the outcome."""
    daemon: RunnerDaemon = ctx["daemon"]
    return await daemon.run_job(payload, queued_at=ctx.get("enqueue_time"))


async def start_preview(ctx: dict[str, Any], payload: dict[str, Any]) -> str:
    """The arq job: start or refresh one pipeline's preview. Returns what happened."""
    daemon: RunnerDaemon = ctx["daemon"]
    return await daemon.preview_job(payload)


async def ask_for_token(
    redis: aioredis.Redis, run_id: str, wait: int = TOKEN_WAIT_SECONDS
) -> str | None:
    """A fresh token for `run_id` from the App (the runner never holds the App's key).

    The request goes on a Redis stream; the App's token desk answers on a per-run list.
    None when the App refused (the run is over, GitHub said no) or did not answer in time.
    """
    await redis.delete(contract.run_token(run_id))
    await redis.xadd(contract.TOKEN_REQUESTS, {"run_id": run_id}, maxlen=10_000)
    answer = None
    for _ in range(max(1, wait)):  # short waits: the client's socket timeout is 5 s
        answer = await settle(redis.blpop([contract.run_token(run_id)], timeout=1))
        if answer is not None:
            break
    if answer is None:
        return None
    token = answer[1].decode() if isinstance(answer[1], bytes) else str(answer[1])
    return token or None


class HoldingWorker(Worker):
    """arq's worker, holding each job it takes for registry.HOLD_SECONDS (not the job's
    whole timeout; the heartbeat renews the holds of the runs this process has), and never
    taking again a job of a run this process still has (its hold lapsed, say while Redis
    was away): arq would lose track of the first."""

    def __init__(self, held: Collection[str], **options: Any) -> None:
        super().__init__(**options)
        self.in_progress_timeout_s = registry.HOLD_SECONDS
        self._held = held

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        await super().start_jobs([job for job in job_ids if job.decode() not in self._held])


class RunnerDaemon:
    def __init__(self, settings: RunnerSettings, policy: RunnerPolicy | None = None) -> None:
        self.settings = settings
        logs.hide_settings(settings)
        self.policy = policy or RunnerPolicy()
        self.labels = [x.strip() for x in settings.runner_labels.split(",") if x.strip()]
        self.engine = RunEngine(
            settings.engine_config(settings.runner_id, keep_ledger=True),
            kept=KeptStore(
                redisurl.client(settings.redis_url, socket_timeout=30, socket_connect_timeout=3),
                parse_size(settings.kept_max),
            ),
        )
        self.publisher = EventPublisher(
            redisurl.client(settings.redis_url, socket_timeout=5, socket_connect_timeout=3),
            settings.cache_dir / "spool" / settings.runner_id,
            parse_size(settings.run_log_max),
        )
        self.redis = redisurl.async_client(
            settings.redis_url, socket_timeout=5, socket_connect_timeout=3
        )
        self.slots = asyncio.Semaphore(settings.runner_concurrency)
        self.run_threads = ThreadPoolExecutor(settings.runner_concurrency, thread_name_prefix="run")
        """A thread for each run that may go at once (asyncio's default executor has six on
        two cores, and other duties use it too: a seventh run waited for one to end)."""
        self.running: dict[str, StopSignal] = {}
        self.held: set[str] = set()
        """The runs this process took and has not ended: their jobs' holds are renewed."""
        self.started_at = registry.now()
        self.workers: list[Worker] = []
        self._draining = asyncio.Event()
        self.previews: PreviewManager | None = None
        self.proxy: PreviewProxy | None = None
        self.descriptors = descriptors.soft_limit()
        self.images: list[registry.ImageInfo] = []

    # -- jobs ---------------------------------------------------------------

    async def run_job(self, payload: dict[str, Any], queued_at: datetime | None = None) -> str:
        try:
            request = RunRequest.model_validate(payload)
        except ValueError as exc:
            run_id = str(payload.get("run_id", "unknown"))[:100]
            with logs.log_context(run_id=run_id):
                return self._finish_early(run_id, Outcome.ERROR, f"the job is malformed: {exc}")
        with logs.log_context(
            run_id=request.run_id, pipeline=request.pipeline, repo=request.repo.full_name
        ):
            return await self._run(request, queued_at)

    async def _run(self, request: RunRequest, queued_at: datetime | None) -> str:
        # Active from the moment it is taken, not from when its token is renewed or a slot
        # frees: if this process dies meanwhile, the other runners' reaper reports the run.
        # Killed before this, its hold on the job lapses (registry.HOLD_SECONDS) and another
        # runner takes the job; one that took it before is never run twice.
        self.held.add(request.run_id)  # its hold renewed from now on
        if not await self._take(request.run_id):
            self.held.discard(request.run_id)
            log.warning("run %s: a runner took it before; it is not run again", request.run_id)
            return "taken before"
        try:
            return await self._prepare_and_execute(request, queued_at)
        finally:
            self.held.discard(request.run_id)
            await self._quietly(registry.mark_done(self.redis, request.run_id))

    async def _take(self, run_id: str) -> bool:
        """Whether this runner has the run now. While Redis cannot say, the run waits: run
        without its mark, it could be run again elsewhere once its job's hold lapsed."""
        said = 0.0
        while True:
            try:
                return await registry.take(self.redis, run_id, self.settings.runner_id)
            except (redis.RedisError, OSError) as exc:
                if time.monotonic() - said > TAKE_SAY_SECONDS:
                    said = time.monotonic()
                    log.error("Redis is unreachable at %s: %s; run %s waits for it",
                              redisurl.display(self.settings.redis_url), exc, run_id)  # fmt: skip
            await asyncio.sleep(TAKE_RETRY_SECONDS)

    async def _prepare_and_execute(self, request: RunRequest, queued_at: datetime | None) -> str:
        waited = (registry.now() - queued_at).total_seconds() if queued_at else 0.0
        if request.token is not None and waited > TOKEN_FRESH_SECONDS:
            # Its token was minted when it was queued and may expire mid-run: renew it.
            token = await ask_for_token(self.redis, request.run_id, TOKEN_WAIT_SECONDS)
            if token is None:
                return self._finish_early(
                    request.run_id,
                    Outcome.ERROR,
                    f"the run waited {waited / 60:.0f} min for a runner and the App gave no "
                    "fresh token for it (is the App's worker running?)",
                )
            request = request.model_copy(update={"token": SecretStr(token)})
        # The agent's API keys are this machine's: the App never holds them.
        request = request.model_copy(
            update={"secrets": {**self.settings.secrets_for(request.agent), **request.secrets}}
        )
        if why := refusal(request, self.policy):
            return self._finish_early(
                request.run_id, Outcome.ERROR, f"refused by runner {self.settings.runner_id}: {why}"
            )
        async with self.slots:
            stop = StopSignal()
            self.running[request.run_id] = stop
            loop = asyncio.get_running_loop()
            taken = loop.time()
            log.info("run %s: %s agent on %s", request.run_id, request.agent, request.branch)
            agent_began: list[datetime] = []
            future = loop.run_in_executor(
                self.run_threads,
                contextvars.copy_context().run,
                self._execute,
                request,
                stop,
                agent_began,
            )
            finished: RunFinished | None = None
            try:
                finished = await asyncio.shield(future)
            except asyncio.CancelledError:
                stop.stop(
                    "stopped on request" if not self._draining.is_set() else "the runner shut down"
                )
                finished = await future
                raise
            finally:
                self.running.pop(request.run_id, None)
                if finished is not None:
                    await self._observe(finished, loop.time() - taken, queued_at, agent_began)
        elapsed = loop.time() - taken
        log.info("run %s ended: %s after %.0fs", request.run_id, finished.outcome.value, elapsed)
        return finished.outcome.value

    async def preview_job(self, payload: dict[str, Any]) -> str:
        try:
            request = PreviewRequest.model_validate(payload)
        except ValueError as exc:
            log.warning("a preview job is malformed: %s", exc)
            return "malformed"
        if self.previews is None:
            return "previews are off"
        with logs.log_context(pipeline=request.pipeline, repo=request.repo.full_name):
            return await self.previews.start(request)

    async def start_previews(self) -> None:
        """The preview proxy and manager, when TRIMO_RUNNER_PREVIEW_URL is set."""
        settings = self.settings
        routes = Routes()
        host = sandbox.Host.of_this_process(
            self.engine.client,
            settings.runner_id,
            settings.cache_dir,
            settings.agent_uid,
            settings.upstream(),
            parse_size(settings.disk),
            self.engine.setup_cache,
        )
        limits = Limits(
            max_previews=settings.runner_max_previews,
            max_lifetime_seconds=settings.runner_preview_max_hours * 3600,
        )
        links = Links.parse(settings.runner_preview_url)
        self.proxy = PreviewProxy(routes, links, ProxyLimits.for_descriptors(self.descriptors))
        await self.proxy.start(*settings.preview_listen())
        self.previews = PreviewManager(host, self.redis, links, routes, limits, self.policy)
        log.info(
            "previews served at %s (listening on %s, at most %d connections)",
            links.url("<token>"),
            settings.runner_preview_listen,
            self.proxy.limits.max_connections,
        )

    async def _observe(
        self,
        finished: RunFinished,
        duration: float,
        queued_at: datetime | None,
        agent_began: list[datetime],
    ) -> None:
        began = agent_began[0] if agent_began else None
        to_agent = (began - queued_at).total_seconds() if began and queued_at else None
        await self._quietly(
            figures.observe_run(
                self.redis,
                self.settings.runner_id,
                outcome=finished.outcome.value,
                duration=duration,
                time_to_agent=to_agent,
            )
        )
        await self.observe_setup()

    async def observe_setup(self) -> None:
        """What the setup cache did since the last report (runs and previews), and its size."""
        await self._quietly(self.engine.setup_cache.report(self.redis, self.settings.runner_id))

    def _execute(
        self, request: RunRequest, stop: StopSignal, agent_began: list[datetime]
    ) -> RunFinished:
        def on_event(event: RunEvent) -> None:
            if isinstance(event, RunStarted):
                agent_began.append(event.at)
            self.publisher.publish(request.run_id, event)

        finished = self.engine.execute(request, on_event, stop)
        self.publisher.flush(timeout=10)
        return finished

    def _finish_early(self, run_id: str, outcome: Outcome, reason: str) -> str:
        log.warning("run %s: %s", run_id, reason)
        self.publisher.publish(run_id, RunFinished(run_id=run_id, outcome=outcome, reason=reason))
        return outcome.value

    # -- background duties --------------------------------------------------

    def info(self) -> registry.RunnerInfo:
        return registry.RunnerInfo(
            id=self.settings.runner_id,
            host=socket.gethostname(),
            labels=self.labels,
            capacity=self.settings.runner_concurrency,
            running=sorted(self.running),
            version=__version__,
            pid=os.getpid(),
            started_at=self.started_at,
            seen_at=registry.now(),
            previews=self.settings.runner_max_previews if self.previews else 0,
            images=self.images,
            preview_url=self.settings.runner_preview_url if self.previews else "",
        )

    def agent_images(self) -> list[str]:
        """The images this runner runs agents from: those it allows, else the default."""
        allowed = self.policy.allowed_images
        return list(allowed) or sorted({contract.DEFAULT_IMAGE, self.settings.image})

    async def look_at_images(self) -> None:
        """What Docker has of this runner's images, for the heartbeat (`trimo doctor`); the
        sandboxes started ahead go when their image was rebuilt."""
        loop = asyncio.get_running_loop()
        try:
            self.images = await loop.run_in_executor(
                None, images.inventory, self.engine.client, self.agent_images()
            )
            await loop.run_in_executor(None, warm.trim_stale, self.engine.client)
        except (docker.errors.DockerException, TrimoError) as exc:
            log.warning("could not look at this runner's images: %s", exc)
            self.images = []

    async def watch_images(self) -> None:
        while True:
            await asyncio.sleep(IMAGES_SECONDS)
            await self.look_at_images()

    async def heartbeat(self) -> None:
        while True:
            await self._quietly(registry.announce(self.redis, self.info()))
            if self.held:
                await self._quietly(registry.renew_holds(self.redis, list(self.held)))
            await asyncio.sleep(registry.HEARTBEAT_SECONDS)

    async def hold_heartbeat(self) -> None:
        """Until this process's own heartbeat starts, keep a crashed predecessor's alive: the
        runs it left are saved and reported by this process (`recover`), and the other
        runners' reaper must not report them lost meanwhile. Nothing is announced: the
        heartbeat says what this process can do once it can."""
        while True:
            await self._quietly(registry.keep_alive(self.redis, self.settings.runner_id))
            await asyncio.sleep(registry.HEARTBEAT_SECONDS)

    async def reap(self) -> None:
        """Mark runs failed whose runner stopped answering."""
        while True:
            await asyncio.sleep(REAP_INTERVAL_SECONDS)
            with contextlib.suppress(redis.RedisError):
                for run_id, runner_id in await registry.orphaned_runs(self.redis):
                    if await registry.claim_orphan(self.redis, run_id):
                        self._finish_early(
                            run_id,
                            Outcome.ERROR,
                            f"runner {runner_id} {contract.RUNNER_LOST}",
                        )

    async def sweep(self) -> None:
        """Delete pipelines (workspace, home, disk) when the App closes them, and those unused
        for TRIMO_HOME_TTL_DAYS."""
        loop = asyncio.get_running_loop()
        last_ttl_sweep = 0.0
        while True:
            with contextlib.suppress(redis.RedisError, OSError):
                await self.remove_closed()
            if loop.time() - last_ttl_sweep >= SWEEP_INTERVAL_SECONDS:
                last_ttl_sweep = loop.time()
                try:
                    removed = await loop.run_in_executor(
                        None,
                        pipelinedir.sweep,
                        self.settings.cache_dir,
                        self.settings.home_ttl_days,
                    )
                    if removed:
                        log.info("removed %d pipeline(s) unused for a while", len(removed))
                except OSError as exc:
                    log.error("could not remove old pipelines: %s", exc)
            await asyncio.sleep(CLOSED_POLL_SECONDS)

    async def tend_mirrors(self) -> None:
        """Gc the mirrors that are due and report their size (`runner.mirrors`), now and every
        `mirrors.LOOK_SECONDS`."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                upkeep = await loop.run_in_executor(
                    None, mirrors.tend, self.engine.config.mirrors_dir, time.time()
                )
            except (OSError, TrimoError) as exc:
                log.error("could not look after the mirrors: %s", exc)
            else:
                if upkeep.collected or upkeep.failed:
                    log.info(
                        "mirrors: %d gc-ed, %d failed, %d busy; %d mirror(s), %d bytes",
                        upkeep.collected, upkeep.failed, upkeep.busy, upkeep.mirrors, upkeep.bytes,
                    )  # fmt: skip
                await self._quietly(
                    figures.observe_mirrors(
                        self.redis,
                        self.settings.runner_id,
                        mirrors=upkeep.mirrors,
                        size=upkeep.bytes,
                        collected=upkeep.collected,
                        failed=upkeep.failed,
                    )
                )
            await asyncio.sleep(mirrors.LOOK_SECONDS)

    async def remove_closed(self) -> None:
        """Delete this runner's copies of pipelines the App closed since the last look."""
        cursor_file = self.settings.cache_dir / "closed-pipelines.cursor"
        cursor = cursor_file.read_text().strip() if cursor_file.exists() else "0-0"
        answer = await self.redis.xread({contract.CLOSED_PIPELINES: cursor}, count=500)
        loop = asyncio.get_running_loop()
        for _stream, entries in answer or []:
            for entry_id, fields in entries:
                clone_url = fields.get(b"clone_url", b"").decode(errors="replace")
                name = fields.get(b"pipeline", b"").decode(errors="replace")
                if clone_url and contract.is_valid_id(name):
                    pipeline = pipelinedir.PipelineDir.of(self.settings.cache_dir, clone_url, name)
                    await loop.run_in_executor(None, pipelinedir.remove_when_idle, pipeline)
                cursor = entry_id.decode()
        cursor_file.parent.mkdir(parents=True, exist_ok=True)
        cursor_file.write_text(cursor)

    async def _quietly(self, call: Any) -> None:
        try:
            await call
        except (redis.RedisError, OSError) as exc:
            log.error(
                "Redis is unreachable at %s: %s", redisurl.display(self.settings.redis_url), exc
            )

    # -- lifecycle ----------------------------------------------------------

    async def clear_leftovers(self) -> leftovers.Cleared | None:
        """Remove what a killed process of this runner left on the host (containers,
        networks, mounted disks, preview checkouts) and tell the App its previews stopped.
        Nothing is touched while another live process answers to this runner's id."""
        runner_id = self.settings.runner_id
        try:
            namesake = await registry.live_namesake(
                self.redis, runner_id, socket.gethostname(), os.getpid()
            )
        except (redis.RedisError, OSError) as exc:
            log.error("leftovers stay: Redis cannot say whether runner %s is running (%s)",
                      runner_id, exc)  # fmt: skip
            return None
        if namesake is not None:
            log.error(
                "another process runs as runner %s (pid %d on %s): its containers, networks "
                "and disks are left alone; give each runner its own TRIMO_RUNNER_ID",
                runner_id,
                namesake.pid,
                namesake.host,
            )
            return None
        loop = asyncio.get_running_loop()
        try:
            cleared = await loop.run_in_executor(
                None, leftovers.clear, self.engine.client, runner_id, self.settings.cache_dir
            )
            await loop.run_in_executor(None, self.engine.setup_cache.store.clear_leftovers)
        except (docker.errors.DockerException, TrimoError, OSError) as exc:
            log.error("could not remove what an earlier process left: %s", exc)
            return None
        if cleared:
            log.warning(
                "removed what an earlier process left: %d container(s), %d network(s), "
                "%d mounted disk(s), %d preview checkout(s)",
                cleared.containers,
                cleared.networks,
                cleared.unmounted,
                cleared.checkouts,
            )
        for preview_id, pipeline in cleared.previews:
            stopped = PreviewStopped(
                preview_id=preview_id, pipeline=pipeline, runner=runner_id, reason="shutdown"
            )
            await manager.publish(self.redis, stopped)
        return cleared

    def recover(self) -> list[RunFinished]:
        """Runs an earlier process of this runner left behind: save, report, clean up."""
        recovered = self.engine.recover_abandoned(
            lambda event: self.publisher.publish(getattr(event, "run_id", "unknown"), event)
        )
        for finished in recovered:
            log.warning("saved the work of abandoned run %s", finished.run_id)
        self.publisher.flush(timeout=5)
        return recovered

    def make_worker(self, label: str) -> Worker:
        return HoldingWorker(
            self.held,
            functions=[func(execute_run, name=contract.RUN_FUNCTION, max_tries=PICKUPS)],
            queue_name=contract.run_queue(label),
            redis_settings=redisurl.redis_settings(self.settings.redis_url),
            ctx={"daemon": self},
            max_jobs=self.settings.runner_concurrency,
            job_timeout=25 * 3600,
            poll_delay=0.1,
            allow_abort_jobs=True,
            retry_jobs=False,
            handle_signals=False,
            keep_result=3600,
        )

    def make_preview_worker(self, label: str) -> Worker:
        return Worker(
            functions=[func(start_preview, name=contract.PREVIEW_FUNCTION, max_tries=1)],
            queue_name=contract.preview_queue(label),
            redis_settings=redisurl.redis_settings(self.settings.redis_url),
            ctx={"daemon": self},
            max_jobs=2,
            job_timeout=3600,
            poll_delay=0.05,
            retry_jobs=False,
            handle_signals=False,
            keep_result=600,
        )

    @property
    def warm_count(self) -> int:
        """How many sandboxes this runner keeps started ahead."""
        count = self.settings.runner_warm
        return self.settings.runner_concurrency if count is None else count

    def request_stop(self) -> None:
        """Begin draining (what SIGTERM does)."""
        self._draining.set()

    async def serve(self, handle_signals: bool = True) -> None:
        """Run until SIGTERM/SIGINT (or `request_stop`), then drain."""
        self.descriptors = descriptors.raise_to_hard()
        log.info("open-file limit: %d", self.descriptors)
        holding = asyncio.create_task(self.hold_heartbeat(), name="hold_heartbeat")
        await self.clear_leftovers()
        rules = asyncio.get_running_loop().run_in_executor(None, self.put_rules_in_place)
        egress.keep_spare(self.settings.runner_concurrency)  # a network ready for each run
        warm.keep(self.warm_count, self.settings.cache_dir, self.settings.runner_id)
        await asyncio.get_running_loop().run_in_executor(None, self.recover)
        self.workers = [self.make_worker(label) for label in self.labels]
        if self.settings.runner_preview_url:
            await self.start_previews()
            self.workers += [self.make_preview_worker(label) for label in self.labels]
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        await self.look_at_images()
        duties = [
            asyncio.create_task(self.heartbeat(), name="heartbeat"),
            asyncio.create_task(self.watch_images(), name="watch_images"),
            asyncio.create_task(self.reap(), name="reap"),
            asyncio.create_task(self.sweep(), name="sweep"),
            asyncio.create_task(self.tend_mirrors(), name="tend_mirrors"),
            *(
                asyncio.create_task(self._keep_working(w), name=f"worker {w.queue_name}")
                for w in self.workers
            ),
            *(
                [asyncio.create_task(self.previews.keep_sweeping(), name="preview sweep")]
                if self.previews
                else []
            ),
        ]
        await stopping.stop_tasks([holding])
        log.info(
            "runner %s ready: labels %s, %d at a time",
            self.settings.runner_id,
            ",".join(self.labels),
            self.settings.runner_concurrency,
        )
        await self._draining.wait()
        await self.drain(self.settings.drain_seconds)
        await rules
        await stopping.stop_tasks(duties)
        if self.previews is not None and self.proxy is not None:
            await self.previews.close()
            await self.proxy.close()
        for worker in self.workers:
            await stopping.close_worker(worker, stopping.WRAP_UP_SECONDS)
        await self._quietly(registry.withdraw(self.redis, self.settings.runner_id))
        await self.close_network()
        self.run_threads.shutdown(wait=False)
        self.publisher.close()
        await self.redis.aclose()

    def put_rules_in_place(self) -> None:
        """This runner's host rules, in place from its start (its first network would wait
        for them anyway)."""
        try:
            firewall.ensure(self.engine.client, self.settings.runner_id)
        except (docker.errors.DockerException, TrimoError) as exc:
            log.error("could not put this runner's host rules in place (its runs with a "
                      "network fail until they are): %s", exc)  # fmt: skip

    async def close_network(self) -> None:
        """Remove this runner's egress proxy, networks and host rules (runner.leftovers)."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, warm.close)
            await loop.run_in_executor(None, egress.close)
            await loop.run_in_executor(
                None, leftovers.close, self.engine.client, self.settings.runner_id
            )
        except (docker.errors.DockerException, TrimoError, OSError) as exc:
            log.error("could not remove this runner's networks and host rules: %s", exc)

    async def _keep_working(self, worker: Worker) -> None:
        """arq's loop, restarted when Redis goes away and comes back."""
        while not self._draining.is_set():
            try:
                await worker.main()
            except (redis.RedisError, OSError) as exc:
                log.error("Redis is unreachable (%s); retrying in 2 s. Running agents go on.", exc)
                await asyncio.sleep(2)

    async def drain(self, grace_seconds: float) -> None:
        """Take no new jobs; let running ones finish, then stop and save them."""
        log.info("draining: %d run(s) in progress", len(self.running))
        sdnotify.extend_stop(grace_seconds)
        for worker in self.workers:
            worker.allow_pick_jobs = False
        deadline = asyncio.get_running_loop().time() + grace_seconds
        while self.running and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
        for stop in list(self.running.values()):
            stop.stop("the runner shut down")
        while self.running:
            await asyncio.sleep(0.2)
