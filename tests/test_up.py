"""`trimo up`: everything on one machine, with a private Redis when none is configured."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from tests.webhook_helpers import free_port

pytestmark = pytest.mark.docker


def test_up_starts_a_private_redis_and_stops_it(tmp_path: Path, test_image: str) -> None:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRIMO_")} | {
        "TRIMO_GITHUB_APP_ID": "1",
        "TRIMO_GITHUB_PRIVATE_KEY": "not-used-until-github-calls",
        "TRIMO_WEBHOOK_SECRET": "s",
        "TRIMO_PORT": str(port),
        "TRIMO_CACHE_DIR": str(tmp_path / "cache"),
        "TRIMO_RUNNER_ID": "up-runner",
    }
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.ops.cli", "up"], env=env, cwd=tmp_path, stdout=log, stderr=log
    )
    try:
        health = None
        for _ in range(200):
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert health is not None and health.status_code == 200, (tmp_path / "up.log").read_text()
        assert health.json() == {"redis": "ok"}
        output = (tmp_path / "up.log").read_text()
        url = next(w for w in output.split() if w.startswith("redis://127.0.0.1:"))
        private = redis.Redis.from_url(url)
        assert private.ping()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, (tmp_path / "up.log").read_text()
    with pytest.raises(redis.ConnectionError):
        private.ping()  # stopped with Trimo
