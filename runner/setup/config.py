"""`setup:` as a repository writes it in `.github/trimo.yml`, read alike by the App and by
`trimo run`; what a runner is given is its `SetupSpec`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from runner.network.hosts import MAX_ALLOWED_HOSTS, HostPattern
from runner.setup.spec import (
    DEFAULT_SETUP_TIMEOUT_MINUTES,
    MAX_SETUP_PATHS,
    MAX_SETUP_SCRIPT_CHARS,
    MAX_SETUP_TIMEOUT_MINUTES,
    KeyFile,
    SetupPath,
    SetupSpec,
    overlapping,
)


class SetupConfig(BaseModel):
    """The environment every run and preview starts with (`setup:`), made once per cache key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run: str = Field(min_length=1, max_length=MAX_SETUP_SCRIPT_CHARS)
    cache_key: list[KeyFile] = Field(default_factory=list, max_length=MAX_SETUP_PATHS)
    paths: list[SetupPath] = Field(min_length=1, max_length=MAX_SETUP_PATHS)
    allowed_hosts: list[HostPattern] = Field(default_factory=list, max_length=MAX_ALLOWED_HOSTS)
    timeout_minutes: int = Field(
        default=DEFAULT_SETUP_TIMEOUT_MINUTES, ge=1, le=MAX_SETUP_TIMEOUT_MINUTES, strict=True
    )

    @field_validator("paths")
    @classmethod
    def _apart(cls, value: list[str]) -> list[str]:
        if pair := overlapping(value):
            raise ValueError(f"lists `{pair[0]}` and `{pair[1]}`, which overlap")
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts_unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    def spec(self) -> SetupSpec:
        """What a runner is given."""
        return SetupSpec(
            run=self.run,
            cache_key=list(self.cache_key),
            paths=list(self.paths),
            allowed_hosts=list(self.allowed_hosts),
            timeout_s=self.timeout_minutes * 60,
        )
