"""Events the App could not handle: told to the person who asked, parked for the operator.

An event whose handling keeps failing ends here after its last try: the runs it created are
marked failed, the person gets a reply with a reference, and the event is parked in the
dead-letter stream `trimo:app:failed` with its error, so the worker acknowledges it and
everything behind it flows. `trimo events failed` lists parked events; `trimo events retry`
queues one again (with its delivery id, so steps that succeeded are not repeated).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Final

from arq.connections import ArqRedis
from githubkit.exception import RequestFailed

from app.conversation.naming import inline_code
from app.github.client import failure_detail
from app.redisio import as_text
from app.runs.service import fail_unstarted
from app.services import Delivery
from runner.templating import render

log = logging.getLogger("trimo.app")

FAILED_EVENTS: Final = "trimo:app:failed"
FAILED_MAXLEN: Final = 10_000
MAX_ERROR: Final = 2000


@dataclass(frozen=True)
class Parked:
    """One event in the dead-letter stream."""

    entry_id: str
    event: str
    delivery_id: str
    payload: dict[str, Any]
    error: str
    tries: int
    at: float


def reason_for(exc: BaseException) -> str:
    """What went wrong, in words fit for the thread (no internals beyond GitHub's answer)."""
    if isinstance(exc, RequestFailed):
        return f"GitHub answered {failure_detail(exc)}"
    return "an unexpected error in Trimo"


def describe(exc: BaseException) -> str:
    """What went wrong, for the operator."""
    if isinstance(exc, RequestFailed):
        request = exc.request
        return f"GitHub answered {failure_detail(exc)} to {request.method} {request.url}"
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR]


async def park(
    redis: ArqRedis,
    *,
    event: str,
    delivery_id: str,
    payload: dict[str, Any],
    error: str,
    tries: int,
) -> str:
    """Add the event to the dead-letter stream; its entry id."""
    entry = await redis.xadd(
        FAILED_EVENTS,
        {
            "event": event,
            "delivery_id": delivery_id,
            "payload": json.dumps(payload),
            "error": error[:MAX_ERROR],
            "tries": str(tries),
            "at": str(time.time()),
        },
        maxlen=FAILED_MAXLEN,
        approximate=True,
    )
    return as_text(entry) or ""


def _parked(entry_id: bytes | str, fields: dict[Any, Any]) -> Parked:
    text = {as_text(k) or "": as_text(v) or "" for k, v in fields.items()}
    try:
        payload = json.loads(text.get("payload") or "{}")
    except ValueError:
        payload = {}
    return Parked(
        entry_id=as_text(entry_id) or "",
        event=text.get("event", ""),
        delivery_id=text.get("delivery_id", ""),
        payload=payload if isinstance(payload, dict) else {},
        error=text.get("error", ""),
        tries=int(text.get("tries") or 0),
        at=float(text.get("at") or 0),
    )


async def parked(redis: ArqRedis, count: int = 100) -> list[Parked]:
    """The newest `count` parked events, newest first."""
    entries = await redis.xrevrange(FAILED_EVENTS, count=count)
    return [_parked(entry_id, fields) for entry_id, fields in entries]


async def find(redis: ArqRedis, ref: str) -> Parked | None:
    """A parked event by its entry id or its delivery id (the reference people were given)."""
    if ref and ref[0].isdigit() and "-" in ref and ref.replace("-", "").isdigit():
        entries = await redis.xrange(FAILED_EVENTS, min=ref, max=ref)
        if entries:
            return _parked(*entries[0])
    for item in await parked(redis, count=FAILED_MAXLEN):
        if item.delivery_id == ref:
            return item
    return None


async def replay(redis: ArqRedis, item: Parked, queue: str, function: str) -> bool:
    """Queue a parked event again and take it out of the stream; False if it was queued."""
    job = await redis.enqueue_job(
        function,
        item.event,
        item.delivery_id,
        item.payload,
        _job_id=f"gh-{item.delivery_id}:replay:{item.entry_id}",
        _queue_name=queue,
    )
    await redis.xdel(FAILED_EVENTS, item.entry_id)
    return job is not None


async def tell_failure(delivery: Delivery, exc: BaseException) -> None:
    """Mark the runs the delivery created failed, and reply where it was asked. Best effort:
    whatever fails here is logged, never raised (the thread itself may be gone)."""
    services, trace, ref = delivery.services, delivery.trace, delivery.delivery_id
    asked = trace.asked
    if asked is None:
        return
    reason = reason_for(exc)
    try:
        api = await services.github.repo(asked.installation_id, asked.repo)
        failed: list[str] = []
        for run_id in trace.run_ids:
            found = await services.pipelines.get_run(run_id)
            if found is None:
                continue
            pipeline, run = found
            taken_back = False
            if run.status == "queued":  # queued beside its report objects: back, if no
                if await services.pipelines.dispatch.take_back(run) != "taken_back":
                    continue  # runner has it (it goes on, and reports its end itself)
                taken_back = True
            elif run.status != "waiting":
                continue
            failed_run = await fail_unstarted(
                services, api, pipeline.id, run_id, reason, taken_back=taken_back
            )
            if failed_run is not None:
                failed.append(inline_code(run_id))
        body = render(
            "github/request_failed.md.j2",
            user=asked.user,
            reason=reason,
            runs=", ".join(failed),
            ref=inline_code(ref),
            ref_plain=ref,
        )
        await delivery.once("failure-reply", lambda: api.comment(asked.number, body))
    except Exception as told:  # the person cannot be told: the operator still can
        log.warning(
            "delivery %s: could not tell %s on %s#%d that it failed: %s",
            ref,
            asked.user,
            asked.repo,
            asked.number,
            describe(told),
        )
