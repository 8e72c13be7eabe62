"""This runner's previews: start, refresh, stop, and the limits that stop them.

A preview starts from a queued `PreviewRequest` when it is still the one the App wants
(`contract.preview_wanted`). It is ready when `ready_path` answers over HTTP; then its
route goes into the proxy's table and a `PreviewReady` event tells the App its link.
A newer request for the same pipeline on this runner refreshes it: the new container
takes over the same link once it answers, and the old one goes.

Once a second the manager looks at every preview it serves and stops those the App no
longer wants, those idle for `idle_minutes`, and those past their hard maximum lifetime.
At most `max_previews` run at once: a new one stops the one idle longest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any, Final

import redis
import redis.asyncio as aioredis

from runner import contract, disk
from runner.container import log_tail
from runner.errors import TrimoError
from runner.policy import RunnerPolicy, host_refusal
from runner.previews import sandbox
from runner.previews.job import (
    PreviewEvent,
    PreviewFailed,
    PreviewReady,
    PreviewRequest,
    PreviewStopped,
    StopReason,
)
from runner.previews.links import Links
from runner.previews.routes import Route, Routes, new_token
from runner.setup.build import SetupFailed

log = logging.getLogger("trimo.previews")

SWEEP_SECONDS: Final = 1.0
REPLACED_GRACE_SECONDS: Final = 120.0
"""How long a preview the App replaced serves on while its successor starts elsewhere."""
READY_POLL_SECONDS: Final = 0.05
ALIVE_POLL_SECONDS: Final = 0.5
_UNKNOWN: Final = object()
_FORGET_IF_SAME: Final = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


@dataclass(frozen=True)
class Limits:
    max_previews: int = 4
    max_lifetime_seconds: float = 8 * 3600
    ready_timeout_seconds: float = 600


@dataclass
class Served:
    """One preview this runner serves."""

    request: PreviewRequest
    launched: sandbox.Launched
    route: Route


class PreviewManager:
    def __init__(
        self,
        host: sandbox.Host,
        redis_client: aioredis.Redis,
        links: Links,
        routes: Routes,
        limits: Limits = Limits(),
        policy: RunnerPolicy | None = None,
    ) -> None:
        self.host = host
        self.redis = redis_client
        self.links = links
        self.routes = routes
        self.limits = limits
        self.policy = policy or RunnerPolicy()
        self.served: dict[str, Served] = {}
        """By pipeline."""
        self._locks: dict[str, asyncio.Lock] = {}
        self._replaced_since: dict[str, float] = {}
        """By pipeline: since when the App wants another preview than the one served."""

    @property
    def clock(self) -> Callable[[], float]:
        return self.routes.clock

    # -- starting -----------------------------------------------------------------------

    async def start(self, request: PreviewRequest) -> str:
        """Start (or refresh) `request`'s preview; what happened, for arq's result. A bug
        or Docker trouble ends as a failed preview the App shows, never a silent one."""
        try:
            return await self._start(request)
        except Exception:
            reference = secrets.token_hex(4)
            log.exception("preview %s failed (ref %s)", request.preview_id, reference)
            await self._fail(request, f"the runner hit an unexpected error (ref {reference})")
            return "failed"

    async def _start(self, request: PreviewRequest) -> str:
        lock = self._locks.setdefault(request.pipeline, asyncio.Lock())
        async with lock:
            if not await self._wanted(request):
                return "superseded"
            if why := self.refusal(request):
                await self._fail(request, f"refused by runner {self.host.runner_id}: {why}")
                return "refused"
            if request.pipeline not in self.served:
                await self._make_room()
            loop = asyncio.get_running_loop()
            try:
                launched = await loop.run_in_executor(None, sandbox.launch, self.host, request)
            except TrimoError as exc:
                await self._fail(request, str(exc))
                return "failed"
            except SetupFailed as exc:
                await self._fail(request, exc.reason, exc.tail)
                return "failed"
            finally:
                await self._report_setup(request)
            if why := await self._wait_ready(request, launched):
                tail = await loop.run_in_executor(
                    None, log_tail, self.host.client, launched.container_id
                )
                if await loop.run_in_executor(None, disk.full, launched.directory):
                    why += f"; {disk_full(self.host.disk_bytes)}"
                await loop.run_in_executor(None, launched.teardown)
                await self._fail(request, why, tail)
                return "failed"
            await self._serve(request, launched)
            return "ready"

    async def _report_setup(self, request: PreviewRequest) -> None:
        """The setup cache's look-up for `request`, on /metrics now, not at the next run."""
        if request.cached_setup is None or self.host.setup is None:
            return
        try:
            await self.host.setup.report(self.redis, self.host.runner_id)
        except Exception:  # the figures are not worth a preview
            log.warning("could not report the setup cache's figures", exc_info=True)

    def refusal(self, request: PreviewRequest) -> str | None:
        policy = self.policy
        repo = request.repo.full_name
        if policy.allowed_repos and not any(fnmatchcase(repo, p) for p in policy.allowed_repos):
            return f"this runner does not serve previews of {repo}"
        if policy.allowed_images and request.image not in policy.allowed_images:
            return f"this runner does not run the image {request.image}"
        if request.network not in policy.allowed_networks:
            return f"this runner does not allow network {request.network!r}"
        if request.network == "allowlist":
            return host_refusal(request.allowed_hosts, policy)
        return None

    async def _wait_ready(self, request: PreviewRequest, launched: sandbox.Launched) -> str:
        """'' once `ready_path` answers; else why it never did."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.limits.ready_timeout_seconds
        next_alive_check = 0.0
        if not launched.address:  # it ended before Docker gave it one
            return "the preview's setup or command ended before it answered"
        while time.monotonic() < deadline:
            if await _answers(launched.address, request.port, request.ready_path):
                return ""
            if time.monotonic() >= next_alive_check:
                next_alive_check = time.monotonic() + ALIVE_POLL_SECONDS
                alive = await loop.run_in_executor(
                    None, sandbox.is_running, self.host.client, launched.container_id
                )
                if not alive:
                    return "the preview's setup or command ended before it answered"
            await asyncio.sleep(READY_POLL_SECONDS)
        minutes = self.limits.ready_timeout_seconds / 60
        return (
            f"nothing answered at port {request.port}{request.ready_path} "
            f"within {minutes:g} minutes"
        )

    async def _serve(self, request: PreviewRequest, launched: sandbox.Launched) -> None:
        now = self.clock()
        earlier = self.served.get(request.pipeline)
        token = earlier.route.token if earlier is not None else new_token()
        route = Route(
            preview_id=request.preview_id,
            token=token,
            address=launched.address,
            port=request.port,
            expires_at=now + self.limits.max_lifetime_seconds,
            last_request=now,
        )
        self.served[request.pipeline] = Served(request, launched, route)
        self._replaced_since.pop(request.pipeline, None)
        self.routes.add(route)
        if earlier is not None:
            await self._take_down(earlier)
        log.info("preview %s of %s ready", request.preview_id, request.pipeline)
        await self.publish(
            PreviewReady(
                preview_id=request.preview_id,
                pipeline=request.pipeline,
                runner=self.host.runner_id,
                url=self.links.url(token),
                sha=launched.sha,
                expires_at=datetime.fromtimestamp(route.expires_at, UTC),
                refreshed=earlier is not None,
            )
        )

    async def _make_room(self) -> None:
        """Stop the previews idle longest until a new one fits under the cap."""
        while self.served and len(self.served) >= self.limits.max_previews:
            oldest = min(self.served.values(), key=lambda s: s.route.last_request)
            await self.stop(oldest.request.pipeline, "cap")

    # -- stopping -----------------------------------------------------------------------

    async def stop(self, pipeline: str, reason: StopReason, tell: bool = True) -> None:
        """Stop the preview of `pipeline`; the App is told unless `tell` is False."""
        self._replaced_since.pop(pipeline, None)
        served = self.served.pop(pipeline, None)
        if served is None:
            return
        if reason != "stopped":
            await self._forget(served.request)
        await self._take_down(served)
        log.info("preview %s of %s stopped (%s)", served.request.preview_id, pipeline, reason)
        if tell:
            await self.publish(
                PreviewStopped(
                    preview_id=served.request.preview_id,
                    pipeline=pipeline,
                    runner=self.host.runner_id,
                    reason=reason,
                )
            )

    async def _take_down(self, served: Served) -> None:
        if self.routes.get(served.request.preview_id) is served.route:
            self.routes.remove(served.request.preview_id)
        await asyncio.get_running_loop().run_in_executor(None, served.launched.teardown)

    async def sweep(self) -> None:
        """One look at every preview: unwanted, expired or idle ones stop."""
        now = self.clock()
        for pipeline, served in list(self.served.items()):
            lock = self._locks.setdefault(pipeline, asyncio.Lock())
            if lock.locked():
                continue  # a refresh is under way; it decides
            route = served.route
            wanted = await self._wanted_id(pipeline)
            if wanted == served.request.preview_id:
                self._replaced_since.pop(pipeline, None)
            if wanted is _UNKNOWN:
                pass
            elif wanted is not None and wanted != served.request.preview_id:
                # Replaced: serve on until the new one is up (its start here takes this
                # one down as a refresh), or for `REPLACED_GRACE_SECONDS` when it went to
                # another runner: stopped now, a refresh on a busy machine broke the link.
                since = self._replaced_since.setdefault(pipeline, now)
                if now - since >= REPLACED_GRACE_SECONDS:
                    await self.stop(pipeline, "stopped", tell=False)
            elif wanted is None:
                await self.stop(pipeline, "stopped")
            elif route.expires_at <= now:
                await self.stop(pipeline, "expired")
            elif now - route.last_request >= served.request.idle_minutes * 60:
                await self.stop(pipeline, "idle")

    async def keep_sweeping(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # a bad sweep never ends the runner's previews
                log.exception("previews: a sweep failed")
            await asyncio.sleep(SWEEP_SECONDS)

    async def close(self) -> None:
        """Stop every preview (the runner is going away)."""
        for pipeline in list(self.served):
            await self.stop(pipeline, "shutdown")

    # -- Redis --------------------------------------------------------------------------

    async def _wanted(self, request: PreviewRequest) -> bool:
        wanted = await self._wanted_id(request.pipeline)
        return wanted is _UNKNOWN or wanted == request.preview_id

    async def _wanted_id(self, pipeline: str) -> str | object | None:
        """The preview the App wants for `pipeline` (None: none); `_UNKNOWN` when Redis
        does not answer, so that Redis trouble stops nothing."""
        try:
            raw = await self.redis.get(contract.preview_wanted(pipeline))
        except (redis.RedisError, OSError) as exc:
            log.warning("previews: Redis did not answer (%s)", exc)
            return _UNKNOWN
        return raw.decode() if isinstance(raw, bytes) else raw

    async def _forget(self, request: PreviewRequest) -> None:
        """The App no longer wants this preview (it stopped by itself)."""
        with contextlib.suppress(redis.RedisError, OSError):
            script: Any = self.redis.eval(
                _FORGET_IF_SAME, 1, contract.preview_wanted(request.pipeline), request.preview_id
            )
            await script

    async def _fail(self, request: PreviewRequest, reason: str, tail: str = "") -> None:
        log.warning("preview %s of %s failed: %s", request.preview_id, request.pipeline, reason)
        await self._forget(request)
        await self.publish(
            PreviewFailed(
                preview_id=request.preview_id,
                pipeline=request.pipeline,
                runner=self.host.runner_id,
                reason=reason,
                log_tail=tail,
            )
        )

    async def publish(self, event: PreviewEvent) -> None:
        await publish(self.redis, event)


async def publish(redis_client: aioredis.Redis, event: PreviewEvent) -> None:
    """Tell the App about a preview; Redis trouble is logged, never raised."""
    try:
        await redis_client.xadd(
            contract.PREVIEW_EVENTS,
            {"pipeline": event.pipeline, "event": event.model_dump_json()},
            maxlen=contract.PREVIEW_EVENTS_MAXLEN,
            approximate=True,
        )
    except (redis.RedisError, OSError) as exc:
        log.error("previews: could not tell the App (%s): %s", exc, event.model_dump_json())


def disk_full(size: int) -> str:
    gib = size / (1 << 30)
    shown = f"{gib:g} GiB" if gib >= 1 else f"{size / (1 << 20):g} MiB"
    return (
        f"its disk is full ({shown}, the runner's TRIMO_DISK): what the setup and the app "
        "write must fit in it"
    )


async def _answers(address: str, port: int, path: str) -> bool:
    """Whether an HTTP server answers `GET path` at address:port (any status)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(address, port), 1.0)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {address}:{port}\r\n\r\n".encode())
        await writer.drain()
        first = await asyncio.wait_for(reader.read(5), 5.0)
        return first == b"HTTP/"
    except (OSError, TimeoutError):
        return False
    finally:
        writer.transport.abort()
