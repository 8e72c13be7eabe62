"""Real redis-server processes for tests that need one of their own: persistent (AOF),
TLS, or Sentinel. Each is killed when the test ends."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from tests.conftest import free_port


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is required: run scripts/test (it installs it)")
    return binary


class RedisProcess:
    """One redis-server: `start()` runs it on a fixed port and directory, so that after
    `kill9()` a second `start()` is the same server coming back (with its AOF)."""

    def __init__(
        self,
        workdir: Path,
        args: Sequence[str] = (),
        port: int | None = None,
        config: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.config = config
        self.port = port or free_port()
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        config = [str(self.config)] if self.config else []
        return [redis_binary(), *config, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.workdir), "--save", "", *self.args]  # fmt: skip

    def start(self, ready: Callable[[], bool] | None = None) -> RedisProcess:
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log)
        wait_for(ready or self.answers, 15, f"redis-server on port {self.port}", self.proc)
        return self

    def answers(self) -> bool:
        probe = subprocess.run(
            ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True
        )
        return probe.stdout.strip() == "PONG"

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def wait_for(
    probe: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}")
        if probe():
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"{what} did not start within {timeout}s")
