"""The webhook edge: verify, dedupe and queue GitHub deliveries, answering in milliseconds.

Nothing slow happens here: no GitHub API call, only Redis. The App worker (arq, queue
`trimo:app`) runs `handle_event(event, delivery_id, payload)` for each queued delivery.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, Final, TypeVar
from urllib.parse import parse_qs

from arq.connections import ArqRedis, create_pool
from arq.constants import job_key_prefix
from githubkit.webhooks import verify
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.edge.events import PING_EVENT, is_handled
from app.ops import metrics, scrape
from app.settings import AppSettings
from runner.logs import log_context
from runner.redisurl import redis_settings

log = logging.getLogger("trimo.web")

QUEUE_NAME: Final = "trimo:app"
HANDLER_FUNCTION: Final = "handle_event"
DELIVERY_KEY_PREFIX: Final = "trimo:delivery:"
DELIVERY_TTL_SECONDS: Final = 7 * 24 * 3600
QUEUING: Final = b"queuing"
QUEUED: Final = b"1"
QUEUING_TTL_SECONDS: Final = 60
"""A try that died while queuing holds its delivery's redeliveries back this long."""
REDIS_TIMEOUT_SECONDS: Final = 5.0
"""Longest a webhook waits on one Redis command before answering 503."""

_DELIVERY_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_EVENT_RE: Final = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_REDIS_ERRORS: Final = (RedisError, OSError)  # OSError includes TimeoutError

RedisPoolFactory = Callable[[], Awaitable[ArqRedis]]
_T = TypeVar("_T")


def delivery_key(delivery_id: str) -> str:
    """Redis key that marks a delivery as seen."""
    return f"{DELIVERY_KEY_PREFIX}{delivery_id}"


def job_id(delivery_id: str) -> str:
    """arq job id of a delivery's `handle_event` job."""
    return f"gh-{delivery_id}"


class Rejected(Exception):
    """A request answered with an error status and a JSON explanation."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error

    def response(self) -> JSONResponse:
        headers = {"Connection": "close"} if self.status == 413 else None
        return JSONResponse({"error": self.error}, status_code=self.status, headers=headers)


def parse_payload(content_type: str | None, body: bytes) -> dict[str, Any]:
    """The JSON object of a delivery sent as JSON or as a form with a `payload` field."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        raw: bytes | str = body
    elif media_type == "application/x-www-form-urlencoded":
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError) as exc:
            raise Rejected(400, f"malformed form body: {exc}") from exc
        values = fields.get("payload", [])
        if len(values) != 1:
            raise Rejected(400, "a form-encoded delivery needs exactly one `payload` field")
        raw = values[0]
    else:
        raise Rejected(
            400,
            f"unsupported content type {media_type or '(none)'!r}: "
            "use application/json or application/x-www-form-urlencoded",
        )
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise Rejected(400, f"body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise Rejected(400, f"payload must be a JSON object, not {type(payload).__name__}")
    return payload


def event_action(payload: dict[str, Any]) -> str | None:
    action = payload.get("action")
    return action if isinstance(action, str) else None


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) one larger than `limit` before holding more of it."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError as exc:
            raise Rejected(400, "invalid Content-Length") from exc
        if size > limit:
            raise Rejected(413, f"body of {size} bytes exceeds the limit of {limit}")
    chunks: list[bytes] = []
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise Rejected(413, f"body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect as exc:
        raise Rejected(400, "client disconnected before sending the whole body") from exc
    return b"".join(chunks)


def _header(request: Request, name: str, pattern: re.Pattern[str]) -> str:
    value = request.headers.get(name)
    if not value:
        raise Rejected(400, f"missing {name} header")
    if not pattern.match(value):
        raise Rejected(400, f"malformed {name} header")
    return value


async def _bounded(call: Awaitable[_T]) -> _T:
    async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
        return await call


class RedisHandle:
    """The arq pool, opened at startup and again on demand while Redis is unreachable."""

    def __init__(self, factory: RedisPoolFactory) -> None:
        self._factory = factory
        self._pool: ArqRedis | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        try:
            await self.get()
        except _REDIS_ERRORS as exc:
            log.warning("Redis is unreachable at startup (%s); webhooks answer 503 meanwhile", exc)

    async def get(self) -> ArqRedis:
        pool = self._pool
        if pool is None:
            async with self._lock:
                pool = self._pool
                if pool is None:
                    pool = self._pool = await _bounded(self._factory())
        return pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None


class Queuing(Exception):
    """Another try of the delivery is being queued right now; whether it will be is not
    known yet."""


async def enqueue_delivery(
    pool: ArqRedis, event: str, delivery_id: str, payload: dict[str, Any]
) -> bool:
    """Queue a delivery once; False when it was queued already (a redelivery).

    A try marks the delivery `QUEUING` first, then `QUEUED` once its job is in the queue. A
    redelivery that finds it queuing (GitHub gave up waiting on a slow Redis) is not called
    a duplicate: that try may yet fail and forget it. It raises `Queuing`, to come again."""
    key = delivery_key(delivery_id)
    if not await _bounded(pool.set(key, QUEUING, nx=True, ex=QUEUING_TTL_SECONDS)):
        if await _bounded(pool.get(key)) == QUEUING:
            raise Queuing(delivery_id)
        return False
    try:
        job = await _bounded(
            pool.enqueue_job(
                HANDLER_FUNCTION,
                event,
                delivery_id,
                payload,
                _job_id=job_id(delivery_id),
                _queue_name=QUEUE_NAME,
            )
        )
    except BaseException:
        # Forget the attempt (a failed MULTI may still have written the job key), so that
        # GitHub's redelivery of it can be queued.
        with suppress(*_REDIS_ERRORS):
            await _bounded(pool.delete(key, job_key_prefix + job_id(delivery_id)))
            await _bounded(pool.zrem(QUEUE_NAME, job_id(delivery_id)))
        raise
    # Unmarked, the queuing mark expires and arq's job id still keeps out a second job.
    with suppress(*_REDIS_ERRORS):
        await _bounded(pool.set(key, QUEUED, ex=DELIVERY_TTL_SECONDS))
    return job is not None


@dataclasses.dataclass
class Seen:
    """What a webhook request turned out to be, for the metrics."""

    event: str | None = None
    """Set once the signature is verified (before, the header is anyone's)."""
    outcome: str = "rejected"


REJECTED_OUTCOMES: Final = {400: "malformed", 401: "unauthorized", 413: "too_large"}


def repository_name(payload: dict[str, Any]) -> str | None:
    repository = payload.get("repository")
    name = repository.get("full_name") if isinstance(repository, dict) else None
    return name if isinstance(name, str) else None


def _redis_unavailable(exc: BaseException) -> JSONResponse:
    log.warning("Redis unavailable: %s: %s", type(exc).__name__, exc)
    return JSONResponse(
        {
            "error": "the queue (Redis) is unreachable or failed; the delivery was not queued",
            "detail": type(exc).__name__,
            "retry": "redeliver it from the GitHub App's advanced settings",
        },
        status_code=503,
    )


class WebhookEdge:
    """The two endpoints, bound to settings and a Redis handle."""

    def __init__(
        self, settings: AppSettings, redis: RedisHandle, stopping: asyncio.Event | None = None
    ) -> None:
        self._stopping = stopping
        self._secret = settings.require_webhook_secret()
        self._limit = settings.max_webhook_bytes
        self._redis = redis
        self._metrics_token = settings.metrics_token

    async def webhook(self, request: Request) -> JSONResponse:
        began = time.perf_counter()
        seen = Seen()
        try:
            response = await self._webhook(request, seen)
        except Rejected as rejected:
            seen.outcome = REJECTED_OUTCOMES.get(rejected.status, "rejected")
            response = rejected.response()
        metrics.observe_webhook(seen.event, seen.outcome, time.perf_counter() - began)
        return response

    async def _webhook(self, request: Request, seen: Seen) -> JSONResponse:
        signature = request.headers.get("x-hub-signature-256", "")
        if not signature.startswith("sha256="):
            raise Rejected(401, "missing X-Hub-Signature-256 (sha256) signature")
        body = await read_body(request, self._limit)
        if not verify(self._secret, body, signature):
            raise Rejected(401, "signature does not match the body")
        event = _header(request, "x-github-event", _EVENT_RE)
        seen.event = event
        delivery_id = _header(request, "x-github-delivery", _DELIVERY_RE)
        payload = parse_payload(request.headers.get("content-type"), body)
        if event == PING_EVENT:
            seen.outcome = "ping"
            return JSONResponse({"pong": True})
        action = event_action(payload)
        if not is_handled(event, action):
            seen.outcome = "ignored"
            return JSONResponse({"ignored": f"{event}.{action}" if action else event}, 202)
        with log_context(delivery_id=delivery_id, repo=repository_name(payload)):
            try:
                queued = await enqueue_delivery(
                    await self._redis.get(), event, delivery_id, payload
                )
            except _REDIS_ERRORS as exc:
                seen.outcome = "unavailable"
                return _redis_unavailable(exc)
            except Queuing:
                seen.outcome = "unavailable"
                log.info("delivery %s (%s) is being queued by an earlier try", delivery_id, event)
                return JSONResponse(
                    {
                        "error": "an earlier try of this delivery is being queued right now",
                        "retry": "redeliver it in a minute",
                    },
                    status_code=503,
                )
            if not queued:
                seen.outcome = "duplicate"
                log.info("delivery %s (%s) already seen", delivery_id, event)
                return JSONResponse({"duplicate": True}, 202)
            seen.outcome = "queued"
            log.info("queued delivery %s (%s.%s)", delivery_id, event, action)
            return JSONResponse({"queued": True}, 202)

    async def serve_metrics(self, request: Request) -> Response:
        """Prometheus's scrape: this process's figures and those kept in Redis."""
        if not scrape.authorized(request, self._metrics_token):
            return JSONResponse({"error": "/metrics wants the bearer token"}, 401)
        try:
            redis: ArqRedis | None = await self._redis.get()
        except _REDIS_ERRORS:
            redis = None
        return Response(await scrape.exposition(redis, QUEUE_NAME), media_type=scrape.CONTENT_TYPE)

    async def healthz(self, request: Request) -> JSONResponse:
        if self._stopping is not None and self._stopping.is_set():
            # Still answering, but a load balancer should send its requests elsewhere now.
            return JSONResponse({"stopping": True}, 503)
        try:
            pool = await self._redis.get()
            await _bounded(pool.ping())
        except _REDIS_ERRORS as exc:
            return JSONResponse({"redis": f"error: {type(exc).__name__}: {exc}"}, 503)
        return JSONResponse({"redis": "ok"})


def default_pool_factory(redis_url: str) -> RedisPoolFactory:
    """arq's pool for `redis_url`, failing at once (no retry loop) when Redis is down."""
    settings = redis_settings(redis_url, conn_retries=0)

    async def factory() -> ArqRedis:
        return await create_pool(settings)

    return factory


def create_app(
    settings: AppSettings,
    redis_pool_factory: RedisPoolFactory | None = None,
    stopping: asyncio.Event | None = None,
) -> Starlette:
    """The App's web edge and dashboard; raises `SettingsError` without a webhook secret.
    Once `stopping` is set, /healthz answers 503 (the process is about to stop)."""
    from app.dashboard.auth import SignIn, auth_routes, error_pages, security_middleware
    from app.dashboard.site import Dashboard

    redis = RedisHandle(redis_pool_factory or default_pool_factory(settings.redis_url))
    edge = WebhookEdge(settings, redis, stopping)

    dashboard = Dashboard(settings, redis)
    signin = SignIn(settings)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await redis.open()
        try:
            yield
        finally:
            await dashboard.close()
            await signin.aclose()
            await redis.close()

    return Starlette(
        routes=[
            Route("/webhooks/github", edge.webhook, methods=["POST"]),
            Route("/healthz", edge.healthz, methods=["GET"]),
            Route("/metrics", edge.serve_metrics, methods=["GET"]),
            *auth_routes(),
            *dashboard.routes(),
        ],
        middleware=security_middleware(settings, signin),
        exception_handlers=error_pages(),
        lifespan=lifespan,
    )


def app_from_env() -> Starlette:
    """Factory for `uvicorn --factory app.edge.web:app_from_env`, reading `TRIMO_*` settings."""
    return create_app(AppSettings())
