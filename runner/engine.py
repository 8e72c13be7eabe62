"""The run engine: a prompt, an agent in its own container, on a pipeline branch.

One call of `RunEngine.execute` prepares the workspace from the repository's
mirror, starts the agent's container, streams its normalised events, publishes
new commits as they appear, and always saves the work when the agent ends,
fails, times out or is stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
from pydantic import BaseModel

from runner import dockerclient, gitops
from runner.agents import get_adapter
from runner.agents.base import AgentAdapter
from runner.container import (
    LABEL_PIPELINE,
    LABEL_RUN,
    LABEL_RUNNER,
    AgentContainer,
    ContainerSpec,
    ExitInfo,
    ensure_volume,
)
from runner.diffsummary import DiffSummary, summarize_diff
from runner.errors import TrimoError
from runner.events import AgentEvent, FinalResult, Usage
from runner.job import (
    CommitInfo,
    Outcome,
    Pushed,
    RunEvent,
    RunFinished,
    RunRequest,
    RunStarted,
    Salvaged,
    run_event_adapter,
)
from runner.scrub import Scrubber
from runner.templating import render

EventSink = Callable[[RunEvent], None]
MAX_CONTEXT_CHARS = 40_000
MAX_PROMPT_BYTES = 120_000


class StopSignal:
    """Asks a running run to stop; the engine saves its work and reports it cancelled."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def stop(self, reason: str = "stopped on request") -> None:
        self.reason = reason
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None) -> bool:
        return self._event.wait(timeout)


@dataclass(frozen=True)
class EngineConfig:
    cache_dir: Path
    runner_id: str = "local"
    agent_uid: int = 1000
    stop_grace_seconds: float = 3.0
    push_interval_seconds: float = 2.0
    keep_ledger: bool = False
    """Record each run on disk while it goes, so a restarted runner can save abandoned work."""

    @property
    def mirrors_dir(self) -> Path:
        return self.cache_dir / "mirrors"

    @property
    def workspaces_dir(self) -> Path:
        return self.cache_dir / "workspaces"

    @property
    def ledger_dir(self) -> Path:
        return self.cache_dir / "runs" / gitops.repo_key(self.runner_id)


def workspace_path(config: EngineConfig, clone_url: str, pipeline: str) -> Path:
    return config.workspaces_dir / gitops.repo_key(clone_url) / pipeline


def home_volume_name(clone_url: str, pipeline: str) -> str:
    digest = hashlib.sha256(f"{clone_url}\0{pipeline}".encode()).hexdigest()[:20]
    return f"trimo-home-{digest}"


def autosave_message(prompt: str, outcome: Outcome, run_id: str) -> str:
    first = next((ln.strip() for ln in prompt.splitlines() if ln.strip()), "agent work")
    summary = first if len(first) <= 64 else first[:63] + "…"
    return render(
        "autosave_commit.txt.j2", summary=f"trimo: {summary}", outcome=outcome.value, run_id=run_id
    ).strip()


class _LedgerEntry(BaseModel):
    request: dict[str, Any]
    base_sha: str
    published_sha: str | None


@dataclass
class _RunState:
    """What the engine learns while a run is going."""

    published_sha: str | None
    last_pushed: str | None = None
    pushed_commits: int = 0
    final_result: FinalResult | None = None
    usage: Usage | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class RunEngine:
    """Executes `RunRequest`s on this machine."""

    def __init__(self, config: EngineConfig, client: docker.DockerClient | None = None) -> None:
        self.config = config
        self._client = client

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = dockerclient.connect()
        return self._client

    def execute(
        self, request: RunRequest, on_event: EventSink, stop: StopSignal | None = None
    ) -> RunFinished:
        """Run `request` to the end; every outcome, including Trimo's own errors, is returned."""
        scrubber = Scrubber(request.secret_values())

        def emit(event: RunEvent) -> None:
            clean = scrubber.scrub_json(event.model_dump(mode="json"))
            on_event(run_event_adapter.validate_python(clean))

        stop = stop or StopSignal()
        try:
            finished = self._execute(request, emit, stop)
        except TrimoError as exc:
            finished = RunFinished(run_id=request.run_id, outcome=Outcome.ERROR, reason=str(exc))
        emit(finished)
        return run_event_adapter.validate_python(
            scrubber.scrub_json(finished.model_dump(mode="json"))
        )  # type: ignore[return-value]

    def _execute(self, request: RunRequest, emit: EventSink, stop: StopSignal) -> RunFinished:
        adapter = get_adapter(request.agent)
        if request.branch == request.base_branch:
            raise TrimoError(
                f"Refusing to run on {request.branch!r}: it is the base branch.",
                "a pipeline works on its own branch",
            )
        client = self.client
        dockerclient.require_image(client, request.image)
        token = request.token.get_secret_value() if request.token else None
        mirror = gitops.ensure_mirror(self.config.mirrors_dir, request.repo.clone_url, token)
        ws_path = workspace_path(self.config, request.repo.clone_url, request.pipeline)
        with gitops.locked(ws_path.with_name(ws_path.name + ".lock")):
            workspace = gitops.prepare_workspace(
                ws_path, mirror, request.branch, request.base_branch
            )
            ledger = self._write_ledger(request, workspace)
            try:
                return self._run_in_workspace(
                    request, adapter, client, mirror, workspace, emit, stop, token
                )
            finally:
                if ledger is not None:
                    ledger.unlink(missing_ok=True)

    def _write_ledger(self, request: RunRequest, workspace: gitops.Workspace) -> Path | None:
        if not self.config.keep_ledger:
            return None
        self.config.ledger_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        entry = _LedgerEntry(
            request=request.dump_for_queue(),
            base_sha=workspace.base_sha,
            published_sha=workspace.published_sha,
        )
        path = self.config.ledger_dir / f"{request.run_id}.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(entry.model_dump_json())
        return path

    def recover_abandoned(self, on_event: EventSink) -> list[RunFinished]:
        """Save and report the runs an earlier process of this runner left behind."""
        recovered = []
        for path in sorted(self.config.ledger_dir.glob("*.json")):
            try:
                entry = _LedgerEntry.model_validate_json(path.read_text())
                request = RunRequest.model_validate(entry.request)
            except ValueError:
                path.unlink(missing_ok=True)
                continue
            recovered.append(self._recover(request, entry, on_event))
            path.unlink(missing_ok=True)
        return recovered

    def _recover(
        self, request: RunRequest, entry: _LedgerEntry, on_event: EventSink
    ) -> RunFinished:
        scrubber = Scrubber(request.secret_values())

        def emit(event: RunEvent) -> None:
            on_event(
                run_event_adapter.validate_python(
                    scrubber.scrub_json(event.model_dump(mode="json"))
                )
            )

        reason = "the runner stopped while this run was going; the work it had done was saved"
        try:
            for found in self.client.containers.list(
                all=True, filters={"label": f"{LABEL_RUN}={request.run_id}"}
            ):
                with contextlib.suppress(docker.errors.APIError):
                    found.remove(force=True)
            token = request.token.get_secret_value() if request.token else None
            mirror = gitops.ensure_mirror(self.config.mirrors_dir, request.repo.clone_url, token)
            path = workspace_path(self.config, request.repo.clone_url, request.pipeline)
            workspace = gitops.Workspace(path, request.branch, entry.base_sha, entry.published_sha)
            state = _RunState(published_sha=gitops.branch_sha(mirror, request.branch))
            run = _Run(request, mirror, workspace, emit, token, state)
            finished = run.save(Outcome.FAILURE, reason)
        except TrimoError as exc:
            finished = RunFinished(
                run_id=request.run_id, outcome=Outcome.ERROR, reason=f"{reason}, except: {exc}"
            )
        emit(finished)
        return finished

    def _run_in_workspace(
        self,
        request: RunRequest,
        adapter: AgentAdapter,
        client: docker.DockerClient,
        mirror: Path,
        workspace: gitops.Workspace,
        emit: EventSink,
        stop: StopSignal,
        token: str | None,
    ) -> RunFinished:
        state = _RunState(published_sha=workspace.published_sha)
        run = _Run(request, mirror, workspace, emit, token, state)
        labels = {
            LABEL_RUNNER: self.config.runner_id,
            LABEL_RUN: request.run_id,
            LABEL_PIPELINE: request.pipeline,
        }
        volume = home_volume_name(request.repo.clone_url, request.pipeline)
        resumed = ensure_volume(client, volume, {LABEL_PIPELINE: request.pipeline})
        context_dir = Path(tempfile.mkdtemp(prefix=f"trimo-{request.run_id}-"))
        container: AgentContainer | None = None
        exit_info: ExitInfo | None = None
        try:
            prompt = self._write_context(context_dir, request, adapter)
            user = self._prepare_ownership(workspace.path)
            container = AgentContainer(
                client,
                ContainerSpec(
                    image=request.image,
                    command=adapter.command(prompt, resume=resumed and bool(request.history)),
                    workspace=workspace.path,
                    context_dir=context_dir,
                    home_volume=volume,
                    user=user,
                    network=request.network,
                    resources=request.resources,
                    env={k: v.get_secret_value() for k, v in request.secrets.items()},
                    labels=labels,
                    name=f"trimo-{request.run_id}-{secrets.token_hex(3)}",
                ),
            )
            emit(
                RunStarted(
                    run_id=request.run_id,
                    runner=self.config.runner_id,
                    agent=adapter.name,
                    image=request.image,
                    branch=request.branch,
                    base_sha=workspace.base_sha,
                )
            )
            container.start()
            deadline = time.monotonic() + request.timeout_s
            done = threading.Event()
            timed_out = threading.Event()
            watchdog = threading.Thread(
                target=self._watch,
                args=(container, stop, deadline, done, timed_out),
                daemon=True,
            )
            pusher = threading.Thread(
                target=run.push_loop,
                args=(done, self.config.push_interval_seconds),
                daemon=True,
            )
            watchdog.start()
            pusher.start()
            try:
                for line in container.lines():
                    for event in adapter.parse_line(line):
                        self._observe(event, state)
                        emit(event)
                exit_info = container.wait(timeout=max(30, self.config.stop_grace_seconds + 30))
            finally:
                done.set()
                pusher.join()
            outcome, reason = self._outcome(exit_info, stop, timed_out.is_set(), state, request)
        except BaseException as exc:
            if container is not None:
                container.stop(0)
            outcome = Outcome.CANCELLED if isinstance(exc, KeyboardInterrupt) else Outcome.ERROR
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
            finished = run.save(outcome, reason)
            if isinstance(exc, TrimoError):
                return finished
            raise
        finally:
            if container is not None:
                container.remove()
            shutil.rmtree(context_dir, ignore_errors=True)
        return run.save(outcome, reason, exit_info)

    def _write_context(self, context_dir: Path, request: RunRequest, adapter: AgentAdapter) -> str:
        """Files the agent can read in /trimo; returns the prompt to give the agent."""
        context = (
            render("agent_context.md.j2", branch=request.branch, history=request.history)
            if request.history
            else ""
        )
        if len(context) > MAX_CONTEXT_CHARS:  # one argv item may not exceed 128 KiB
            context = "…(earlier runs left out)\n" + context[-MAX_CONTEXT_CHARS:]
        (context_dir / "context.md").write_text(context)
        (context_dir / "prompt.md").write_text(request.prompt)
        context_dir.chmod(0o755)
        for item in context_dir.iterdir():
            item.chmod(0o644)
        prompt = request.prompt
        if adapter.takes_context:
            prompt = render("agent_prompt.md.j2", context=context, prompt=prompt).strip()
        if len(prompt.encode()) > MAX_PROMPT_BYTES:
            raise TrimoError(
                f"The prompt is too long ({len(prompt.encode()) // 1024} KiB).",
                f"keep it under {MAX_PROMPT_BYTES // 1024} KiB",
            )
        return prompt

    def _prepare_ownership(self, workspace: Path) -> str:
        """The container's user; as root, hand the workspace to the agent's uid first."""
        if os.geteuid() != 0:
            return f"{os.getuid()}:{os.getgid()}"
        gitops.hand_over(workspace, self.config.agent_uid)
        return f"{self.config.agent_uid}:{self.config.agent_uid}"

    def _watch(
        self,
        container: AgentContainer,
        stop: StopSignal,
        deadline: float,
        done: threading.Event,
        timed_out: threading.Event,
    ) -> None:
        while not done.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out.set()
                container.stop(self.config.stop_grace_seconds)
                return
            if stop.wait(min(remaining, 0.2)):
                container.stop(self.config.stop_grace_seconds)
                return

    @staticmethod
    def _observe(event: AgentEvent, state: _RunState) -> None:
        if isinstance(event, FinalResult):
            state.final_result = event
        elif isinstance(event, Usage):
            state.usage = _add_usage(state.usage, event)

    def _outcome(
        self,
        exit_info: ExitInfo | None,
        stop: StopSignal,
        timed_out: bool,
        state: _RunState,
        request: RunRequest,
    ) -> tuple[Outcome, str]:
        if stop.is_set():
            return Outcome.CANCELLED, stop.reason or "stopped on request"
        if timed_out:
            minutes = request.timeout_s / 60
            return Outcome.TIMED_OUT, f"the agent ran longer than the {minutes:g}-minute limit"
        if exit_info is None:
            return Outcome.ERROR, "the container's exit status is unknown"
        if exit_info.oom_killed:
            return (
                Outcome.FAILURE,
                f"out of memory: the agent used more than its {request.resources.memory} limit",
            )
        if exit_info.exit_code != 0:
            return Outcome.FAILURE, f"the agent exited with code {exit_info.exit_code}"
        if state.final_result is not None and not state.final_result.success:
            return Outcome.FAILURE, state.final_result.text or "the agent reported failure"
        return Outcome.SUCCESS, ""


@dataclass
class _Run:
    """One run's git side: where its work is, where it goes, and what was published."""

    request: RunRequest
    mirror: Path
    workspace: gitops.Workspace
    emit: EventSink
    token: str | None
    state: _RunState

    def push_loop(self, done: threading.Event, interval: float) -> None:
        """Publish commits as they appear, so a crash loses nothing that was committed."""
        while not done.wait(interval):
            with contextlib.suppress(TrimoError, subprocess.SubprocessError):
                self.publish_head(final=False)

    def publish_head(self, final: bool) -> str | None:
        """Copy the workspace's HEAD into the mirror and fast-forward the pipeline branch to it."""
        request, mirror, state = self.request, self.mirror, self.state
        with state.lock:
            head = gitops.fetch_head_into(mirror, self.workspace.path, request.run_id)
            previous = state.last_pushed or state.published_sha or self.workspace.base_sha
            if head is None or head == previous:
                return head
            if not gitops.is_ancestor(mirror, previous, head):
                if not final:
                    return head  # the agent may still be rewriting; decide at the end
                ref = f"refs/trimo/salvage/{request.run_id}"
                gitops.push(mirror, request.repo.clone_url, head, ref, self.token)
                self.emit(Salvaged(ref=ref, sha=head))
                return head
            branch_ref = f"refs/heads/{request.branch}"
            gitops.push(mirror, request.repo.clone_url, head, branch_ref, self.token)
            new = len(gitops.commits_between(mirror, previous, head))
            state.last_pushed = head
            state.pushed_commits += new
            self.emit(Pushed(branch=request.branch, sha=head, commits=new))
            return head

    def save(self, outcome: Outcome, reason: str, exit_info: ExitInfo | None = None) -> RunFinished:
        """Commit leftovers, publish (fast-forward only, or salvage), summarise the run."""
        request, mirror, workspace, state = self.request, self.mirror, self.workspace, self.state
        gitops.sanitize(workspace.path, mirror)
        gitops.commit_leftovers(
            workspace.path, autosave_message(request.prompt, outcome, request.run_id)
        )
        head = self.publish_head(final=True)
        salvage_ref = None
        commits: list[CommitInfo] = []
        diff = DiffSummary()
        tip = state.last_pushed or state.published_sha or workspace.base_sha
        if tip != workspace.base_sha:
            commits = gitops.commits_between(mirror, workspace.base_sha, tip)
            diff = summarize_diff(gitops.diff_text(mirror, workspace.base_sha, tip))
        if head is not None and head != tip:
            salvage_ref = f"refs/trimo/salvage/{request.run_id}"
            reason = (reason + "; " if reason else "") + (
                "the agent rewrote the branch's history, so its work was kept on "
                f"{salvage_ref} instead of being force-pushed"
            )
            if outcome is Outcome.SUCCESS:
                outcome = Outcome.FAILURE
        return RunFinished(
            run_id=request.run_id,
            outcome=outcome,
            reason=reason,
            exit_code=exit_info.exit_code if exit_info else None,
            head_sha=tip,
            commits=commits,
            diff=diff,
            salvage_ref=salvage_ref,
            usage=state.usage,
        )


def _add_usage(total: Usage | None, more: Usage) -> Usage:
    if total is None:
        return more
    cost = (
        None
        if total.cost_usd is None and more.cost_usd is None
        else (total.cost_usd or 0) + (more.cost_usd or 0)
    )
    return Usage(
        model=more.model or total.model,
        input_tokens=total.input_tokens + more.input_tokens,
        output_tokens=total.output_tokens + more.output_tokens,
        cache_read_tokens=total.cache_read_tokens + more.cache_read_tokens,
        cost_usd=cost,
    )
