"""What the App and the runners share, in one place: queue names, Redis keys, id patterns,
network modes and defaults. The job itself (what a run request holds, what events a run
emits) is `runner.job`; both sides import these, `runner/` imports nothing from `app/`.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Final, Literal, get_args

from pydantic import AfterValidator

# --- queues and keys -----------------------------------------------------------------------

RUN_FUNCTION: Final = "execute_run"
"""The arq function a runner executes for each queued run."""
RUNNERS: Final = "trimo:runners"
ACTIVE_RUNS: Final = "trimo:runs:active"
ALL_RUN_EVENTS: Final = "trimo:run-events"
"""One stream of every run's events (field `run_id`), consumed by the App's reporter group."""
EVENTS_MAXLEN: Final = 10_000
ALL_EVENTS_MAXLEN: Final = 200_000
CLOSED_PIPELINES: Final = "trimo:pipelines:closed"
"""Stream of closed pipelines (fields `clone_url`, `pipeline`): runners delete their disks."""
CLOSED_PIPELINES_MAXLEN: Final = 10_000
TOKEN_REQUESTS: Final = "trimo:token-requests"
"""Stream a runner adds to when it takes a run whose token is missing or old (field `run_id`)."""
TOKEN_TTL_SECONDS: Final = 50 * 60
"""How long a run's answered token waits under `run_token(run_id)` (tokens live 60 min)."""
RUN_LABELS: Final = "trimo:run-labels"
"""Every runner label the App has queued runs for (so /metrics shows queues no runner serves)."""
RUNNER_FIGURES: Final = "trimo:runner-figures"
"""Ids of the runners with a `runner_figures` hash (see `runner.figures`)."""
APP_VERSION: Final = "trimo:app-version"
"""The Trimo version of the App process that started last (runners' doctor compares)."""


def run_queue(label: str) -> str:
    return f"trimo:runs:{label}"


MAX_ATTEMPTS: Final = 16
"""The most attempts of one prompt any server allows (its own cap is at most this)."""


def attempt_pipeline(pipeline: str, number: int) -> str:
    """What a runner calls attempt `number` of `pipeline`: its own workspace, disk and kept
    work, so that a pipeline's attempts run side by side.

    A pipeline id too long for the suffix is cut and a hash of the whole id added: cut
    alone, `x.12` and `x.123` (or two repositories' ids) would share one on the runner."""
    suffix = f".a{number}"
    if len(pipeline) + len(suffix) <= 100:
        return pipeline.rstrip(".") + suffix
    digest = hashlib.sha256(pipeline.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{pipeline[: 100 - len(suffix) - 13].rstrip('.-')}-{digest}{suffix}"


PREVIEW_FUNCTION: Final = "start_preview"
"""The arq function a runner executes for each queued preview (its own queue, see
`preview_queue`: a preview never takes a run's slot or its pipeline's turn)."""
PREVIEW_EVENTS: Final = "trimo:preview-events"
"""One stream of every preview's events (fields `pipeline`, `event`), read by the App."""
PREVIEW_EVENTS_MAXLEN: Final = 10_000
DEFAULT_PREVIEW_IDLE_MINUTES: Final = 30
MAX_PREVIEW_IDLE_MINUTES: Final = 24 * 60


def preview_queue(label: str) -> str:
    return f"trimo:previews:{label}"


def preview_wanted(pipeline: str) -> str:
    """The id of the preview the App wants for `pipeline`; absent when it wants none. A
    runner stops a preview whose id is no longer here."""
    return f"trimo:preview:{pipeline}:wanted"


def run_events(run_id: str) -> str:
    return f"trimo:run:{run_id}:events"


def run_taken(run_id: str) -> str:
    """Which runner took the run (once, for good: a job picked up again is not run again)."""
    return f"trimo:run:{run_id}:taken"


def runner_info(runner_id: str) -> str:
    return f"trimo:runner:{runner_id}"


def runner_figures(runner_id: str) -> str:
    """A runner's measurements of its runs, read by the App's /metrics."""
    return f"trimo:runner:{runner_id}:figures"


def run_token(run_id: str) -> str:
    """Where the App puts a fresh token for `run_id` that a runner asked for."""
    return f"trimo:run:{run_id}:token"


KEPT_MAX_DEFAULT: Final = "200m"
"""`TRIMO_KEPT_MAX`: the most a pipeline's kept commits may take in Redis, as bundles."""
KEPT_CHUNK_BYTES: Final = 1 << 20
"""A kept bundle is stored as a list of chunks of this size: no one Redis call is large."""
KEPT_PENDING: Final = "pending"
"""The entry of `kept_work` that a pipeline's next run continues from."""


def kept_work(pipeline: str) -> str:
    """A hash of the pipeline's kept commits, whichever runner kept them (field: the entry's
    id, `KEPT_PENDING` or `kept-<n>`; value: a `runner.kept.KeptRecord` as JSON)."""
    return f"trimo:kept:{pipeline}"


def kept_bundle(pipeline: str, bundle_id: str) -> str:
    """One kept bundle's bytes, a list of `KEPT_CHUNK_BYTES` chunks."""
    return f"trimo:kept:{pipeline}:bundle:{bundle_id}"


# --- ids --------------------------------------------------------------------------------------

ID_PATTERN: Final = r"^(?![.-])(?!.*\.\.)[A-Za-z0-9._-]{1,100}$"
"""Run ids and pipeline ids: safe as a file name, a Redis key part and a job id."""
_ID_RE: Final = re.compile(ID_PATTERN)


def is_valid_id(value: str) -> bool:
    return bool(_ID_RE.match(value))


# --- runs -------------------------------------------------------------------------------------

NetworkMode = Literal["none", "allowlist", "bridge"]
NETWORK_MODES: Final[tuple[NetworkMode, ...]] = get_args(NetworkMode)
"""Every network mode, in the order people read them; `allowlist` is the default."""
DEFAULT_NETWORK: Final[NetworkMode] = "allowlist"
DEFAULT_IMAGE: Final = "trimo-agent:latest"
AGENTS: Final = ("aider", "claude", "codex", "script")
"""The agents a runner has an adapter for (`runner.agents.ADAPTERS`), in order."""
DEFAULT_AGENT: Final = "claude"
RunMode = Literal["code", "discover"]
"""`code` runs change the branch; `discover` runs are read-only and answer with a plan."""
MAX_PLAN_CHARS: Final = 30_000
"""The most of a discovery run's plan that is kept (GitHub comments hold 65,536)."""
MAX_LAST_WORD_CHARS: Final = 1_000
"""The most of a coding run's final message that its end carries (attempts show it)."""
DEFAULT_LABEL: Final = "default"
DEFAULT_TIMEOUT_SECONDS: Final = 30 * 60
MAX_TIMEOUT_SECONDS: Final = 24 * 3600
MAX_VERIFY_CHECKS: Final = 10
"""The most checks a repository's `verify:` may list."""
DEFAULT_VERIFY_TIMEOUT_SECONDS: Final = 10 * 60
MAX_VERIFY_TIMEOUT_SECONDS: Final = 2 * 3600
"""Each verify check's time limit: its default and its most."""
MAX_ATTEMPTS_DEFAULT: Final = 4
"""`TRIMO_POLICY_MAX_ATTEMPTS`'s default: the most attempts of one prompt at once."""
ATTEMPTS_KEEP_DAYS_DEFAULT: Final = 7
"""`TRIMO_ATTEMPTS_KEEP_DAYS`'s default: how long after a pick the other attempts' branches
stay (and a later pick may still switch)."""
RUNNER_LOST: Final = "stopped answering while the run was going"
"""How a run's reason says its runner was lost (`runner <id> ` goes before it)."""


def _checked_id(value: str) -> str:
    if not is_valid_id(value):
        raise ValueError(f"not a safe id: {value[:120]!r}")
    return value


SafeId = Annotated[str, AfterValidator(_checked_id)]
"""A pydantic field type for run and pipeline ids (`ID_PATTERN`)."""
