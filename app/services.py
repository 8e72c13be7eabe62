"""What the App's parts share: its long-lived services, and one webhook delivery being handled."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from arq.connections import ArqRedis
from pydantic import BaseModel, ValidationError

from app.conversation.policy import ServerPolicy
from app.github.client import GitHubApp
from app.redisio import as_text
from app.runs.pipelines import Pipelines
from app.settings import AppSettings

STEP_PREFIX: Final = "trimo:step:"
STEP_TTL_SECONDS: Final = 7 * 24 * 3600
"""As long as the web edge remembers a delivery: a retry within it never repeats a step."""

_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")
M = TypeVar("M", bound=BaseModel)


class MalformedPayload(Exception):
    """A delivery lacks fields its handler needs: nothing to do, and no use retrying."""


@dataclass(frozen=True)
class Services:
    """The App worker's long-lived parts."""

    settings: AppSettings
    policy: ServerPolicy
    github: GitHubApp
    redis: ArqRedis
    pipelines: Pipelines


@dataclass(frozen=True)
class Asked:
    """Who asked Trimo something in a delivery, and on which thread: where a failure is told."""

    installation_id: int
    repo: str
    number: int
    user: str


@dataclass
class Trace:
    """How far handling a delivery got, so that its failure can be told and cleaned up."""

    asked: Asked | None = None
    run_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery being handled."""

    event: str
    action: str | None
    delivery_id: str
    payload: dict[str, Any]
    services: Services
    trace: Trace = field(default_factory=Trace)

    def parse(self, model: type[M]) -> M:
        """The payload read as `model`; `MalformedPayload` if it does not fit."""
        try:
            return model.model_validate(self.payload)
        except ValidationError as exc:
            raise MalformedPayload(f"{self.event}.{self.action}: {exc}") from exc

    async def once(
        self,
        step: str,
        make: Callable[[], Awaitable[int | None]],
        recover: Callable[[], Awaitable[int | None]] | None = None,
    ) -> int | None:
        """Run the side effect `make` at most once per delivery and `step`; its result.

        The result (an id, or None) is remembered in Redis after success, so a retried job
        reuses it instead of commenting or creating a check run again. When an earlier try
        began `make` but never learnt its result (GitHub did not answer, yet may have done
        it), `recover` looks for what it made first; `make` runs only if that finds nothing.
        """
        key = f"{STEP_PREFIX}{self.delivery_id}:{step}"
        redis = self.services.redis
        known = await redis.get(key)
        if known is not None:
            value: int | None = json.loads(known)
            return value
        result = None
        if recover is not None:
            began = await redis.set(f"{key}:began", "1", nx=True, ex=STEP_TTL_SECONDS)
            result = None if began else await recover()
        if result is None:
            result = await make()
        if not await redis.set(key, json.dumps(result), nx=True, ex=STEP_TTL_SECONDS):
            # Another attempt finished the same step meanwhile: keep its answer.
            raw = await redis.get(key)
            if raw is not None:
                stored: int | None = json.loads(raw)
                return stored
        return result

    async def first(self, step: str, value: str) -> str:
        """`value`, or what an earlier try of this delivery chose for `step` (a retry keeps
        to it: a branch that moved meanwhile does not hide what that try made)."""
        key = f"{STEP_PREFIX}{self.delivery_id}:{step}"
        redis = self.services.redis
        if await redis.set(key, value, nx=True, ex=STEP_TTL_SECONDS):
            return value
        return as_text(await redis.get(key)) or value

    def run_id(self, pipeline_id: str) -> str:
        """The id of the run this delivery asks for: the same on every retry."""
        delivery = _UNSAFE_ID.sub("-", self.delivery_id)[:12].strip("-.") or "delivery"
        return f"{pipeline_id[: 100 - len(delivery) - 1]}-{delivery}"
