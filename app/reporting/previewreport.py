"""The preview reporter: the runners' preview events become the preview comment and check run.

It reads `contract.PREVIEW_EVENTS` as a consumer group, so several App processes share the
work. An event GitHub did not take is tried again (`TRIES` times in all); then it is
parked in `DEAD_LETTERS` with its error, logged, and acknowledged: one bad event never
holds back the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any, Final

import redis.asyncio as aioredis

from app.redisio import ensure_group, settle
from app.reporting.channels.steps import describe
from app.runs import previews
from app.services import Services
from runner import contract
from runner.previews.job import preview_event_adapter

log = logging.getLogger("trimo.previews")

GROUP: Final = "trimo-preview-reporter"
TRIES: Final = 5
TRIES_KEY: Final = "trimo:preview-report:tries"
DEAD_LETTERS: Final = "trimo:preview-report:dead"
DEAD_LETTERS_MAXLEN: Final = 10_000
CLAIM_IDLE_MS: Final = 60_000
RETRY_SECONDS: Final = 2.0


class PreviewReporter:
    def __init__(self, services: Services, consumer: str) -> None:
        self.services = services
        self.redis: aioredis.Redis = services.redis
        self.consumer = consumer

    async def ensure_group(self) -> None:
        await ensure_group(self.redis, contract.PREVIEW_EVENTS, GROUP)

    async def run(self, stop: asyncio.Event) -> None:
        """Report until `stop` is set; Redis trouble pauses, nothing ends it."""
        group_ready = False
        while not stop.is_set():
            try:
                if not group_ready:
                    await self.ensure_group()
                    group_ready = True
                if not await self.step(block_ms=1000):
                    continue
            except Exception as exc:
                log.warning("preview reporting paused: %s", describe(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RETRY_SECONDS)

    async def step(self, block_ms: int = 0) -> int:
        """Report this consumer's pending events, then new ones; how many failed."""
        pending = await self._read("0", None)
        claimed = await self.redis.xautoclaim(
            contract.PREVIEW_EVENTS, GROUP, self.consumer, CLAIM_IDLE_MS, "0-0", count=50
        )
        fresh = await self._read(">", block_ms or None)
        failed = 0
        for raw_id, fields in [*pending, *claimed[1], *fresh]:
            if not await self._report(_text(raw_id), fields):
                failed += 1
        return failed

    async def _read(self, start: str, block_ms: int | None) -> list[tuple[Any, dict[Any, Any]]]:
        reply = await self.redis.xreadgroup(
            GROUP, self.consumer, {contract.PREVIEW_EVENTS: start}, count=100, block=block_ms
        )
        return [entry for _stream, entries in reply or [] for entry in entries]

    async def _report(self, entry_id: str, fields: dict[Any, Any]) -> bool:
        """Whether the event is done with (reported, or parked)."""
        raw = fields.get(b"event") or fields.get("event")
        try:
            if raw:
                await previews.apply_event(self.services, preview_event_adapter.validate_json(raw))
        except Exception as exc:
            tries = int(await settle(self.redis.hincrby(TRIES_KEY, entry_id, 1)))
            if tries < TRIES:
                log.info("preview event %s, try %d: %s", entry_id, tries, describe(exc))
                return False
            log.error("preview event %s parked after %d tries: %s", entry_id, tries, describe(exc))
            await self.redis.xadd(
                DEAD_LETTERS,
                {
                    "entry": entry_id,
                    "event": _text(raw),
                    "error": describe(exc)[:2000],
                    "at": datetime.now(UTC).isoformat(),
                },
                maxlen=DEAD_LETTERS_MAXLEN,
                approximate=True,
            )
        pipe = self.redis.pipeline(transaction=False)
        pipe.xack(contract.PREVIEW_EVENTS, GROUP, entry_id)
        pipe.hdel(TRIES_KEY, entry_id)
        await pipe.execute()
        return True


def _text(value: bytes | str | None) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value or ""
