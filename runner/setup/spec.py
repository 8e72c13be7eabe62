"""The setup contract: what a run or preview request says about the repository's `setup:`.

The App builds a `SetupSpec` from `.github/trimo.yml`; the runner runs it once per cache
key and gives each run its `paths` from the cache. The path rules live here so both sides
refuse the same paths with the same words.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

HOME_PREFIX: Final = "~/"
MAX_SETUP_PATHS: Final = 20
MAX_SETUP_SCRIPT_CHARS: Final = 4000
MAX_SETUP_TIMEOUT_MINUTES: Final = 120
DEFAULT_SETUP_TIMEOUT_MINUTES: Final = 15
_MAX_PATH_CHARS: Final = 200


def path_error(value: str, home_allowed: bool) -> str | None:
    """Why `value` cannot be a setup path (None when it can): a relative path in the
    workspace (or, when `home_allowed`, `~/...` in the agent's home), never `..`, `.git`,
    an absolute path or the whole workspace."""
    rest = value.removeprefix(HOME_PREFIX) if home_allowed else value
    parts = rest.split("/")
    if not value or len(value) > _MAX_PATH_CHARS or any(not c.isprintable() for c in value):
        return f"should be a path of up to {_MAX_PATH_CHARS} printable characters"
    if value.startswith("~") and not (home_allowed and value.startswith(HOME_PREFIX)):
        return (
            "should start with `~/` only, for a directory in the agent's home"
            if home_allowed
            else "should be a file in the repository"
        )
    if value.startswith("/"):
        return "should be relative to the workspace, like `node_modules`" + (
            ", or start with `~/` for the agent's home" if home_allowed else ""
        )
    if any(part in ("", ".", "..") for part in parts):
        return "should not hold `.`, `..`, `//` or end in `/`"
    if rest == value and parts[0] == ".git":
        return "should not be in `.git`: the workspace's git data is never cached"
    return None


def _workspace_or_home(value: str) -> str:
    if error := path_error(value, home_allowed=True):
        raise ValueError(error)
    return value


def _workspace_file(value: str) -> str:
    if error := path_error(value, home_allowed=False):
        raise ValueError(error)
    return value


SetupPath = Annotated[str, AfterValidator(_workspace_or_home)]
"""One entry of `paths`: `node_modules` (in /workspace) or `~/.npm` (in the agent's home)."""
KeyFile = Annotated[str, AfterValidator(_workspace_file)]
"""One entry of `cache_key`: a file in the repository, like `package-lock.json`."""


def overlapping(paths: list[str]) -> tuple[str, str] | None:
    """Two of `paths` where one holds the other (each is restored as a mount of its own)."""
    for index, one in enumerate(paths):
        for other in paths[index + 1 :]:
            if one == other or one.startswith(f"{other}/") or other.startswith(f"{one}/"):
                return one, other
    return None


class SetupSpec(BaseModel):
    """A repository's `setup:`: `run` once per cache key, keep `paths`, restore them in
    every later run (and preview) on the same key."""

    model_config = ConfigDict(frozen=True)

    run: str = Field(min_length=1, max_length=MAX_SETUP_SCRIPT_CHARS)
    """Bash, as the agent's user, in /workspace."""
    cache_key: list[KeyFile] = Field(default_factory=list, max_length=MAX_SETUP_PATHS)
    paths: list[SetupPath] = Field(min_length=1, max_length=MAX_SETUP_PATHS)
    allowed_hosts: list[str] = Field(default_factory=list)
    """Setup's own allowlist: the only hosts it reaches (none: no network at all)."""
    timeout_s: int = Field(
        default=DEFAULT_SETUP_TIMEOUT_MINUTES * 60, ge=1, le=MAX_SETUP_TIMEOUT_MINUTES * 60
    )

    @field_validator("paths")
    @classmethod
    def _apart(cls, value: list[str]) -> list[str]:
        if pair := overlapping(value):
            raise ValueError(f"`{pair[0]}` and `{pair[1]}` overlap; list each directory once")
        return value
