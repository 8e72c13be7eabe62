"""`trimo worker`'s own endpoint (TRIMO_HOST:TRIMO_WORKER_PORT): `/healthz`, and `/metrics`
with the figures this process counts (events handled, GitHub requests).

The figures kept in Redis (queues, runners, runs) are the App's `/metrics` to serve: a
worker's scrape leaves them out, so that they are not counted once per process.
"""

from __future__ import annotations

import asyncio

from arq.connections import ArqRedis
from prometheus_client import generate_latest
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.ops.metrics import REGISTRY
from app.ops.scrape import CONTENT_TYPE, authorized
from app.settings import AppSettings

PING_TIMEOUT_SECONDS = 3.0


def create_worker_app(settings: AppSettings, pool: ArqRedis) -> Starlette:
    """The worker's endpoint; `pool` is the process's Redis pool (healthy: it answers)."""

    async def healthz(request: Request) -> JSONResponse:
        try:
            async with asyncio.timeout(PING_TIMEOUT_SECONDS):
                await pool.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            return JSONResponse({"redis": f"error: {type(exc).__name__}: {exc}"}, 503)
        return JSONResponse({"redis": "ok"})

    async def serve_metrics(request: Request) -> Response:
        if not authorized(request, settings.metrics_token):
            return JSONResponse({"error": "/metrics wants the bearer token"}, 401)
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", serve_metrics, methods=["GET"]),
        ]
    )
