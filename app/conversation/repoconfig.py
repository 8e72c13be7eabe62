"""Per-repository configuration: `.github/trimo.yml` on the default branch.

`parse_repo_config` turns the file's text into a `RepoConfig`, or raises `ConfigError`
with a message (markdown) that tells people exactly what to fix.
"""

from __future__ import annotations

import difflib
import re
import reprlib
from collections.abc import Sequence
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic_core import ErrorDetails

from app.conversation.commands import MAX_TIMEOUT_MINUTES
from app.conversation.naming import inline_code, is_agent_name, is_runner_label
from runner.contract import (
    DEFAULT_PREVIEW_IDLE_MINUTES,
    DEFAULT_VERIFY_TIMEOUT_SECONDS,
    MAX_ATTEMPTS,
    MAX_PREVIEW_IDLE_MINUTES,
    MAX_VERIFY_CHECKS,
    NetworkMode,
)
from runner.job import VerifyCheck, VerifyChecks, VerifyMinutes, is_valid_branch_name
from runner.network.hosts import MAX_ALLOWED_HOSTS, HostPattern
from runner.ranking import DEFAULT_RANK_BY, PickMode, RankKey, parse_rank_by
from runner.setup.config import SetupConfig

CONFIG_PATH = ".github/trimo.yml"
MAX_CONFIG_BYTES = 64 * 1024

MinPermission = Literal["triage", "write", "maintain", "admin"]
CiFailure = Literal["off", "discover", "fix"]
"""What failing checks on a Trimo branch start: nothing, a discovery run or a fixing run."""
MAX_CI_FAILURE_ATTEMPTS = 10
MAX_VERIFY_FIX_ATTEMPTS = 10

_UNKNOWN_KEY_ERRORS = frozenset({"extra_forbidden", "invalid_key"})
_MEMORY_RE = re.compile(r"([1-9][0-9]{0,6})([kmg])", re.IGNORECASE)
_MEMORY_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3}
MIN_MEMORY_BYTES = 64 * 1024**2
_IMAGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}")
_PREFIX_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,49}")
MAX_COST_USD = 10_000.0
"""The largest budget a run may have (a typo of a few zeros is caught)."""


class ConfigError(ValueError):
    """`.github/trimo.yml` is broken; `message` says what is wrong, for people (markdown)."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems if problems is not None else [message]


def memory_bytes(text: str) -> int:
    """Bytes meant by a Docker memory size like `512m` or `4g`; ValueError if malformed."""
    match = _MEMORY_RE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not a memory size: {text!r}")
    return int(match.group(1)) * _MEMORY_UNITS[match.group(2).lower()]


class ResourcesConfig(BaseModel):
    """Container limits a repository asks for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory: str = "4g"
    cpus: float = Field(default=2.0, gt=0, le=64, strict=True)
    pids: int = Field(default=1024, ge=16, le=65536, strict=True)

    @field_validator("memory")
    @classmethod
    def _memory_ok(cls, value: str) -> str:
        try:
            size = memory_bytes(value)
        except ValueError:
            raise ValueError("should be a number followed by k, m or g, like 512m or 4g") from None
        if size < MIN_MEMORY_BYTES:
            raise ValueError("should be at least 64m")
        return value.strip().lower()


class PreviewConfig(BaseModel):
    """How to run the pipeline's branch as a live QA preview (`preview:`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: str = Field(min_length=1, max_length=4000)
    """Starts the app's server; `$PORT` is the port it must listen on, on 0.0.0.0."""
    setup: str = Field(default="", max_length=4000)
    port: int = Field(default=3000, ge=1, le=65535, strict=True)
    ready_path: str = "/"
    idle_minutes: int = Field(
        default=DEFAULT_PREVIEW_IDLE_MINUTES, ge=1, le=MAX_PREVIEW_IDLE_MINUTES, strict=True
    )
    image: str | None = None
    """None means the run image."""
    auto: bool = False
    """Start (or refresh) a preview after every successful run."""

    @field_validator("ready_path")
    @classmethod
    def _path_ok(cls, value: str) -> str:
        if not value.startswith("/") or any(c.isspace() or not c.isprintable() for c in value):
            raise ValueError("should be a path starting with /, like /health")
        return value

    @field_validator("image")
    @classmethod
    def _image_ok(cls, value: str | None) -> str | None:
        if value is not None and not _IMAGE_RE.fullmatch(value):
            raise ValueError(
                "should be a Docker image reference like registry.example.com/org/app:1.2"
            )
        return value


class RepoConfig(BaseModel):
    """What a repository asks of Trimo; the server's policy may still refuse some of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str = "claude"
    image: str | None = None
    """None means the server's default image."""
    runner_label: str = "default"
    timeout_minutes: int = Field(default=30, ge=1, le=MAX_TIMEOUT_MINUTES, strict=True)
    network: NetworkMode = "allowlist"
    allowed_hosts: list[HostPattern] = Field(default_factory=list, max_length=MAX_ALLOWED_HOSTS)
    """Hosts an `allowlist` run may reach besides its agent's API hosts."""
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    trigger_label: str = Field(default="trimo", min_length=1, max_length=50)
    discover_label: str = Field(default="trimo:discover", min_length=1, max_length=50)
    """Adding it to an issue starts a discovery run (read-only, answers with a plan)."""
    ci_failure: CiFailure = "off"
    ci_failure_attempts: int = Field(default=2, ge=1, le=MAX_CI_FAILURE_ATTEMPTS, strict=True)
    """Automatic runs in a row per pipeline before Trimo leaves failing checks to people."""
    min_permission: MinPermission = "write"
    branch_prefix: str = "trimo/"
    preview: PreviewConfig | None = None
    """None: this repository has no previews."""
    verify: VerifyChecks = []
    """Checks run after every coding run that made commits, each in a fresh sandbox."""
    verify_timeout_minutes: VerifyMinutes = DEFAULT_VERIFY_TIMEOUT_SECONDS // 60
    """Each check's time limit."""
    verify_fix_attempts: int = Field(default=0, ge=0, le=MAX_VERIFY_FIX_ATTEMPTS, strict=True)
    """Automatic runs in a row that get failing checks back to fix (0: only report)."""
    max_cost_usd: float | None = Field(default=None, gt=0, le=MAX_COST_USD, strict=True)
    """A run is stopped, its work saved, once its agent reports spending this much."""
    setup: SetupConfig | None = None
    """None: runs and previews start on a bare checkout."""
    attempts: int = Field(default=1, ge=1, le=MAX_ATTEMPTS, strict=True)
    """Attempts of every coding run's prompt, side by side, ranked when all have ended."""
    pick: PickMode = "manual"
    """`auto`: the top attempt is kept when it passed verification; `manual`: a person picks."""
    rank_by: list[RankKey] = Field(default_factory=lambda: list(DEFAULT_RANK_BY), min_length=1)
    """The order attempts are ranked in (see `runner.ranking`)."""

    @field_validator("rank_by", mode="before")
    @classmethod
    def _rank_by_ok(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and all(isinstance(word, str) for word in value):
            return list(parse_rank_by(value))
        return value

    @field_validator("agent")
    @classmethod
    def _agent_ok(cls, value: str) -> str:
        if not is_agent_name(value):
            raise ValueError(
                "should be an agent name: a lowercase letter, then up to 31 lowercase letters, "
                "digits, - or _"
            )
        return value

    @field_validator("image")
    @classmethod
    def _image_ok(cls, value: str | None) -> str | None:
        if value is not None and not _IMAGE_RE.fullmatch(value):
            raise ValueError(
                "should be a Docker image reference like registry.example.com/org/agent:1.2"
            )
        return value

    @field_validator("runner_label")
    @classmethod
    def _label_ok(cls, value: str) -> str:
        if not is_runner_label(value):
            raise ValueError("should be up to 64 letters, digits, ., - or _")
        return value

    @field_validator("ci_failure", mode="before")
    @classmethod
    def _off_is_off(cls, value: object) -> object:
        return "off" if value is False else value  # YAML reads a bare `off` as false

    @field_validator("trigger_label", "discover_label")
    @classmethod
    def _trigger_ok(cls, value: str) -> str:
        if not value.strip() or any(not char.isprintable() for char in value):
            raise ValueError("should be the name of a label, on one line")
        return value

    @field_validator("min_permission", mode="before")
    @classmethod
    def _not_read(cls, value: object) -> object:
        if value == "read":
            raise ValueError(
                "cannot be read, since then anyone who can read the repository could start "
                "agents; use triage, write, maintain or admin"
            )
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts_unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @field_validator("branch_prefix")
    @classmethod
    def _prefix_ok(cls, value: str) -> str:
        if (
            not _PREFIX_RE.fullmatch(value)
            or value.startswith("refs/")
            or not is_valid_branch_name(f"{value}1-slug")
        ):
            raise ValueError(
                "should be up to 50 letters, digits, ., -, _ or /, like trimo/ "
                "(no .., no //, not starting with refs/)"
            )
        return value


def parse_repo_config(text: str | None) -> RepoConfig:
    """Read `.github/trimo.yml`; None or an empty file gives the defaults."""
    if text is None or not text.strip():
        return RepoConfig()
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"`{CONFIG_PATH}` is larger than {MAX_CONFIG_BYTES // 1024} KiB; "
            "it only needs a few lines."
        )
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_message(exc)) from None
    if data is None:
        return RepoConfig()
    if not isinstance(data, dict):
        raise ConfigError(
            f"`{CONFIG_PATH}` should be a mapping of settings, like `agent: claude`, "
            f"but it holds {_describe(data)}."
        )
    try:
        return RepoConfig.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        problems = [_problem(error) for error in errors]
        unknown_in = {
            tuple(str(part) for part in error["loc"][:-1])
            for error in errors
            if error["type"] in _UNKNOWN_KEY_ERRORS
        }
        notes = [_known_settings(parents) for parents in sorted(unknown_in)]
        raise ConfigError(_join(problems, notes), problems) from None


def _yaml_message(exc: yaml.YAMLError) -> str:
    where = ""
    what = "it could not be read"
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        what = exc.problem or exc.context or what
    hint = ""
    if _unquoted_star(exc):
        hint = ' Quote a host pattern that starts with `*`, like `"*.example.com"`.'
    return f"`{CONFIG_PATH}` is not valid YAML{where}: {what}.{hint}"


def _unquoted_star(exc: yaml.YAMLError) -> bool:
    """Whether the broken line holds a `*` (YAML's alias mark), as in `- *.example.com`."""
    mark = getattr(exc, "problem_mark", None)
    buffer = getattr(mark, "buffer", None)
    if mark is None or not isinstance(buffer, str):
        return False
    lines = buffer.splitlines()
    return mark.line < len(lines) and "*" in lines[mark.line]


def _join(problems: list[str], notes: list[str]) -> str:
    if len(problems) == 1:
        text = f"`{CONFIG_PATH}` has a problem: {problems[0]}"
    else:
        items = "\n".join(f"- {problem}" for problem in problems)
        text = f"`{CONFIG_PATH}` has {len(problems)} problems:\n\n{items}"
    return "\n\n".join([text, *notes])


def _problem(error: ErrorDetails) -> str:
    loc = [str(part) for part in error["loc"]]
    path = ".".join(loc)
    if error["type"] in _UNKNOWN_KEY_ERRORS:
        return _unknown_key(loc)
    value = _short(error["input"])
    found = inline_code(value) if value.strip() else "nothing"
    message = error["msg"]
    if error["type"] == "value_error":
        message = message.removeprefix("Value error, ")
    elif error["type"] in {"int_type", "int_parsing", "int_from_float"}:
        message = "should be a whole number"
    elif error["type"] in {"float_type", "float_parsing"}:
        message = "should be a number"
    elif error["type"] == "string_type":
        message = "should be text"
    elif error["type"] == "string_too_short":
        message = "should not be empty"
    elif error["type"] == "list_type" and loc[:1] == ["verify"]:
        message = "should be a list of checks, like `[{name: tests, run: npm test}]`"
    elif error["type"] == "list_type":
        message = 'should be a list, like `[registry.example.com, "*.pkgs.example.com"]`'
    elif error["type"] == "too_long":
        most = MAX_VERIFY_CHECKS if loc[:1] == ["verify"] else MAX_ALLOWED_HOSTS
        message = f"should have at most {most} entries"
    elif error["type"] == "missing":
        return f"{inline_code(path, 40)} is missing: it is required here."
    elif error["type"] in {"model_type", "model_attributes_type"}:
        message = "should be a mapping of settings"
    elif message.startswith("Input "):
        message = message.removeprefix("Input ")
    else:
        message = message[:1].lower() + message[1:]
    return f"{inline_code(path, 40)} {message} (found {found})."


def _known(parents: Sequence[str]) -> list[str]:
    sections: dict[str, type[BaseModel]] = {
        "resources": ResourcesConfig,
        "preview": PreviewConfig,
        "verify": VerifyCheck,
        "setup": SetupConfig,
    }
    named = [part for part in parents if not part.isdigit()]  # `verify.0.nmae`: a check's
    model = sections.get(".".join(named), RepoConfig)
    return list(model.model_fields)


def _unknown_key(loc: list[str]) -> str:
    *parents, key = loc
    where = f" under {inline_code('.'.join(parents))}" if parents else ""
    guesses = difflib.get_close_matches(key.lower(), _known(parents), n=1)
    hint = f" Did you mean {inline_code(guesses[0])}?" if guesses else ""
    return f"Unknown setting {inline_code(key, 40)}{where}.{hint}"


def _known_settings(parents: Sequence[str]) -> str:
    names = ", ".join(inline_code(name) for name in _known(parents))
    where = f" under {inline_code('.'.join(parents))}" if parents else ""
    return f"Known settings{where}: {names}."


_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlevel = 2


def _short(value: Any) -> str:
    if isinstance(value, str):
        return value
    return _repr.repr(value)


def _describe(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "only text"
    return f"a single value ({inline_code(_short(value))})"
