"""Running the App's parts in one process: web edge, event worker, reporter (and a runner).

`trimo serve` runs the first three, `trimo worker` the last two (with an endpoint of its own
for /healthz and /metrics), and `trimo up` all of them plus a runner, with a private Redis
when none is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import redis
import uvicorn
from arq import create_pool
from arq.worker import Worker
from starlette.applications import Starlette

from app.edge.web import create_app
from app.ops.worker import build_services, create_worker
from app.ops.workerweb import create_worker_app
from app.reporting.previewreport import PreviewReporter
from app.reporting.reporter import Reporter
from app.runs.tokens import TokenDesk
from app.settings import AppSettings, SettingsError
from runner import __version__, contract, logs
from runner.daemon import RunnerDaemon
from runner.errors import TrimoError
from runner.redisurl import redis_settings
from runner.settings import RunnerSettings
from runner.stopping import stop_tasks

log = logging.getLogger("trimo.app")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: this process decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass(frozen=True)
class Parts:
    web: bool = True
    worker: bool = True
    reporter: bool = True
    runner: RunnerSettings | None = None


FATAL: Final = (SettingsError, SystemExit, KeyboardInterrupt)
"""Errors that end the process: configuration is wrong, or uvicorn could not bind."""
MAX_BACKOFF_SECONDS: Final = 60.0
WEB_GRACE_SECONDS: Final = 5
"""On stop, how long requests being answered (and live streams) may go on."""
HEALTHY_SECONDS: Final = 60.0
"""A part that ran this long before failing starts again without waiting."""


async def supervise(
    name: str,
    start: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
    *,
    first_backoff: float = 1.0,
) -> None:
    """Run `start()` until `stop` is set; an unexpected error or end restarts it with backoff.

    One part failing (the web edge, the event worker, the reporter) never takes the others
    down. Only a fatal configuration error (`FATAL`) ends the process.
    """
    backoff = first_backoff
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        began = loop.time()
        try:
            await start()
            if stop.is_set():
                return
            log.error("%s stopped unexpectedly; restarting in %.0fs", name, backoff)
        except FATAL:
            raise
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # this supervision is being cancelled
            # A task under the part was cancelled (arq's Worker.close() raises the
            # cancellation of the job it stopped, e.g. when Redis died mid-job).
            log.exception("%s failed; restarting in %.0fs", name, backoff)
        except Exception:
            log.exception("%s failed; restarting in %.0fs", name, backoff)
        if loop.time() - began > HEALTHY_SECONDS:
            backoff = first_backoff
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), backoff)
        backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)


async def run(settings: AppSettings, parts: Parts) -> None:
    """Run `parts` until SIGINT or SIGTERM, then stop them in order (the runner drains).

    The web edge, the event worker and the reporter are supervised (see `supervise`).
    """
    logs.hide_settings(settings)
    with contextlib.suppress(SettingsError):
        logs.hide(settings.private_key())  # also when it comes from a file
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    pool = await create_pool(redis_settings(settings.redis_url))
    await pool.set(contract.APP_VERSION, __version__)  # for a runner's `trimo doctor`
    tasks: list[asyncio.Task[None]] = []
    web: list[asyncio.Task[None]] = []
    unready = asyncio.Event()
    servers: list[_Server] = []
    workers: list[Worker] = []
    daemon: RunnerDaemon | None = None

    async def serve_http(app: Starlette, port: int, what: str, variable: str) -> None:
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=port,
            log_level="info",
            log_config=None,  # uvicorn's lines go through Trimo's handler (JSON off a terminal)
            timeout_graceful_shutdown=WEB_GRACE_SECONDS,
        )
        server = _Server(config)
        servers[:] = [server]
        await server.serve()
        if not server.started and not stop.is_set():
            raise SettingsError(
                f"{what} could not listen on {settings.host}:{port}",
                f"free the port or set {variable}",
            )

    async def serve_web() -> None:
        app = create_app(settings, stopping=unready)
        await serve_http(app, settings.port, "the web edge", "TRIMO_PORT")

    async def serve_worker_web() -> None:
        app = create_worker_app(settings, pool)
        await serve_http(app, settings.worker_port, "the worker's endpoint", "TRIMO_WORKER_PORT")

    async def work() -> None:
        worker = create_worker(settings, handle_signals=False)
        workers[:] = [worker]
        try:
            await worker.main()
        finally:
            with contextlib.suppress(Exception):
                await worker.close()

    async def answer_tokens() -> None:
        desk = TokenDesk(
            build_services(settings, pool), consumer=f"{socket.gethostname()}-{os.getpid()}"
        )
        await desk.run(stop)

    async def report() -> None:
        services = build_services(settings, pool)
        reporter = Reporter(services, consumer=f"{socket.gethostname()}-{os.getpid()}")
        await reporter.run(stop)

    async def report_previews() -> None:
        services = build_services(settings, pool)
        consumer = f"{socket.gethostname()}-{os.getpid()}"
        await PreviewReporter(services, consumer).run(stop)

    try:
        if parts.web:
            web.append(asyncio.create_task(supervise("web edge", serve_web, stop)))
        elif parts.worker and parts.runner is None:  # `trimo worker`: its own endpoint
            web.append(asyncio.create_task(supervise("endpoint", serve_worker_web, stop)))
        tasks.extend(web)
        if parts.worker:
            tasks.append(asyncio.create_task(supervise("event worker", work, stop)))
            tasks.append(asyncio.create_task(supervise("token desk", answer_tokens, stop)))
        if parts.reporter:
            tasks.append(asyncio.create_task(supervise("reporter", report, stop)))
            tasks.append(asyncio.create_task(supervise("preview reporter", report_previews, stop)))
        if parts.runner is not None:
            daemon = RunnerDaemon(parts.runner, parts.runner.runner_policy())
            tasks.append(asyncio.create_task(daemon.serve(handle_signals=False)))
        done, _ = await asyncio.wait(
            [asyncio.create_task(stop.wait()), *tasks], return_when=asyncio.FIRST_COMPLETED
        )
        for task in done:
            if task in tasks and (error := task.exception()) is not None:
                raise error
    finally:
        stop.set()
        if parts.web and settings.stop_unready_seconds and servers:
            unready.set()  # /healthz says 503; requests are still answered meanwhile
            await asyncio.sleep(settings.stop_unready_seconds)
        for server in servers:
            server.should_exit = True
        if web:  # requests being answered get their answer (a webhook accepted is answered)
            await asyncio.wait(web, timeout=WEB_GRACE_SECONDS + 1)
        if daemon is not None:
            daemon.request_stop()
        for worker in workers:
            # arq cancels the jobs it was running and re-raises their CancelledError: they
            # are still queued in Redis, and run again; this process is stopping anyway.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await worker.close()
        runner_part = tasks[-1:] if daemon is not None else []
        await stop_tasks([task for task in tasks if task not in runner_part])
        await asyncio.gather(*runner_part, return_exceptions=True)
        await pool.aclose()


@contextlib.contextmanager
def private_redis(data_dir: Path) -> Iterator[str]:
    """A redis-server of Trimo's own on a free loopback port, stopped on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise TrimoError(
            "TRIMO_REDIS_URL is not set and redis-server is not installed.",
            "install it (`apt-get install redis-server`) or point TRIMO_REDIS_URL at a Redis",
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
         "--appendonly", "yes", "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        for _ in range(100):
            with contextlib.suppress(redis.ConnectionError):
                client.ping()
                break
            time.sleep(0.05)
        else:
            raise TrimoError(f"the private redis-server did not start (data in {data_dir})")
        client.close()
        yield url
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
