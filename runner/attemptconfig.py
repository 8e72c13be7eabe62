"""`trimo run`'s attempts settings: `attempts:`, `pick:` and `rank_by:` of the repository's
`.github/trimo.yml` on the base branch, read as `trimo run` reads its checks and setup."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from runner.contract import MAX_ATTEMPTS
from runner.errors import TrimoError
from runner.ranking import DEFAULT_RANK_BY, PickMode, RankKey, parse_rank_by
from runner.verify import CONFIG_PATH, base_config, config_problem

HINT: Final = "fix it in .github/trimo.yml on the base branch"


class AttemptsConfig(BaseModel):
    """What `trimo run` reads here of `.github/trimo.yml` (the rest is read elsewhere), as
    the App's `RepoConfig` reads the same keys."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    attempts: int = Field(default=1, ge=1, le=MAX_ATTEMPTS, strict=True)
    pick: PickMode = "manual"
    rank_by: tuple[RankKey, ...] = DEFAULT_RANK_BY

    @field_validator("rank_by", mode="before")
    @classmethod
    def _rank_by(cls, value: object) -> tuple[RankKey, ...]:
        words = [value] if isinstance(value, str) else value
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words) or not words:
            raise ValueError("should be a list of keys, like [verify, diff, cost]")
        return parse_rank_by(words)


def read_attempts_config(text: str, where: str) -> AttemptsConfig:
    """The attempts settings of a `.github/trimo.yml` text; TrimoError saying what is wrong."""
    try:
        data = yaml.safe_load(text)
        return AttemptsConfig.model_validate(data if isinstance(data, dict) else {})
    except (yaml.YAMLError, ValidationError, ValueError) as exc:
        raise TrimoError(
            f"{where} has a problem in its attempts settings: {config_problem(exc)}", HINT
        ) from None


def local_attempts_config(repo: Path, base_branch: str) -> AttemptsConfig:
    """The attempts settings of `.github/trimo.yml` on `base_branch` (defaults: none)."""
    text = base_config(repo, base_branch, HINT)
    if text is None:
        return AttemptsConfig()
    return read_attempts_config(text, f"{CONFIG_PATH} on {base_branch}")
