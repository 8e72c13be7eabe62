"""Runner daemons as real processes, jobs through real Redis, events read back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis
from arq import create_pool

from runner import contract
from runner.job import RunEvent, RunRequest, run_event_adapter
from runner.redisurl import redis_settings


class RunnerProcess:
    """`trimo runner` in its own process."""

    def __init__(
        self,
        redis_url: str,
        cache: Path,
        runner_id: str,
        labels: str,
        concurrency: int = 2,
        **env: str,
    ) -> None:
        self.runner_id = runner_id
        self.log = cache.parent / f"{runner_id}.log"
        self.env = {
            **os.environ,
            "TRIMO_REDIS_URL": redis_url,
            "TRIMO_CACHE_DIR": str(cache),
            "TRIMO_RUNNER_ID": runner_id,
            "TRIMO_RUNNER_LABELS": labels,
            "TRIMO_RUNNER_CONCURRENCY": str(concurrency),
            "TRIMO_STOP_GRACE_SECONDS": "1",
            "TRIMO_DRAIN_SECONDS": "5",
            "COLUMNS": "200",
            "PYTHONFAULTHANDLER": "1",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.redis = redis.Redis.from_url(redis_url)

    def start(self) -> RunnerProcess:
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.ops.cli", "runner"],
            env=self.env,
            stdout=handle,
            stderr=handle,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.redis.exists(contract.runner_info(self.runner_id)):
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"runner exited: {self.log.read_text()}")
            time.sleep(0.1)
        raise AssertionError(f"runner did not announce itself: {self.log.read_text()}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 125) -> int:
        """SIGTERM, then its exit within its drain (5 s) plus the two minutes the runner asks
        systemd for its saves; killed, and its log shown, when it takes longer."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # its threads' stacks, into its log
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(
                f"runner {self.runner_id} still running {timeout:.0f}s after SIGTERM; its log "
                f"ends:\n{self.output()[-12000:]}"
            ) from None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 30) -> None:
        """Wait until the runner has logged `text`."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert time.monotonic() < deadline, f"runner never said {text!r}: {self.output()}"
            time.sleep(0.1)


def enqueue(redis_url: str, request: RunRequest) -> None:
    async def go() -> None:
        pool = await create_pool(redis_settings(redis_url))
        job = await pool.enqueue_job(
            contract.RUN_FUNCTION,
            request.dump_for_queue(),
            _queue_name=contract.run_queue(request.runner_label),
            _job_id=request.run_id,
        )
        assert job is not None
        await pool.aclose()

    asyncio.run(go())


def abort(redis_url: str, request: RunRequest) -> None:
    async def go() -> None:
        from arq.jobs import Job

        pool = await create_pool(redis_settings(redis_url))
        job = Job(request.run_id, pool, _queue_name=contract.run_queue(request.runner_label))
        with contextlib.suppress(asyncio.TimeoutError):
            await job.abort(timeout=30)
        await pool.aclose()

    asyncio.run(go())


def events(redis_url: str, run_id: str) -> list[RunEvent]:
    client = redis.Redis.from_url(redis_url)
    entries = client.xrange(contract.run_events(run_id))
    return [
        run_event_adapter.validate_python(json.loads(fields[b"event"])) for _, fields in entries
    ]


def wait_for(redis_url: str, run_id: str, kind: str, timeout: float = 60) -> list[RunEvent]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = events(redis_url, run_id)
        if any(e.type == kind for e in found):
            return found
        time.sleep(0.1)
    raise AssertionError(f"no {kind!r} event for {run_id} in {timeout}s: {found}")


def finished_of(found: list[RunEvent]) -> Any:
    return next(e for e in found if e.type == "finished")
