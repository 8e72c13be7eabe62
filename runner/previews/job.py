"""The preview contract: what a preview request holds and what events a preview emits.

The App queues `PreviewRequest`s on `contract.preview_queue(label)` and reads the events
from `contract.PREVIEW_EVENTS`; a preview has its own job kind, apart from the agent's runs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, field_validator

from runner.contract import (
    DEFAULT_IMAGE,
    DEFAULT_PREVIEW_IDLE_MINUTES,
    MAX_PREVIEW_IDLE_MINUTES,
    NetworkMode,
    SafeId,
)
from runner.job import RepoRef, Resources, is_valid_branch_name, now
from runner.setup.spec import SetupSpec

MAX_SCRIPT_CHARS = 4000
"""The most a `setup` or `command` may hold."""


class PreviewRequest(BaseModel):
    """Everything a runner needs to start (or refresh) one pipeline's preview."""

    preview_id: SafeId
    pipeline: SafeId
    repo: RepoRef
    branch: str
    image: str = DEFAULT_IMAGE
    setup: str = Field(default="", max_length=MAX_SCRIPT_CHARS)
    command: str = Field(min_length=1, max_length=MAX_SCRIPT_CHARS)
    port: int = Field(ge=1, le=65535)
    ready_path: str = "/"
    idle_minutes: int = Field(
        default=DEFAULT_PREVIEW_IDLE_MINUTES, ge=1, le=MAX_PREVIEW_IDLE_MINUTES
    )
    network: NetworkMode = "allowlist"
    allowed_hosts: list[str] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    cached_setup: SetupSpec | None = None
    """The repository's `setup:`, from the same cache as its runs, before `setup` above."""
    runner_label: str = "default"
    token: SecretStr | None = None
    """Repository-scoped token for the mirror's fetch; never enters the container."""

    @field_validator("branch")
    @classmethod
    def _branch_ok(cls, value: str) -> str:
        if not is_valid_branch_name(value):
            raise ValueError(f"not a safe branch name: {value!r}")
        return value

    @field_validator("ready_path")
    @classmethod
    def _path_ok(cls, value: str) -> str:
        if not value.startswith("/") or any(c.isspace() or not c.isprintable() for c in value):
            raise ValueError("should be a path starting with /, without spaces")
        return value

    def dump_for_queue(self) -> dict[str, object]:
        """JSON-able form with the token revealed, for the job queue only."""
        data = self.model_dump(mode="json")
        data["token"] = self.token.get_secret_value() if self.token else None
        return data


class _PreviewEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    preview_id: str
    pipeline: str
    runner: str
    at: datetime = Field(default_factory=now)


class PreviewReady(_PreviewEvent):
    """The preview answers at `url` until `expires_at` (or until it is idle too long)."""

    type: Literal["ready"] = "ready"
    url: str
    sha: str
    expires_at: datetime
    refreshed: bool = False
    """True when this runner already served the pipeline and kept its link."""


class PreviewFailed(_PreviewEvent):
    """The preview never became ready: why, and the last lines of its output."""

    type: Literal["failed"] = "failed"
    reason: str
    log_tail: str = ""


StopReason = Literal["stopped", "idle", "expired", "cap", "shutdown"]


class PreviewStopped(_PreviewEvent):
    type: Literal["stopped"] = "stopped"
    reason: StopReason


PreviewEvent = Annotated[PreviewReady | PreviewFailed | PreviewStopped, Field(discriminator="type")]
preview_event_adapter: TypeAdapter[PreviewEvent] = TypeAdapter(PreviewEvent)
