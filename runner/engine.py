"""The run engine: a prompt, an agent in its own container, on a pipeline branch.

One call of `RunEngine.execute` prepares the workspace from the repository's
mirror, starts the agent's container, streams its normalised events, publishes
new commits as they appear, and always saves the work when the agent ends,
fails, times out or is stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
from pydantic import BaseModel

from runner import disk, dockerclient, gitops
from runner.agents import get_adapter
from runner.agents.base import AgentAdapter
from runner.container import (
    LABEL_PIPELINE,
    LABEL_RUN,
    LABEL_RUNNER,
    READY_LINE,
    AgentContainer,
    ContainerSpec,
    ExitInfo,
    export_command,
    run_helper,
)
from runner.delivery import BUNDLE_NAME, Delivery, Exporter, RunState, Start, starting_point
from runner.errors import TrimoError, WorkspaceError
from runner.events import AgentEvent, FinalResult, Usage
from runner.handoff import Limits
from runner.job import Outcome, RunEvent, RunFinished, RunRequest, RunStarted, run_event_adapter
from runner.pipelinedir import PipelineDir
from runner.scrub import Scrubber
from runner.templating import render

log = logging.getLogger(__name__)
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
    disk_bytes: int = 10 * 1024**3
    """Each pipeline's workspace and home share a filesystem of this size (0: no limit)."""
    limits: Limits = field(default_factory=Limits)

    @property
    def mirrors_dir(self) -> Path:
        return self.cache_dir / "mirrors"

    @property
    def ledger_dir(self) -> Path:
        return self.cache_dir / "runs" / gitops.repo_key(self.runner_id)


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
    pid: int = 0


class _WorkspaceBroken(Exception):
    """The sandbox could not bring the workspace to the run's start (its `.git` is damaged)."""


class _Saved(BaseException):
    """A run interrupted by a BaseException, after its work was saved."""

    def __init__(self, finished: RunFinished) -> None:
        super().__init__(finished.reason)
        self.finished = finished


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

    @property
    def _owner(self) -> int | None:
        """Who owns what the agent writes: its uid when the runner is root, else the runner."""
        return self.config.agent_uid if os.geteuid() == 0 else None

    @property
    def _user(self) -> str:
        if os.geteuid() != 0:
            return f"{os.getuid()}:{os.getgid()}"
        return f"{self.config.agent_uid}:{self.config.agent_uid}"

    def execute(
        self, request: RunRequest, on_event: EventSink, stop: StopSignal | None = None
    ) -> RunFinished:
        """Run `request` to the end and emit exactly one RunFinished, whatever is raised."""
        scrubber = Scrubber(request.secret_values())

        def emit(event: RunEvent) -> None:
            on_event(_scrubbed(scrubber, event))

        stop = stop or StopSignal()
        try:
            finished = self._execute(request, emit, stop)
        except TrimoError as exc:
            finished = RunFinished(run_id=request.run_id, outcome=Outcome.ERROR, reason=str(exc))
        except _Saved as saved:
            emit(saved.finished)
            raise saved.__cause__ or KeyboardInterrupt from None
        except Exception:
            finished = _internal_error(request.run_id)
        emit(finished)
        return _scrubbed_finished(scrubber, finished)

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
        pipeline = PipelineDir.of(self.config.cache_dir, request.repo.clone_url, request.pipeline)
        pipeline.create()
        with (
            gitops.locked(pipeline.lock),
            disk.mounted(pipeline.path, self.config.disk_bytes) as root,
        ):
            start = starting_point(mirror, request)
            ledger = self._write_ledger(request, start)
            try:
                for attempt in (1, 2):
                    fresh = self._prepare_workspace(root, mirror, start, pipeline, request, attempt)
                    try:
                        return self._run_in_workspace(
                            request,
                            adapter,
                            client,
                            mirror,
                            root,
                            pipeline,
                            start,
                            emit,
                            stop,
                            token,
                            fresh,
                        )
                    except _WorkspaceBroken:
                        if attempt == 2:
                            raise WorkspaceError(
                                "the workspace could not be prepared in the sandbox",
                                "it will be made afresh on the next run",
                            ) from None
                        log.warning(
                            "workspace of %s was damaged; making it afresh", request.pipeline
                        )
                raise AssertionError("unreachable")
            finally:
                if ledger is not None:
                    ledger.unlink(missing_ok=True)

    def _prepare_workspace(
        self,
        root: Path,
        mirror: Path,
        start: Start,
        pipeline: PipelineDir,
        request: RunRequest,
        attempt: int,
    ) -> bool:
        """Make the workspace and home if they are missing (or damaged); True when made now."""
        workspace, home = root / "workspace", root / "home"
        if attempt > 1 or workspace.is_symlink() or not workspace.is_dir():
            gitops.remove_tree(workspace)
            pipeline.forget_workspace()
            branches = [request.base_branch] + ([request.branch] if start.published_sha else [])
            gitops.create_workspace(workspace, mirror, branches, self._owner)
            made = True
        else:
            made = False
        if home.is_symlink() or not home.is_dir():
            gitops.remove_tree(home)
            home.mkdir(mode=0o700)
            if self._owner is not None:
                os.lchown(home, self._owner, self._owner)
        return made

    def _io_dir(self, root: Path, run_id: str) -> tuple[Path, Path]:
        """The run's /trimo (host-written, read-only in the sandbox) and its out/ directory.

        On the pipeline's own filesystem, so no mount the container sees names a host path."""
        io = root / "io" / run_id
        gitops.remove_tree(io)
        io.parent.mkdir(mode=0o755, exist_ok=True)
        out = io / "out"
        out.mkdir(parents=True, mode=0o700)
        io.chmod(0o755)
        if self._owner is not None:
            os.lchown(out, self._owner, self._owner)
        return io, out

    def _write_ledger(self, request: RunRequest, start: Start) -> Path | None:
        if not self.config.keep_ledger:
            return None
        self.config.ledger_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        entry = _LedgerEntry(
            request=request.dump_for_queue(),
            base_sha=start.base_sha,
            published_sha=start.published_sha,
            pid=os.getpid(),
        )
        path = self.config.ledger_dir / f"{request.run_id}.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(entry.model_dump_json())
        return path

    def recover_abandoned(self, on_event: EventSink) -> list[RunFinished]:
        """Save and report the runs that earlier, dead processes of this runner left behind."""
        recovered = []
        for path in sorted(self.config.ledger_dir.glob("*.json")):
            try:
                entry = _LedgerEntry.model_validate_json(path.read_text())
                request = RunRequest.model_validate(entry.request)
            except ValueError:
                path.unlink(missing_ok=True)
                continue
            if entry.pid and entry.pid != os.getpid() and _alive(entry.pid):
                continue  # another process (a second `trimo run`) is still running it
            recovered.append(self._recover(request, entry, on_event))
            path.unlink(missing_ok=True)
        return recovered

    def _recover(
        self, request: RunRequest, entry: _LedgerEntry, on_event: EventSink
    ) -> RunFinished:
        scrubber = Scrubber(request.secret_values())

        def emit(event: RunEvent) -> None:
            on_event(_scrubbed(scrubber, event))

        reason = "the runner stopped while this run was going; the work it had done was saved"
        try:
            for found in self.client.containers.list(
                all=True, filters={"label": f"{LABEL_RUN}={request.run_id}"}
            ):
                with contextlib.suppress(docker.errors.APIError):
                    found.remove(force=True)
            token = request.token.get_secret_value() if request.token else None
            mirror = gitops.ensure_mirror(self.config.mirrors_dir, request.repo.clone_url, token)
            pipeline = PipelineDir.of(
                self.config.cache_dir, request.repo.clone_url, request.pipeline
            )
            pipeline.create()
            start = Start(request.branch, entry.base_sha, entry.published_sha)
            with (
                gitops.locked(pipeline.lock),
                disk.mounted(pipeline.path, self.config.disk_bytes) as root,
            ):
                io, out = self._io_dir(root, request.run_id)
                spec = self._spec(request, [], root, io, out, {})
                state = RunState(published_sha=gitops.branch_sha(mirror, request.branch))
                delivery = Delivery(
                    request, mirror, start, pipeline, out, emit, token, state, self.config.limits
                )
                try:
                    finished = delivery.save(
                        self._helper_exporter(spec),
                        Outcome.FAILURE,
                        reason,
                        autosave_message(request.prompt, Outcome.FAILURE, request.run_id),
                    )
                finally:
                    gitops.remove_tree(io)
        except TrimoError as exc:
            finished = RunFinished(
                run_id=request.run_id, outcome=Outcome.ERROR, reason=f"{reason}, except: {exc}"
            )
        except Exception:
            finished = _internal_error(request.run_id)
        emit(finished)
        return finished

    def _spec(
        self,
        request: RunRequest,
        command: list[str],
        root: Path,
        io: Path,
        out: Path,
        env: dict[str, str],
    ) -> ContainerSpec:
        return ContainerSpec(
            image=request.image,
            command=command,
            workspace=root / "workspace",
            context_dir=io,
            out_dir=out,
            home=root / "home",
            user=self._user,
            network=request.network,
            resources=request.resources,
            env=env,
            labels={
                LABEL_RUNNER: self.config.runner_id,
                LABEL_RUN: request.run_id,
                LABEL_PIPELINE: request.pipeline,
            },
            name=f"trimo-{request.run_id}-{secrets.token_hex(3)}",
        )

    def _helper_exporter(self, spec: ContainerSpec) -> Exporter:
        """Export from a short-lived helper sandbox (the agent's container has ended)."""

        def export(known: list[str], message: str | None) -> str:
            return run_helper(self.client, spec, export_command(BUNDLE_NAME, known, message))

        return export

    def _run_in_workspace(
        self,
        request: RunRequest,
        adapter: AgentAdapter,
        client: docker.DockerClient,
        mirror: Path,
        root: Path,
        pipeline: PipelineDir,
        start: Start,
        emit: EventSink,
        stop: StopSignal,
        token: str | None,
        fresh: bool,
    ) -> RunFinished:
        io, out = self._io_dir(root, request.run_id)
        try:
            return self._run_container(
                request,
                adapter,
                client,
                mirror,
                root,
                pipeline,
                start,
                emit,
                stop,
                token,
                fresh,
                io,
                out,
            )
        finally:
            gitops.remove_tree(io)

    def _run_container(
        self,
        request: RunRequest,
        adapter: AgentAdapter,
        client: docker.DockerClient,
        mirror: Path,
        root: Path,
        pipeline: PipelineDir,
        start: Start,
        emit: EventSink,
        stop: StopSignal,
        token: str | None,
        fresh: bool,
        io: Path,
        out: Path,
    ) -> RunFinished:
        state = RunState(published_sha=start.published_sha)
        resumed = not fresh and bool(pipeline.known())
        container: AgentContainer | None = None
        exit_info: ExitInfo | None = None
        delivery = Delivery(
            request, mirror, start, pipeline, out, emit, token, state, self.config.limits
        )
        try:
            prompt = self._write_context(io, request, adapter)
            branches = [request.base_branch] + ([request.branch] if start.published_sha else [])
            if not fresh:
                gitops.write_sync_bundle(mirror, io / "sync.bundle", branches, pipeline.known())
            env = {k: v.get_secret_value() for k, v in request.secrets.items()}
            env |= {"TRIMO_BRANCH": request.branch, "TRIMO_START": start.base_sha}
            command = adapter.command(prompt, resume=resumed and bool(request.history))
            spec = self._spec(request, command, root, io, out, env)
            container = AgentContainer(client, spec)
            container.start()
            lines = container.lines()
            if next(lines, "") != READY_LINE:
                raise _WorkspaceBroken
            running = container

            def exec_export(known: list[str], message: str | None) -> str:
                return running.exec(export_command(BUNDLE_NAME, known, message))

            emit(
                RunStarted(
                    run_id=request.run_id,
                    runner=self.config.runner_id,
                    agent=adapter.name,
                    image=request.image,
                    branch=request.branch,
                    base_sha=start.base_sha,
                )
            )
            deadline = time.monotonic() + request.timeout_s
            done = threading.Event()
            timed_out = threading.Event()
            watchdog = threading.Thread(
                target=self._watch,
                args=(container, stop, deadline, done, timed_out),
                daemon=True,
            )
            pusher = threading.Thread(
                target=delivery.push_loop,
                args=(exec_export, done, self.config.push_interval_seconds),
                daemon=True,
            )
            watchdog.start()
            pusher.start()
            try:
                for line in lines:
                    for event in adapter.parse_line(line):
                        self._observe(event, state)
                        emit(event)
                exit_info = container.wait(timeout=max(30, self.config.stop_grace_seconds + 30))
            finally:
                done.set()
                pusher.join()
            outcome, reason = self._outcome(exit_info, stop, timed_out.is_set(), state, request)
        except _WorkspaceBroken:
            raise
        except BaseException as exc:
            if container is not None:
                container.stop(0)
            interrupted = not isinstance(exc, Exception)
            if isinstance(exc, TrimoError):
                outcome, reason = Outcome.ERROR, str(exc)
            elif interrupted:
                outcome, reason = Outcome.CANCELLED, "interrupted"
            else:
                log.exception("run %s: unexpected error while the agent ran", request.run_id)
                outcome, reason = Outcome.ERROR, _internal_error(request.run_id).reason
            save_message = autosave_message(request.prompt, outcome, request.run_id)
            started = container.spec if container is not None else None
            finished = self._save(delivery, started, outcome, reason, save_message)
            if interrupted:
                raise _Saved(finished) from exc
            return finished
        finally:
            if container is not None:
                container.remove()
        save_message = autosave_message(request.prompt, outcome, request.run_id)
        return self._save(delivery, container.spec, outcome, reason, save_message, exit_info)

    def _save(
        self,
        delivery: Delivery,
        spec: ContainerSpec | None,
        outcome: Outcome,
        reason: str,
        message: str,
        exit_info: ExitInfo | None = None,
    ) -> RunFinished:
        if spec is None:  # the container never existed: nothing can have changed
            return RunFinished(run_id=delivery.request.run_id, outcome=outcome, reason=reason)
        exit_code = exit_info.exit_code if exit_info else None
        return delivery.save(self._helper_exporter(spec), outcome, reason, message, exit_code)

    def _write_context(self, context_dir: Path, request: RunRequest, adapter: AgentAdapter) -> str:
        """Files the agent can read in /trimo; returns the prompt to give the agent."""
        context = (
            render("agent_context.md.j2", branch=request.branch, history=request.history)
            if request.history
            else ""
        )
        if len(context) > MAX_CONTEXT_CHARS:  # one argv item may not exceed 128 KiB
            context = "…(earlier runs left out)\n" + context[-MAX_CONTEXT_CHARS:]
        for name, text in (("context.md", context), ("prompt.md", request.prompt)):
            (context_dir / name).write_text(text)
            (context_dir / name).chmod(0o644)
        prompt = request.prompt
        if adapter.takes_context:
            prompt = render("agent_prompt.md.j2", context=context, prompt=prompt).strip()
        if len(prompt.encode()) > MAX_PROMPT_BYTES:
            raise TrimoError(
                f"The prompt is too long ({len(prompt.encode()) // 1024} KiB).",
                f"keep it under {MAX_PROMPT_BYTES // 1024} KiB",
            )
        return prompt

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
    def _observe(event: AgentEvent, state: RunState) -> None:
        if isinstance(event, FinalResult):
            state.final_result = event
        elif isinstance(event, Usage):
            state.usage = _add_usage(state.usage, event)

    def _outcome(
        self,
        exit_info: ExitInfo | None,
        stop: StopSignal,
        timed_out: bool,
        state: RunState,
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


def _scrubbed(scrubber: Scrubber, event: RunEvent) -> RunEvent:
    return run_event_adapter.validate_python(scrubber.scrub_json(event.model_dump(mode="json")))


def _scrubbed_finished(scrubber: Scrubber, finished: RunFinished) -> RunFinished:
    clean = _scrubbed(scrubber, finished)
    assert isinstance(clean, RunFinished)
    return clean


def _internal_error(run_id: str) -> RunFinished:
    """A run that Trimo itself broke: a reason for the person, the traceback for the operator."""
    reference = secrets.token_hex(4)
    log.exception("run %s failed inside Trimo (reference %s)", run_id, reference)
    return RunFinished(
        run_id=run_id,
        outcome=Outcome.ERROR,
        reason=f"Trimo failed on the runner (reference {reference} in the runner's log)",
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
