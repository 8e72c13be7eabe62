"""Verify: the repository's checks, each in a fresh sandbox on the run's pushed head.

After a coding run that made commits, each check of `verify:` runs in a container of its
own: the run's image, limits and network (its mode and the repository's hosts, never the
agent's API hosts or secrets), a new workspace made by the host from the trusted mirror
and checked out at the pushed head inside the sandbox, and a new, empty home. Nothing of
the agent's container, workspace or home is there, and nothing the agent printed counts:
a check passes when its own command exits 0.

A check's output is hostile (the code it runs is the agent's): only the end of it is
read, in bounded lines and at most `READ_MAX_BYTES`, made printable and cut to
`TAIL_CHARS`; each check is stopped at its time limit, or when the run is stopped.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, nullcontext
from pathlib import Path
from typing import Final

import docker.errors
import requests
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from runner import gitops
from runner.attempt import Host
from runner.container import (
    LABEL_PIPELINE,
    LABEL_RUN,
    LABEL_RUNNER,
    AgentContainer,
    ContainerSpec,
    ExitInfo,
    box_dirs,
    split_lines,
)
from runner.contract import (
    DEFAULT_VERIFY_TIMEOUT_SECONDS,
)
from runner.errors import TrimoError
from runner.job import (
    CheckResult,
    Outcome,
    RunFinished,
    RunRequest,
    VerifyCheck,
    VerifyChecks,
    Verifying,
    VerifyMinutes,
    VerifyReport,
    checks_failing_reason,
)
from runner.network.egress import attach
from runner.printable import printable

LABEL_VERIFY: Final = "dev.trimo.verify"
TAIL_LINES: Final = 60
TAIL_CHARS: Final = 4000
"""Of a check's output, the end a person reads (and a fixing agent is given)."""
READ_MAX_BYTES: Final = 4 * 1024 * 1024
"""The most of a check's output the runner reads to find its end."""
TAIL_LINE_MAX_BYTES: Final = 8 * 1024
WAIT_SLACK_SECONDS: Final = 60
SCRIPT: Final = """\
if ! git checkout -q --detach "$TRIMO_VERIFY_SHA" >/dev/null 2>&1; then
  echo "trimo: the sandbox could not check out $TRIMO_VERIFY_SHA" >&2
  exit 97
fi
unset TRIMO_VERIFY_SHA
exec bash -c "$TRIMO_VERIFY_RUN"
"""


Stopped = Callable[[float], bool]
"""Waits up to that many seconds; True when the run was asked to stop."""
Emit = Callable[[Verifying], None]
SetupHook = Callable[[ContainerSpec], AbstractContextManager[ContainerSpec]]
"""Gives a check's sandbox the run's cached `setup:` environment: the spec to start, with
the environment in place while the context lasts (the setup cache's to provide)."""


def _as_is(spec: ContainerSpec) -> AbstractContextManager[ContainerSpec]:
    return nullcontext(spec)


def proxy_id(run_id: str) -> str:
    """The egress proxy's id for a run's checks: short and safe whatever the run id's length
    (the proxy takes at most 100 characters), and never the run's own."""
    return "verify-" + hashlib.sha256(run_id.encode()).hexdigest()[:32]


def verify_ref(run_id: str) -> str:
    """The mirror's ref to the commit a run's checks run on, while they run."""
    return f"refs/trimo/verify/{run_id}"


def verify(
    boxes: Host,
    request: RunRequest,
    mirror: Path,
    place: Path,
    sha: str,
    emit: Emit,
    stopped: Stopped,
    protect: Callable[[str], None],
    with_setup: SetupHook = _as_is,
) -> VerifyReport:
    """Run each check of `request.verify` on commit `sha` of `mirror`, in order, each in a
    fresh sandbox under `place` (a directory on the pipeline's own disk, removed after),
    with the environment `with_setup` gives it."""
    emit(Verifying(sha=sha, checks=[check.name for check in request.verify]))
    ref = verify_ref(request.run_id)
    gitops.git(mirror, "update-ref", ref, sha)
    results: list[CheckResult] = []
    try:
        for index, check in enumerate(request.verify):
            if stopped(0):
                results.append(CheckResult(name=check.name, passed=False, problem="not run"))
                continue
            box = place / str(index)
            try:
                results.append(
                    _run_check(
                        boxes, request, mirror, ref, box, sha, check, stopped, protect, with_setup
                    )
                )
            except TrimoError as exc:
                results.append(CheckResult(name=check.name, passed=False, problem=str(exc)))
            finally:
                gitops.remove_tree(box)
    finally:
        gitops.git(mirror, "update-ref", "-d", ref, check=False)
        gitops.remove_tree(place)
    return VerifyReport(sha=sha, checks=results)


def _run_check(
    boxes: Host,
    request: RunRequest,
    mirror: Path,
    ref: str,
    box: Path,
    sha: str,
    check: VerifyCheck,
    stopped: Stopped,
    protect: Callable[[str], None],
    with_setup: SetupHook,
) -> CheckResult:
    gitops.remove_tree(box)
    box.mkdir(parents=True, mode=0o700)
    for name in ("context", "context/out", "out", "home"):  # /trimo/out's mount point
        (box / name).mkdir(mode=0o755 if name.startswith("context") else 0o700)
        if boxes.owner is not None and name in ("out", "home"):
            os.lchown(box / name, boxes.owner, boxes.owner)
    gitops.create_workspace(box / "workspace", mirror, [request.base_branch], boxes.owner, (ref,))
    with ExitStack() as stack:
        network = attach(
            boxes.client,
            request.network,
            proxy_id(request.run_id),
            request.allowed_hosts,
            boxes.runner_id,
            boxes.upstream_proxy,
            wait=False,
        )
        stack.callback(network.release)
        if network.secret:
            protect(network.secret)
        spec = ContainerSpec(
            image=request.image,
            command=["bash", "-c", SCRIPT],
            **box_dirs(box),
            user=boxes.user,
            network=request.network,
            network_name=network.network,
            dns=tuple(network.dns or ()),
            resources=request.resources,
            env={**network.env, "TRIMO_VERIFY_SHA": sha, "TRIMO_VERIFY_RUN": check.run},
            labels={
                LABEL_RUNNER: boxes.runner_id,
                LABEL_RUN: request.run_id,
                LABEL_PIPELINE: request.pipeline,
                LABEL_VERIFY: check.name,
            },
            name=f"trimo-{request.run_id}-verify-{secrets.token_hex(3)}",
        )
        container = AgentContainer(boxes.client, stack.enter_context(with_setup(spec)))
        stack.callback(container.remove)
        network.ready()
        began = time.monotonic()
        container.start()
        exit_info, timed_out, cancelled = _wait(
            container, request.verify_timeout_s, boxes.stop_grace_seconds, stopped
        )
        seconds = time.monotonic() - began
        tail = log_tail(_output(container))
    return _result(check, exit_info, timed_out, cancelled, seconds, tail, request)


def _wait(
    container: AgentContainer, limit: float, grace: float, stopped: Stopped
) -> tuple[ExitInfo | None, bool, bool]:
    """(how it exited, whether it ran out of time, whether the run was stopped)."""
    ended: list[ExitInfo] = []
    failed: list[BaseException] = []

    def wait() -> None:
        try:
            ended.append(container.wait(timeout=limit + grace + WAIT_SLACK_SECONDS))
        except (requests.RequestException, docker.errors.APIError) as exc:
            failed.append(exc)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    deadline = time.monotonic() + limit
    timed_out = cancelled = False
    while waiter.is_alive():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        if stopped(min(remaining, 0.2)):
            cancelled = True
            break
    if timed_out or cancelled:
        container.stop(grace)
    waiter.join(timeout=grace + WAIT_SLACK_SECONDS)
    return (ended[0] if ended else None), timed_out, cancelled


def _output(container: AgentContainer) -> Iterator[str]:
    """The check's last lines, each cut, reading at most `READ_MAX_BYTES`."""
    return split_lines(container.log_end(TAIL_LINES, READ_MAX_BYTES), TAIL_LINE_MAX_BYTES)


def log_tail(lines: Iterable[str]) -> str:
    """The end of a check's output for people: printable, at most `TAIL_CHARS`."""
    kept: deque[str] = deque(maxlen=TAIL_LINES)
    for line in lines:
        kept.append(printable(line))
    text = "\n".join(kept).strip("\n")
    return text if len(text) <= TAIL_CHARS else "…" + text[-(TAIL_CHARS - 1) :]


def _result(
    check: VerifyCheck,
    exit_info: ExitInfo | None,
    timed_out: bool,
    cancelled: bool,
    seconds: float,
    tail: str,
    request: RunRequest,
) -> CheckResult:
    code = exit_info.exit_code if exit_info is not None else None
    problem = ""
    if cancelled:
        problem = "stopped with the run"
    elif timed_out:
        problem = f"ran longer than its {request.verify_timeout_s / 60:g}-minute limit"
    elif exit_info is None:
        problem = "its sandbox's exit status is unknown"
    elif exit_info.oom_killed:
        problem = f"out of memory: it used more than the run's {request.resources.memory}"
    passed = code == 0 and not (timed_out or cancelled) and not problem
    return CheckResult(
        name=check.name,
        passed=passed,
        exit_code=code,
        seconds=round(seconds, 3),
        timed_out=timed_out,
        problem=problem,
        log_tail=tail,
    )


def with_report(finished: RunFinished, report: VerifyReport) -> RunFinished:
    """`finished` with what its checks said: a run whose checks fail is a failure (its
    reason says which), and its work stays pushed."""
    if report.passed:
        return finished.model_copy(update={"verify": report})
    failing = checks_failing_reason(report)
    if finished.outcome is Outcome.SUCCESS:
        outcome, reason = Outcome.FAILURE, [failing, finished.reason]
    else:
        outcome, reason = finished.outcome, [finished.reason, failing]
    return finished.model_copy(
        update={"verify": report, "outcome": outcome, "reason": "; ".join(filter(None, reason))}
    )


def unrun(request: RunRequest, sha: str, problem: str) -> VerifyReport:
    """A report of checks that Trimo itself could not run."""
    checks = [CheckResult(name=c.name, passed=False, problem=problem) for c in request.verify]
    return VerifyReport(sha=sha, checks=checks)


# --- `trimo run`: the checks of the local repository's own `.github/trimo.yml` -------------

CONFIG_PATH: Final = ".github/trimo.yml"
MAX_CONFIG_BYTES: Final = 64 * 1024


class _Section(BaseModel):
    """What `trimo run` reads of `.github/trimo.yml` (the App reads, and checks, the rest)."""

    model_config = ConfigDict(extra="ignore")

    verify: VerifyChecks = []
    verify_timeout_minutes: VerifyMinutes = DEFAULT_VERIFY_TIMEOUT_SECONDS // 60


def base_config(repo: Path, base_branch: str, hint: str) -> str | None:
    """`.github/trimo.yml` on `base_branch` of the person's own repository, as the App reads
    it from the default branch (None: there is none); TrimoError (with `hint`) if too big."""
    shown = gitops.git(repo, "show", f"{base_branch}:{CONFIG_PATH}", check=False)
    if shown.returncode != 0:
        return None
    if len(shown.stdout.encode()) > MAX_CONFIG_BYTES:
        where = f"{CONFIG_PATH} on {base_branch}"
        raise TrimoError(f"{where} is larger than {MAX_CONFIG_BYTES // 1024} KiB.", hint)
    return shown.stdout


def config_problem(exc: Exception) -> str:
    """What is wrong in a section of `.github/trimo.yml`, in one line (where, then what)."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        place = ".".join(str(part) for part in first["loc"])
        return f"{place}: {first['msg']}"
    return printable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def local_checks(repo: Path, base_branch: str) -> tuple[list[VerifyCheck], int]:
    """The checks (and each one's limit in seconds) of `.github/trimo.yml` on `base_branch`
    of the person's own repository, as the App reads them from the default branch."""
    text = base_config(repo, base_branch, VERIFY_HINT)
    if text is None:
        return [], DEFAULT_VERIFY_TIMEOUT_SECONDS
    return read_checks(text, f"{CONFIG_PATH} on {base_branch}")


VERIFY_HINT: Final = "fix it, or pass --no-verify"


def read_checks(text: str, where: str) -> tuple[list[VerifyCheck], int]:
    """The checks of a `.github/trimo.yml` text; TrimoError saying what is wrong."""
    if len(text.encode()) > MAX_CONFIG_BYTES:
        raise TrimoError(f"{where} is larger than {MAX_CONFIG_BYTES // 1024} KiB.", VERIFY_HINT)
    try:
        data = yaml.safe_load(text)
        section = _Section.model_validate(data if isinstance(data, dict) else {})
        checks = section.verify
    except (yaml.YAMLError, ValidationError, ValueError) as exc:
        raise TrimoError(
            f"{where} has a problem in its checks: {config_problem(exc)}", VERIFY_HINT
        ) from None
    return checks, section.verify_timeout_minutes * 60
