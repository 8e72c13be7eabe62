"""The App worker: takes webhook deliveries off arq queue `trimo:app` and handles them.

`handle_event(ctx, event, delivery_id, payload)` is the arq job the web edge queues. It
dispatches on (event, action) through `app.conversation.handlers.router`. One event never stops the
worker: a failure that may pass (network, rate limits, 5xx, Redis, a bug) is tried again
with growing delays, `MAX_TRIES` times in all; then, or at once for a failure that cannot
pass (GitHub's 4xx answers), the event is given up: the person who asked is told, the runs
it created are marked failed, and it is parked in `app.reporting.failures` for the operator. Every
side effect is idempotent per delivery, so a retry repeats none.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final, cast

from arq.connections import ArqRedis
from arq.worker import Retry, Worker, func
from githubkit.exception import RequestFailed

from app.conversation.handlers import router
from app.conversation.naming import pipeline_id
from app.conversation.policy import ServerPolicy
from app.edge.web import HANDLER_FUNCTION, QUEUE_NAME, repository_name
from app.github.client import GitHubApp, UnexpectedAnswer, is_transient
from app.ops import metrics
from app.reporting import failures
from app.runs import attempts
from app.runs.budget import MonthlyCaps
from app.runs.dispatch import Dispatch
from app.runs.pipelines import Pipelines
from app.services import Delivery, MalformedPayload, Services
from app.settings import AppSettings
from runner.contract import NETWORK_MODES
from runner.logs import log_context
from runner.redisurl import redis_settings

log = logging.getLogger("trimo.app")

SERVICES_KEY: Final = "trimo"
"""Where the worker's `Services` live in arq's ctx."""
MAX_TRIES: Final = 4
RETRY_DELAYS_SECONDS: Final = (5, 30, 120)
ARQ_MAX_TRIES: Final = MAX_TRIES + 2
"""arq's own limit stays above ours, so a job that killed the worker is parked by us."""
JOB_TIMEOUT_SECONDS: Final = 300
KEEP_RESULT_SECONDS: Final = 3600


def server_policy(settings: AppSettings) -> ServerPolicy:
    """The server's limits on what repositories may ask for, from `TRIMO_POLICY_*`."""
    allowed = settings.allowed_networks()
    return ServerPolicy(
        max_timeout_minutes=settings.policy_max_timeout_minutes,
        allowed_images=sorted(settings.allowed_images()),
        allowed_networks=[network for network in NETWORK_MODES if network in allowed],
        allowed_hosts=settings.allowed_hosts(),
        default_image=settings.default_image,
        monthly_usd=settings.policy_monthly_usd,
        monthly_usd_per_person=settings.policy_monthly_usd_per_person,
        max_attempts=settings.policy_max_attempts,
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
        pipelines=Pipelines(
            redis,
            Dispatch(
                redis,
                github.mint_token,
                MonthlyCaps(settings.policy_monthly_usd, settings.policy_monthly_usd_per_person),
            ),
        ),
    )


def retryable(exc: BaseException) -> bool:
    """Worth trying again later: anything but GitHub's or the payload's final word."""
    if isinstance(exc, RequestFailed):
        return is_transient(exc)
    return not isinstance(exc, UnexpectedAnswer | MalformedPayload)


async def handle_event(
    ctx: dict[str, Any], event: str, delivery_id: str, payload: dict[str, Any]
) -> str:
    """The arq job: handle one webhook delivery. Returns what happened, for arq's result."""
    began = time.perf_counter()
    outcome = "error"
    with log_context(
        delivery_id=delivery_id, repo=repository_name(payload), pipeline=_pipeline_of(payload)
    ):
        try:
            result = await _handle_event(ctx, event, delivery_id, payload)
            outcome = result.partition(" ")[0]
            return result
        except Retry:
            outcome = "retry"
            raise
        finally:
            metrics.observe_event(event, outcome, time.perf_counter() - began)


def _pipeline_of(payload: dict[str, Any]) -> str | None:
    """The pipeline an issue's or pull request's event belongs to (by its number)."""
    repo = repository_name(payload)
    thread = payload.get("issue") or payload.get("pull_request")
    number = thread.get("number") if isinstance(thread, dict) else None
    if repo is None or not isinstance(number, int) or isinstance(number, bool):
        return None
    try:
        return pipeline_id(repo, number)
    except ValueError:  # not a number GitHub gives
        return None


async def _handle_event(
    ctx: dict[str, Any], event: str, delivery_id: str, payload: dict[str, Any]
) -> str:
    services = cast(Services, ctx[SERVICES_KEY])
    raw_action = payload.get("action")
    action = raw_action if isinstance(raw_action, str) else None
    name = f"{event}.{action}" if action else event
    delivery = Delivery(event, action, delivery_id, payload, services)
    job_try = int(ctx.get("job_try") or 1)
    if job_try > MAX_TRIES:
        # Earlier tries never returned: the worker died or timed out while handling it.
        error = RuntimeError(f"handling it never ended, {job_try - 1} times")
        return await give_up(delivery, name, error, job_try - 1)
    try:
        handled = await router.dispatch(event, action, delivery)
    except MalformedPayload as exc:
        log.warning("delivery %s (%s): payload not understood, ignored: %s", delivery_id, name, exc)
        return f"malformed {name}"
    except Exception as exc:
        if retryable(exc) and job_try < MAX_TRIES:
            delay = RETRY_DELAYS_SECONDS[min(job_try, len(RETRY_DELAYS_SECONDS)) - 1]
            log.warning(
                "delivery %s (%s), try %d of %d: %s; will retry in %ds",
                delivery_id,
                name,
                job_try,
                MAX_TRIES,
                failures.describe(exc),
                delay,
            )
            raise Retry(defer=delay) from exc
        return await give_up(delivery, name, exc, job_try)
    return f"handled {name}" if handled else f"ignored {name}"


async def give_up(delivery: Delivery, name: str, exc: BaseException, tries: int) -> str:
    """Tell the person, mark the delivery's runs failed, and park the event; never raises
    (but for Redis being down, when arq keeps the job and tries it again)."""
    log.error(
        "delivery %s (%s) failed after %d tr%s, parked (ref %s): %s",
        delivery.delivery_id,
        name,
        tries,
        "y" if tries == 1 else "ies",
        delivery.delivery_id,
        failures.describe(exc),
        exc_info=exc,
    )
    await failures.tell_failure(delivery, exc)
    await failures.park(
        delivery.services.redis,
        event=delivery.event,
        delivery_id=delivery.delivery_id,
        payload=delivery.payload,
        error=failures.describe(exc),
        tries=tries,
    )
    return f"failed {name}"


async def clean_attempts_job(ctx: dict[str, Any], pipeline_id: str, set_id: str) -> str:
    """Delete a set of attempts' branches, its keep window over."""
    deleted = await attempts.clean_attempts(ctx[SERVICES_KEY], pipeline_id, set_id)
    return f"deleted {deleted} attempt branch(es) of {set_id}"


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
                max_tries=ARQ_MAX_TRIES,
                timeout=JOB_TIMEOUT_SECONDS,
                keep_result=KEEP_RESULT_SECONDS,
            ),
            func(
                clean_attempts_job,
                name=attempts.CLEAN_FUNCTION,
                max_tries=ARQ_MAX_TRIES,
                timeout=JOB_TIMEOUT_SECONDS,
                keep_result=KEEP_RESULT_SECONDS,
            ),
        ],
        "queue_name": QUEUE_NAME,
        "poll_delay": 0.05,  # a delivery waits half of it on average before it is taken
        "redis_settings": redis_settings(settings.redis_url),
        "on_startup": startup,
        "max_tries": ARQ_MAX_TRIES,
        "handle_signals": True,
    }


def create_worker(settings: AppSettings, **overrides: Any) -> Worker:
    """An arq worker for the App; `overrides` replace any of `worker_settings`."""
    return Worker(**{**worker_settings(settings), **overrides})


__all__ = [
    "SERVICES_KEY",
    "build_services",
    "create_worker",
    "handle_event",
    "retryable",
    "server_policy",
    "worker_settings",
]
