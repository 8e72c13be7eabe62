"""The token desk: fresh repository tokens for runs that waited long for a runner.

A run's token is minted when it is queued and lives 60 minutes. A runner that takes a run
queued long ago asks for a new one (`runner.daemon.ask_for_token`) on the stream
`TOKEN_REQUESTS`; the desk mints a token for a run that is still queued or running and
answers on the run's list key (short TTL). For anything else it answers "" (refused). The
App's key never leaves the App.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

import redis.asyncio as aioredis

from app.redisio import as_text, ensure_group
from app.services import Services
from runner import contract, logs

log = logging.getLogger("trimo.tokens")

GROUP: Final = "trimo-token-desk"
ANSWER_TTL_SECONDS: Final = 60


class TokenDesk:
    def __init__(self, services: Services, consumer: str) -> None:
        self.services = services
        self.redis: aioredis.Redis = services.redis
        self.consumer = consumer

    async def ensure_group(self) -> None:
        await ensure_group(self.redis, contract.TOKEN_REQUESTS, GROUP)

    async def run(self, stop: asyncio.Event) -> None:
        """Answer requests until `stop` is set (supervised by `app.ops.server`)."""
        await self.ensure_group()
        while not stop.is_set():
            await self.step(block_ms=1000)

    async def step(self, block_ms: int | None = None) -> int:
        """Answer the requests waiting (pending ones first); how many were answered."""
        answered = 0
        for start in ("0", ">"):
            read = await self.redis.xreadgroup(
                GROUP,
                self.consumer,
                {contract.TOKEN_REQUESTS: start},
                count=20,
                block=block_ms if start == ">" else None,
            )
            for _stream, entries in read or []:
                for entry_id, fields in entries:
                    run_id = as_text(fields.get(b"run_id") or fields.get("run_id")) or ""
                    with logs.log_context(run_id=run_id if contract.is_valid_id(run_id) else None):
                        await self.answer(run_id)
                    await self.redis.xack(contract.TOKEN_REQUESTS, GROUP, entry_id)
                    await self.redis.xdel(contract.TOKEN_REQUESTS, entry_id)
                    answered += 1
        return answered

    async def answer(self, run_id: str) -> None:
        token = ""
        try:
            token = await self.token_for(run_id) or ""
        except Exception as exc:  # the runner is told "no" and says why; never stop the desk
            log.warning("run %s: no fresh token (%s: %s)", run_id, type(exc).__name__, exc)
        key = contract.run_token(run_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.rpush(key, token)
        pipe.expire(key, ANSWER_TTL_SECONDS)
        await pipe.execute()
        log.info("run %s: %s", run_id, "fresh token given" if token else "token refused")

    async def token_for(self, run_id: str) -> str | None:
        """A token for a run that is still queued or running; None for any other."""
        if not contract.is_valid_id(run_id):
            return None
        found = await self.services.pipelines.get_run(run_id)
        if found is None:
            return None
        pipeline, run = found
        logs.bind(pipeline=pipeline.id, repo=pipeline.repo)
        if run.status not in ("queued", "running"):
            return None
        return await self.services.pipelines.dispatch.mint_token(
            pipeline.installation_id, pipeline.repo.partition("/")[2]
        )
