"""The App worker: takes webhook deliveries off arq queue `trimo:app` and handles them.

`handle_event(ctx, event, delivery_id, payload)` is the arq job the web edge queues. It
dispatches on (event, action) through `app.handlers.router`. Failures talking to GitHub or
Redis are logged with their context and retried by arq (3 tries, growing delays); every
side effect is idempotent per delivery, so a retry repeats none.
"""

from __future__ import annotations

import logging
from typing import Any, Final, cast

from arq.connections import ArqRedis, RedisSettings
from arq.worker import Retry, Worker, func
from githubkit.exception import GitHubException, RequestFailed
from redis.exceptions import RedisError

from app.github import GitHubApp, is_transient
from app.handlers import router
from app.pipelines import Pipelines
from app.policy import ServerPolicy
from app.services import Delivery, MalformedPayload, Services
from app.settings import AppSettings
from app.web import HANDLER_FUNCTION, QUEUE_NAME

log = logging.getLogger("trimo.app")

SERVICES_KEY: Final = "trimo"
"""Where the worker's `Services` live in arq's ctx."""
MAX_TRIES: Final = 3
RETRY_DELAYS_SECONDS: Final = (5, 30, 120)
JOB_TIMEOUT_SECONDS: Final = 300
KEEP_RESULT_SECONDS: Final = 3600
NETWORKS: Final = ("none", "bridge")


def server_policy(settings: AppSettings) -> ServerPolicy:
    """The server's limits on what repositories may ask for, from `TRIMO_POLICY_*`."""
    allowed = settings.allowed_networks()
    return ServerPolicy(
        max_timeout_minutes=settings.policy_max_timeout_minutes,
        allowed_images=sorted(settings.allowed_images()),
        allowed_networks=[network for network in NETWORKS if network in allowed],
        default_image=settings.default_image,
    )


def build_services(
    settings: AppSettings, redis: ArqRedis, *, github_retry: bool = True
) -> Services:
    """The worker's services; `github_retry=False` leaves every retry to arq."""
    github = GitHubApp(settings, redis, auto_retry=github_retry)
    return Services(
        settings=settings,
        policy=server_policy(settings),
        github=github,
        redis=redis,
        pipelines=Pipelines(redis, github.mint_token),
    )


def retryable(exc: BaseException) -> bool:
    """Worth trying again later: network trouble, rate limits, GitHub's or Redis's errors."""
    return is_transient(exc) or isinstance(exc, RedisError | OSError | TimeoutError)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RequestFailed):
        request = exc.request
        return f"GitHub answered {exc.response.status_code} to {request.method} {request.url}"
    return f"{type(exc).__name__}: {exc}"


async def handle_event(
    ctx: dict[str, Any], event: str, delivery_id: str, payload: dict[str, Any]
) -> str:
    """The arq job: handle one webhook delivery. Returns what happened, for arq's result."""
    services = cast(Services, ctx[SERVICES_KEY])
    raw_action = payload.get("action")
    action = raw_action if isinstance(raw_action, str) else None
    name = f"{event}.{action}" if action else event
    delivery = Delivery(event, action, delivery_id, payload, services)
    job_try = int(ctx.get("job_try") or 1)
    try:
        handled = await router.dispatch(event, action, delivery)
    except MalformedPayload as exc:
        log.warning("delivery %s (%s): payload not understood, ignored: %s", delivery_id, name, exc)
        return f"malformed {name}"
    except (GitHubException, RedisError, OSError, TimeoutError) as exc:
        again = retryable(exc) and job_try < MAX_TRIES
        log.warning(
            "delivery %s (%s), try %d of %d: %s%s",
            delivery_id,
            name,
            job_try,
            MAX_TRIES,
            _describe(exc),
            "; will retry" if again else "; giving up",
            exc_info=not again,
        )
        if again:
            delay = RETRY_DELAYS_SECONDS[min(job_try, len(RETRY_DELAYS_SECONDS)) - 1]
            raise Retry(defer=delay) from exc
        raise
    return f"handled {name}" if handled else f"ignored {name}"


async def create_context(settings: AppSettings, redis: ArqRedis) -> dict[str, Any]:
    """An arq-like ctx for calling `handle_event` directly (tests, tools)."""
    return {"redis": redis, "job_try": 1, SERVICES_KEY: build_services(settings, redis)}


def worker_settings(settings: AppSettings) -> dict[str, Any]:
    """Keyword arguments for `arq.worker.Worker` that run the App worker."""

    async def startup(ctx: dict[str, Any]) -> None:
        ctx[SERVICES_KEY] = build_services(settings, ctx["redis"])
        log.info("App worker ready on queue %s", QUEUE_NAME)

    return {
        "functions": [
            func(
                handle_event,
                name=HANDLER_FUNCTION,
                max_tries=MAX_TRIES,
                timeout=JOB_TIMEOUT_SECONDS,
                keep_result=KEEP_RESULT_SECONDS,
            )
        ],
        "queue_name": QUEUE_NAME,
        "poll_delay": 0.1,
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "on_startup": startup,
        "max_tries": MAX_TRIES,
        "handle_signals": True,
    }


def create_worker(settings: AppSettings, **overrides: Any) -> Worker:
    """An arq worker for the App; `overrides` replace any of `worker_settings`."""
    return Worker(**{**worker_settings(settings), **overrides})


def run(settings: AppSettings) -> None:
    """Run the App worker until interrupted (blocks)."""
    create_worker(settings).run()


__all__ = [
    "SERVICES_KEY",
    "build_services",
    "create_context",
    "create_worker",
    "handle_event",
    "retryable",
    "run",
    "server_policy",
    "worker_settings",
]
