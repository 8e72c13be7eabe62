"""Running the App's parts in one process: web edge, event worker, reporter (and a runner).

`trimo serve` runs the first three, `trimo worker` the last two, and `trimo up`
all of them plus a runner, with a private Redis when none is configured.
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
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import redis
import uvicorn
from arq import create_pool
from arq.connections import RedisSettings

from app.reporter import Reporter
from app.settings import AppSettings
from app.web import create_app
from app.worker import build_services, create_worker
from runner.daemon import RunnerDaemon
from runner.errors import TrimoError
from runner.settings import RunnerSettings

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


async def run(settings: AppSettings, parts: Parts) -> None:
    """Run `parts` until SIGINT or SIGTERM, then stop them in order (the runner drains)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    pool = await create_pool(RedisSettings.from_dsn(settings.redis_url))
    tasks: list[asyncio.Task[None]] = []
    server: _Server | None = None
    daemon: RunnerDaemon | None = None
    worker = None
    try:
        if parts.web:
            config = uvicorn.Config(
                create_app(settings), host=settings.host, port=settings.port, log_level="info"
            )
            server = _Server(config)
            tasks.append(asyncio.create_task(server.serve()))
        if parts.worker:
            worker = create_worker(settings, handle_signals=False)
            tasks.append(asyncio.create_task(worker.main()))
        if parts.reporter:
            services = build_services(settings, pool)
            reporter = Reporter(services, consumer=f"{socket.gethostname()}-{os.getpid()}")
            tasks.append(asyncio.create_task(reporter.run(stop)))
        if parts.runner is not None:
            daemon = RunnerDaemon(parts.runner, parts.runner.runner_policy())
            tasks.append(asyncio.create_task(daemon.serve(handle_signals=False)))
        done, _ = await asyncio.wait(
            [asyncio.create_task(stop.wait()), *tasks], return_when=asyncio.FIRST_COMPLETED
        )
        for task in done:
            if task in tasks and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        stop.set()
        if server is not None:
            server.should_exit = True
        if daemon is not None:
            daemon.request_stop()
        if worker is not None:
            with contextlib.suppress(Exception):
                await worker.close()
        for task in tasks:
            if daemon is None or task is not tasks[-1]:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
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
