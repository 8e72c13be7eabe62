"""Each `trimo worker` is observed: its own /healthz, and a /metrics with the events it
handled (the App's /metrics counts only the App's own process)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis
from arq import create_pool

from app.edge.web import enqueue_delivery
from runner import __version__, contract
from runner.redisurl import redis_settings
from tests.fakegithub import generate_key_pair
from tests.metrics_helpers import parse
from tests.webhook_helpers import free_port

pytestmark = pytest.mark.redis
TOKEN = "worker-metrics-token-3c1d"


async def queue_star(redis_url: str) -> None:
    pool = await create_pool(redis_settings(redis_url))
    try:
        assert await enqueue_delivery(pool, "star", str(uuid.uuid4()), {"action": "created"})
    finally:
        await pool.aclose()


def test_a_worker_serves_its_health_and_the_events_it_handled(
    redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    (tmp_path / "token").write_text(TOKEN + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIMO_")}
    env.update(
        TRIMO_REDIS_URL=redis_url,
        TRIMO_GITHUB_APP_ID="1",
        TRIMO_GITHUB_PRIVATE_KEY=generate_key_pair()[0],
        TRIMO_METRICS_TOKEN_FILE=str(tmp_path / "token"),
        TRIMO_WORKER_PORT=str(port),
        TRIMO_LOG_FORMAT="json",
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "app.ops.cli", "worker"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert worker.poll() is None, worker.communicate()[1]
            try:
                health = httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the worker's endpoint did not come up"
                time.sleep(0.1)
        assert health.status_code == 200 and health.json() == {"redis": "ok"}
        # and says which Trimo it is, for a runner's `trimo doctor`
        with redis.Redis.from_url(redis_url) as client:
            assert client.get(contract.APP_VERSION) == __version__.encode()
        assert httpx.get(f"{base}/metrics", timeout=5).status_code == 401

        asyncio.run(queue_star(redis_url))
        auth = {"authorization": f"Bearer {TOKEN}"}
        while True:
            got = parse(httpx.get(f"{base}/metrics", headers=auth, timeout=5).text)
            if got.total("trimo_events_handled_total") >= 1:
                break
            assert time.monotonic() < deadline, "the worker did not count the event"
            time.sleep(0.1)
        assert got.total("trimo_events_handled_total") == 1
        assert got.total("trimo_event_handling_seconds_count") == 1
        # Redis's shared figures are the App's to serve, once.
        assert "trimo_runs" not in got.families and "trimo_redis_up" not in got.families
    finally:
        worker.terminate()
        worker.wait(timeout=60)
