"""The job contract: what a run request holds and what events a run emits.

`app/` builds `RunRequest`s and reads `RunEvent`s; `runner/` executes them.
Everything here is plain data (pydantic), serialisable to JSON for Redis.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    field_validator,
)

from runner.contract import (
    DEFAULT_IMAGE,
    DEFAULT_TIMEOUT_SECONDS,
    DEFAULT_VERIFY_TIMEOUT_SECONDS,
    ID_PATTERN,
    MAX_LAST_WORD_CHARS,
    MAX_TIMEOUT_SECONDS,
    MAX_VERIFY_CHECKS,
    MAX_VERIFY_TIMEOUT_SECONDS,
    NetworkMode,
    RunMode,
)
from runner.diffsummary import DiffSummary
from runner.events import (
    AgentError,
    AssistantMessage,
    FinalResult,
    RawLog,
    ToolCall,
    ToolResult,
    Usage,
)
from runner.setup.spec import SetupSpec

_BRANCH_RE = re.compile(
    r"^(?![/.-])(?!.*//)(?!.*\.\.)(?!.*/[.-])(?!.*\.lock(?:/|$))(?!.*[/.]$)[A-Za-z0-9._/-]{1,200}$"
)
_NAME_RE = re.compile(ID_PATTERN)
_CHECK_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,39}")


def is_valid_name(name: str) -> bool:
    """Run ids and pipeline names: one path component, never `.`, `..` or an option."""
    return bool(_NAME_RE.fullmatch(name))


def is_valid_branch_name(name: str) -> bool:
    """A conservative subset of git's ref-name rules, safe on any command line: no `..`,
    no component starting with `.` or `-`, no `.lock` component, no control characters."""
    return bool(_BRANCH_RE.fullmatch(name))


class Outcome(StrEnum):
    """How a run ended."""

    SUCCESS = "success"
    FAILURE = "failure"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    ERROR = "error"  # Trimo itself could not run it (image missing, Docker down, refused)


class Resources(BaseModel):
    """Limits for the agent's container."""

    model_config = ConfigDict(frozen=True)

    memory: str = "4g"
    cpus: float = Field(default=2.0, gt=0, le=64)
    pids: int = Field(default=1024, ge=16, le=65536)


class CommitInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    sha: str
    subject: str


class RunRecord(BaseModel):
    """One finished run in a pipeline's history; given as context to later runs."""

    run_id: str
    prompt: str
    agent: str
    mode: RunMode = "code"
    plan: str = ""
    """A discovery run's findings and plan (the agent's final message)."""
    outcome: Outcome
    reason: str = ""
    commits: list[CommitInfo] = Field(default_factory=list)
    diff: DiffSummary = Field(default_factory=DiffSummary)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: str = ""
    """For a picked attempt: which attempts ran, how they ranked, why it was kept."""


class ReviewContext(BaseModel):
    """Where a review comment that asked for a run points: its file, line and diff hunk.

    Agents that read prose get it after the prompt (`templates/agent_review.md.j2`); a
    script agent's prompt is a script and gets nothing added.
    """

    model_config = ConfigDict(frozen=True)

    path: str
    line: int | None = None
    diff_hunk: str = ""

    @property
    def fence(self) -> str:
        """A code fence no line of the diff hunk can close."""
        longest = max((len(run) for run in re.findall(r"`{3,}", self.diff_hunk)), default=0)
        return "`" * max(3, longest + 1)


class FailingCheck(BaseModel):
    """A check that failed on the pipeline's branch, as the Checks API or verify told it."""

    model_config = ConfigDict(frozen=True)

    name: str
    conclusion: str
    title: str = ""
    summary: str = ""
    verify: bool = False
    """A check of the repository's `verify:`, run by Trimo (not one of GitHub's)."""


class VerifyCheck(BaseModel):
    """One check of `verify:`: a bash command run on the pushed head in a fresh sandbox."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    run: str = Field(min_length=1, max_length=4000)

    @field_validator("name")
    @classmethod
    def _name_ok(cls, value: str) -> str:
        if not _CHECK_NAME_RE.fullmatch(value) or value != value.strip():
            raise ValueError("should be up to 40 letters, digits, spaces, ., - or _, like tests")
        return value

    @field_validator("run")
    @classmethod
    def _run_ok(cls, value: str) -> str:
        if not value.strip() or "\0" in value:
            raise ValueError("should be a command, like npm test")
        return value


def unique_checks(checks: list[VerifyCheck]) -> list[VerifyCheck]:
    """`checks` if their names are unique; ValueError naming the first repeated one."""
    seen: set[str] = set()
    for check in checks:
        if check.name in seen:
            raise ValueError(f"has two checks named {check.name!r}; give each its own name")
        seen.add(check.name)
    return checks


VerifyChecks = Annotated[
    list[VerifyCheck],
    Field(max_length=MAX_VERIFY_CHECKS),
    AfterValidator(unique_checks),
]
"""`verify:` as a repository writes it: at most `MAX_VERIFY_CHECKS`, each name once."""
VerifyMinutes = Annotated[
    int,
    Field(ge=1, le=MAX_VERIFY_TIMEOUT_SECONDS // 60, strict=True),
]
"""`verify_timeout_minutes`: each check's limit."""


class CheckResult(BaseModel):
    """How one verify check ended. `log_tail` is the end of its output: hostile text, made
    printable and capped by the runner."""

    model_config = ConfigDict(frozen=True)

    name: str
    passed: bool
    exit_code: int | None = None
    seconds: float = 0.0
    timed_out: bool = False
    problem: str = ""
    """Why Trimo could not run it (the check did not pass then either)."""
    log_tail: str = ""


class VerifyReport(BaseModel):
    """The checks of `verify:` as they ran on commit `sha`, in a fresh sandbox each."""

    model_config = ConfigDict(frozen=True)

    sha: str
    checks: list[CheckResult] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failing(self) -> list[str]:
        return [check.name for check in self.checks if not check.passed]


def checks_failing_reason(report: VerifyReport) -> str:
    """A run's reason when its verify failed: `checks failing: tests, lint`."""
    return "checks failing: " + ", ".join(report.failing)


class RepoRef(BaseModel):
    """Where the repository lives. `clone_url` may be a path for local mode."""

    model_config = ConfigDict(frozen=True)

    full_name: str
    clone_url: str


class RunRequest(BaseModel):
    """Everything a runner needs to execute one run."""

    run_id: str
    pipeline: str
    repo: RepoRef
    branch: str
    base_branch: str
    from_branch: str | None = None
    """A `branch` that does not exist yet starts from this branch's head when it exists
    (an attempt starts from its pipeline's branch), else from `base_branch`."""
    prompt: str
    mode: RunMode = "code"
    """`discover`: read-only; nothing is pushed and the workspace is thrown away after."""
    review: ReviewContext | None = None
    """Set when a review comment asked for the run."""
    failing_checks: list[FailingCheck] = Field(default_factory=list)
    """For a run started by failing checks: those checks, for the agent's context."""
    agent: str = "claude"
    image: str = DEFAULT_IMAGE
    timeout_s: int = Field(default=DEFAULT_TIMEOUT_SECONDS, ge=1, le=MAX_TIMEOUT_SECONDS)
    network: NetworkMode = "allowlist"
    allowed_hosts: list[str] = Field(default_factory=list)
    """Hosts the repository adds to the agent's own API hosts on an `allowlist` network."""
    resources: Resources = Field(default_factory=Resources)
    max_cost_usd: float | None = Field(default=None, gt=0)
    """The run is stopped, its work saved, once its agent reports spending this much."""
    budget_cap: str | None = Field(default=None, max_length=300)
    """The monthly cap that set `max_cost_usd` (what was left of it), named in the stop."""
    budget_shown: bool = True
    """False: the stop does not print the budget (what was left of a person's cap)."""
    setup: SetupSpec | None = None
    """The repository's environment setup: its `paths` are in place when the agent starts."""
    history: list[RunRecord] = Field(default_factory=list)
    verify: list[VerifyCheck] = Field(default_factory=list, max_length=MAX_VERIFY_CHECKS)
    """Checks run on the pushed head after a coding run that made commits (never a
    discovery run), each in a fresh sandbox with the run's image, limits and network."""
    verify_timeout_s: int = Field(
        default=DEFAULT_VERIFY_TIMEOUT_SECONDS, ge=1, le=MAX_VERIFY_TIMEOUT_SECONDS
    )
    """Each check's time limit."""
    runner_label: str = "default"
    token: SecretStr | None = None
    """Repository-scoped token used by the runner for fetch and push; never enters the container."""
    secrets: dict[str, SecretStr] = Field(default_factory=dict)
    """Environment variables given to the agent (API keys); scrubbed from all output."""

    @field_validator("run_id", "pipeline")
    @classmethod
    def _name_ok(cls, value: str) -> str:
        if not is_valid_name(value):
            raise ValueError(f"not a safe name: {value!r}")
        return value

    @field_validator("branch", "base_branch", "from_branch")
    @classmethod
    def _branch_ok(cls, value: str | None) -> str | None:
        if value is not None and not is_valid_branch_name(value):
            raise ValueError(f"not a safe branch name: {value!r}")
        return value

    def secret_values(self) -> list[str]:
        values = [s.get_secret_value() for s in self.secrets.values()]
        if self.token is not None:
            values.append(self.token.get_secret_value())
        return [v for v in values if v]

    def dump_for_queue(self) -> dict[str, object]:
        """JSON-able form with secrets revealed, for the job queue only."""
        data = self.model_dump(mode="json")
        data["token"] = self.token.get_secret_value() if self.token else None
        data["secrets"] = {k: v.get_secret_value() for k, v in self.secrets.items()}
        return data


def now() -> datetime:
    return datetime.now(UTC)


class _RunEvent(BaseModel):
    model_config = ConfigDict(frozen=True)


class RunStarted(_RunEvent):
    type: Literal["started"] = "started"
    run_id: str
    runner: str
    agent: str
    mode: RunMode = "code"
    image: str
    branch: str
    base_sha: str
    at: datetime = Field(default_factory=now)


class Pushed(_RunEvent):
    type: Literal["pushed"] = "pushed"
    branch: str
    sha: str
    commits: int


class Salvaged(_RunEvent):
    """The agent rewrote published history; its work was kept on `ref`, not force-pushed."""

    type: Literal["salvaged"] = "salvaged"
    ref: str
    sha: str


class PushRefused(_RunEvent):
    """The remote refused some of the run's commits; they are kept on the runner under
    `kept_ref` and the next run of the pipeline continues from them."""

    type: Literal["push_refused"] = "push_refused"
    branch: str
    sha: str
    """The first commit the remote refused."""
    reason: str
    """The remote's own reason, cut to its first line."""
    paths: list[str] = Field(default_factory=list)
    """Files that commit changed (the likely culprits), at most a few."""
    kept_ref: str


KeptAction = Literal["continued", "replayed", "branch", "bundle", "runner"]
KeptWhy = Literal["", "conflict", "replay_failed", "unverified", "beside_newer"]


class Kept(_RunEvent):
    """What became of the commits an earlier run of the pipeline kept (refused, or not
    pushed), told when the next run starts: it `continued` from them; the branch had moved
    on, so they were `replayed` on its new head; or they were set aside, `why` says why, on
    a `branch`, as a `bundle` in Trimo's store (entry `entry`, on the dashboard) or, when
    neither could be had, on this `runner` only (as `ref`)."""

    type: Literal["kept"] = "kept"
    action: KeptAction
    kept_by: str
    """The run that kept them ("" when no record says)."""
    commits: int
    sha: str
    """Their head; after a replay, the replayed head."""
    why: KeptWhy = ""
    problem: str = ""
    """What failed, for `replay_failed` and `unverified`."""
    branch: str = ""
    refused: str = ""
    """Why the remote did not take them as a kept branch."""
    entry: str = ""
    unstored: str = ""
    """Why Trimo's store could not keep them either."""
    ref: str = ""


class Verifying(_RunEvent):
    """The agent has ended and its work is pushed: the checks of `verify:` run on `sha`."""

    type: Literal["verifying"] = "verifying"
    sha: str
    checks: list[str]
    at: datetime = Field(default_factory=now)


class EgressBlocked(_RunEvent):
    """Hosts the egress proxy refused during the run, with how often each was refused."""

    type: Literal["egress_blocked"] = "egress_blocked"
    hosts: dict[str, int]


class LogLimited(_RunEvent):
    """The run's agent events reached its log budget (`TRIMO_RUN_LOG_MAX`): later lines are
    not kept, and `RunFinished.lines_not_kept` says how many."""

    type: Literal["log_limited"] = "log_limited"
    limit_bytes: int


class RunFinished(_RunEvent):
    type: Literal["finished"] = "finished"
    run_id: str
    outcome: Outcome
    reason: str = ""
    exit_code: int | None = None
    head_sha: str | None = None
    commits: list[CommitInfo] = Field(default_factory=list)
    diff: DiffSummary = Field(default_factory=DiffSummary)
    salvage_ref: str | None = None
    refused: PushRefused | None = None
    usage: Usage | None = None
    plan: str = ""
    """A discovery run's findings and plan: the agent's final message (hostile text)."""
    last_word: str = Field(default="", max_length=MAX_LAST_WORD_CHARS)
    """A coding run's final message, cut short (hostile text): attempts show it."""
    lines_not_kept: int = 0
    """Lines of the agent's output that were not stored: over the run's log budget, or
    with no room to wait while Redis was away."""
    verify: VerifyReport | None = None
    """The checks of `verify:` on the pushed head; None when none ran."""
    at: datetime = Field(default_factory=now)


RunEvent = Annotated[
    AssistantMessage
    | ToolCall
    | ToolResult
    | Usage
    | AgentError
    | FinalResult
    | RawLog
    | RunStarted
    | Pushed
    | Salvaged
    | EgressBlocked
    | LogLimited
    | PushRefused
    | Kept
    | Verifying
    | RunFinished,
    Field(discriminator="type"),
]

run_event_adapter: TypeAdapter[RunEvent] = TypeAdapter(RunEvent)
