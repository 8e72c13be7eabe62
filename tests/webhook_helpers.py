"""Helpers for webhook tests: signing, the App served by uvicorn on loopback, queue inspection.

Use the `webhook_app` fixture from another test module with
`webhook_app = webhook_helpers.webhook_app` (a fixture import would shadow the argument).
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from arq.jobs import JobDef, deserialize_job
from pydantic import SecretStr
from starlette.applications import Starlette

from app.edge.web import QUEUE_NAME, create_app, delivery_key, job_id
from app.settings import AppSettings

SECRET = "test-webhook-secret"


def sign(secret: str, body: bytes) -> str:
    """GitHub's `X-Hub-Signature-256` value for `body` (computed here, not by githubkit)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_settings(redis_url: str, **overrides: Any) -> AppSettings:
    """Settings for a test App, ignoring the environment and any `.env`."""
    values: dict[str, Any] = {"webhook_secret": SecretStr(SECRET), "redis_url": redis_url}
    values.update(overrides)
    return AppSettings(_env_file=None, **values)


@contextmanager
def serve_in_thread(app: Starlette) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port; yields its base URL."""
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose proto says TCP,
    # and without it every response waits ~40 ms on Nagle and delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@dataclass
class RunningApp:
    """The App served on loopback, with a client and its Redis."""

    base_url: str
    settings: AppSettings
    client: httpx.Client
    redis: redis.Redis

    @property
    def secret(self) -> str:
        assert self.settings.webhook_secret is not None
        return self.settings.webhook_secret.get_secret_value()

    def deliver(
        self,
        event: str,
        body: bytes,
        *,
        delivery: str | None = None,
        content_type: str = "application/json",
        signature: str | None = None,
        headers: Mapping[str, str | None] | None = None,
    ) -> httpx.Response:
        """POST a signed delivery; `headers` entries set to None are left out."""
        sent = {
            "Content-Type": content_type,
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-Hub-Signature-256": signature or sign(self.secret, body),
            "User-Agent": "GitHub-Hookshot/test",
        }
        for name, value in (headers or {}).items():
            sent.pop(name, None)
            if value is not None:
                sent[name] = value
        return self.client.post("/webhooks/github", content=body, headers=sent)

    def queued(self) -> dict[str, JobDef]:
        """Jobs in the `trimo:app` queue, by job id, read from Redis."""
        jobs: dict[str, JobDef] = {}
        for raw_id in self.redis.zrange(QUEUE_NAME, 0, -1):
            jid = raw_id.decode()
            raw = self.redis.get(f"arq:job:{jid}")
            assert raw is not None, f"job {jid} is in the queue but its job key is missing"
            jobs[jid] = deserialize_job(raw)
        return jobs

    def job(self, delivery: str) -> JobDef | None:
        raw = self.redis.get(f"arq:job:{job_id(delivery)}")
        return None if raw is None else deserialize_job(raw)

    def seen(self, delivery: str) -> bool:
        return bool(self.redis.exists(delivery_key(delivery)))


@contextmanager
def running_app(settings: AppSettings) -> Iterator[RunningApp]:
    """`create_app(settings)` served on loopback, with a client and a Redis connection."""
    client_redis = redis.Redis.from_url(settings.redis_url)
    with (
        serve_in_thread(create_app(settings)) as base_url,
        httpx.Client(base_url=base_url, timeout=10) as client,
    ):
        try:
            yield RunningApp(base_url, settings, client, client_redis)
        finally:
            client_redis.close()


@pytest.fixture
def webhook_app(redis_url: str) -> Iterator[RunningApp]:
    """The App on a free loopback port, queueing into the flushed test Redis."""
    with running_app(make_settings(redis_url)) as running:
        yield running
