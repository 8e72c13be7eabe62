"""One attempt at a run: its /trimo files, network, container, events and save.

`RunEngine` prepares the mirror, the pipeline's disk and the workspace, then
hands an `Attempt` everything one run shares. The attempt starts the agent's
container (whose entrypoint first brings the workspace to the run's start),
streams the agent's events, pushes commits as they appear, stops the agent on
request or timeout, and always saves the work at the end.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import requests

from runner import gitops, warm
from runner.agents.base import AgentAdapter
from runner.agents.endpoints import (
    ANTHROPIC_BASE_URL,
    ANTHROPIC_KEY_ENV,
    CodexConfig,
    Endpoint,
    endpoint_of,
    read_codex_config,
)
from runner.container import (
    CODEX_HOME_MOUNT,
    KILLED,
    LABEL_PIPELINE,
    LABEL_RUN,
    LABEL_RUNNER,
    READY_LINE,
    AgentContainer,
    ContainerSpec,
    ExitInfo,
    export_command,
    run_helper,
    without_first,
)
from runner.delivery import (
    BUNDLE_NAME,
    Delivery,
    Exporter,
    RunState,
    Start,
    Unsaved,
    workspace_branches,
)
from runner.errors import TrimoError
from runner.events import AgentEvent, FinalResult, Usage, add_usage
from runner.handoff import Limits
from runner.job import EgressBlocked, Outcome, RunEvent, RunFinished, RunRequest, RunStarted
from runner.network.egress import NetworkAttachment, attach
from runner.phases import Phases
from runner.pipelinedir import PipelineDir
from runner.templating import render
from runner.warm import WarmBox, WarmContainer

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


class WorkspaceBroken(Exception):
    """The sandbox could not bring the workspace to the run's start (its `.git` is damaged)."""


class Saved(BaseException):
    """A run interrupted by a BaseException (Ctrl-C), after its work was saved."""

    def __init__(self, finished: RunFinished) -> None:
        super().__init__(finished.reason)
        self.finished = finished


@dataclass(frozen=True)
class Host:
    """What the runner itself brings to every run."""

    client: docker.DockerClient
    runner_id: str
    user: str
    owner: int | None
    """The uid that owns what the agent writes, when the runner is root."""
    stop_grace_seconds: float
    push_interval_seconds: float
    limits: Limits
    upstream_proxy: str | None = None
    codex_auth_file: Path | None = None
    codex_config_file: Path | None = None
    anthropic_base_url: str | None = None


def autosave_message(prompt: str, outcome: Outcome, run_id: str) -> str:
    first = next((ln.strip() for ln in prompt.splitlines() if ln.strip()), "agent work")
    summary = first if len(first) <= 64 else first[:63] + "…"
    return render(
        "autosave_commit.txt.j2", summary=f"trimo: {summary}", outcome=outcome.value, run_id=run_id
    ).strip()


def agent_prompt(request: RunRequest, adapter: AgentAdapter, context: str) -> str:
    """What the agent is asked: the prompt after earlier runs' `context`, and where a review
    comment points; a script agent's prompt is a script, given as it is."""
    if not adapter.takes_context:
        return request.prompt
    prompt, review = request.prompt, request.review
    if request.mode == "discover":
        prompt = render("agent_discover.md.j2", prompt=prompt).strip()
    if review is not None:
        prompt = render(
            "agent_review.md.j2",
            prompt=prompt,
            path=review.path.replace("`", ""),
            line=review.line,
            diff_hunk=review.diff_hunk,
            fence=review.fence,
        ).strip()
    return render("agent_prompt.md.j2", context=context, prompt=prompt).strip()


def budget_reason(spent: float, cap: float, name: str | None = None, *, shown: bool = True) -> str:
    """Why a run was stopped by its budget: `budget: $0.52 of $0.50` (cents below a cent),
    then the monthly cap that set the budget, if one did (`name`); the budget itself only
    when `shown`."""

    def dollars(value: float) -> str:
        return f"${value:.2f}" if value >= 0.01 else f"${value:.4f}"

    reason = f"budget: {dollars(spent)}" + (f" of {dollars(cap)}" if shown else "")
    return reason + (f" ({name})" if name else "")


def internal_error(run_id: str) -> str:
    """A reason for the person when Trimo itself broke; the traceback goes to the log."""
    reference = secrets.token_hex(4)
    log.exception("run %s failed inside Trimo (reference %s)", run_id, reference)
    return f"Trimo failed on the runner (reference {reference} in the runner's log)"


def exit_reason(exit_code: int, memory: str) -> str:
    """Why a run whose agent exited `exit_code` (not 0) failed, when its agent said nothing."""
    if exit_code == KILLED:  # Docker's OOM flag did not come, yet memory is the likely cause
        return (
            f"the agent was killed (exit code {KILLED}), most likely out of memory: past its "
            f"{memory} limit the kernel kills it"
        )
    return f"the agent exited with code {exit_code}"


@dataclass
class Attempt:
    """One run in a prepared workspace."""

    host: Host
    request: RunRequest
    adapter: AgentAdapter
    mirror: Path
    root: Path
    """The pipeline's disk: workspace/, home/ and io/."""
    pipeline: PipelineDir
    start: Start
    emit: EventSink
    protect: Callable[[str], None]
    """Adds a value to the secrets scrubbed from every event."""
    stop: StopSignal
    token: str | None
    mounts: dict[Path, str] = field(default_factory=dict)
    """The restored setup's directories (host → sandbox), writable for the agent only."""
    phases: Phases = field(default_factory=Phases)
    """Where the run's time went before its agent started (logged when it starts)."""
    image_id: str = ""
    """The id of `request.image` here: a run can start in a box made for it (runner.warm)."""
    state: RunState = field(init=False)

    def __post_init__(self) -> None:
        self.state = RunState(published_sha=self.start.published_sha)

    # -- the sandbox's files --------------------------------------------------

    @contextmanager
    def io_dir(self) -> Iterator[tuple[Path, Path]]:
        """The run's /trimo (host-written, read-only in the sandbox) and its out/ directory.

        On the pipeline's own disk, so no mount the container sees names a host path."""
        io = self.root / "io" / self.request.run_id
        gitops.remove_tree(io)
        io.parent.mkdir(mode=0o755, exist_ok=True)
        out = io / "out"
        out.mkdir(parents=True, mode=0o700)
        io.chmod(0o755)
        self._give(out)
        try:
            yield io, out
        finally:
            gitops.remove_tree(io)

    def _give(self, path: Path) -> None:
        if self.host.owner is not None:
            os.lchown(path, self.host.owner, self.host.owner)

    def spec(
        self,
        command: list[str],
        io: Path,
        out: Path,
        env: dict[str, str] | None = None,
        network: NetworkAttachment | None = None,
        writable: dict[Path, str] | None = None,
    ) -> ContainerSpec:
        request = self.request
        return ContainerSpec(
            image=request.image,
            command=command,
            workspace=self.root / "workspace",
            context_dir=io,
            out_dir=out,
            home=self.root / "home",
            user=self.host.user,
            network=request.network,
            network_name=network.network if network else None,
            dns=tuple(network.dns or ()) if network else (),
            resources=request.resources,
            env={**(env or {}), **(network.env if network else {})},
            labels={
                LABEL_RUNNER: self.host.runner_id,
                LABEL_RUN: request.run_id,
                LABEL_PIPELINE: request.pipeline,
            },
            name=f"trimo-{request.run_id}-{secrets.token_hex(3)}",
            writable={**self.mounts, **(writable or {})},
        )

    def write_context(self, io: Path) -> str:
        """Files the agent can read in /trimo; returns the prompt to give the agent."""
        request, adapter = self.request, self.adapter
        context = (
            render(
                "agent_context.md.j2",
                branch=request.branch,
                history=request.history,
                plan=_latest_plan(request),
                failing_checks=request.failing_checks,
            )
            if request.history or request.failing_checks
            else ""
        )
        if len(context) > MAX_CONTEXT_CHARS:  # one argv item may not exceed 128 KiB
            context = "…(earlier runs left out)\n" + context[-MAX_CONTEXT_CHARS:]
        for name, text in (("context.md", context), ("prompt.md", request.prompt)):
            (io / name).write_text(text)
            (io / name).chmod(0o644)
        prompt = agent_prompt(request, adapter, context)
        if len(prompt.encode()) > MAX_PROMPT_BYTES:
            raise TrimoError(
                f"The prompt is too long ({len(prompt.encode()) // 1024} KiB).",
                f"keep it under {MAX_PROMPT_BYTES // 1024} KiB",
            )
        return prompt

    def codex_home(self, io: Path) -> tuple[dict[Path, str], list[Endpoint]]:
        """Codex's ChatGPT sign-in and the operator's config.toml, for this run only: a
        CODEX_HOME of the run's own that is deleted with /trimo, never the pipeline's lasting
        home. Their tokens are scrubbed; the config's providers' endpoints are returned."""
        if self.adapter.name != "codex":
            return {}, []
        files: dict[str, str] = {}
        endpoints: list[Endpoint] = []
        if self.host.codex_auth_file is not None:
            files["auth.json"] = self._codex_sign_in(self.host.codex_auth_file)
        if self.host.codex_config_file is not None:
            config = self._codex_config(self.host.codex_config_file)
            files["config.toml"], endpoints = config.text, config.endpoints
        if not files:
            return {}, []
        home = io / "codex"
        home.mkdir(mode=0o700)
        self._give(home)
        for name, text in files.items():
            (home / name).write_text(text)
            (home / name).chmod(0o600)
            self._give(home / name)
        return {home: CODEX_HOME_MOUNT}, endpoints

    def _codex_sign_in(self, source: Path) -> str:
        try:
            text = source.read_text()
            tokens = json.loads(text)
        except (OSError, ValueError) as exc:
            raise TrimoError(
                f"The Codex sign-in file {source} could not be read: {exc}",
                "make it again with `codex login` and point TRIMO_CODEX_AUTH_FILE at auth.json",
            ) from exc
        for value in _strings(tokens):
            if len(value) >= 16:
                self.protect(value)
        return text

    def _codex_config(self, source: Path) -> CodexConfig:
        try:
            config = read_codex_config(source.read_text(), str(source))
        except (OSError, UnicodeDecodeError) as exc:
            raise TrimoError(
                f"The Codex config file {source} could not be read: {exc}",
                "point TRIMO_CODEX_CONFIG_FILE at a config.toml the runner can read",
            ) from exc
        for value in config.secrets:
            self.protect(value)
        return config

    def anthropic_endpoint(self, env: dict[str, str]) -> list[Endpoint]:
        """The operator's Anthropic base URL, given to an agent that calls Anthropic's API."""
        url = self.host.anthropic_base_url
        if url is None or ANTHROPIC_KEY_ENV not in self.adapter.secret_env:
            return []
        env[ANTHROPIC_BASE_URL] = url
        return [endpoint_of(url, "TRIMO_ANTHROPIC_BASE_URL")]

    # -- the run --------------------------------------------------------------

    def run(self, fresh: bool) -> RunFinished:
        with self.io_dir() as (io, out):
            return self._run(fresh, io, out)

    def _run(self, fresh: bool, io: Path, out: Path) -> RunFinished:
        request, adapter, state = self.request, self.adapter, self.state
        resumed = not fresh and bool(self.pipeline.known())
        container: AgentContainer | None = None
        box: WarmBox | None = None
        network: NetworkAttachment | None = None
        exit_info: ExitInfo | None = None
        delivery = Delivery(
            request, self.mirror, self.start, self.pipeline, out, self.emit, self.token, state,
            self.host.limits,
        )  # fmt: skip
        try:
            writable, endpoints = self.codex_home(io)
            env = {k: v.get_secret_value() for k, v in request.secrets.items()}
            env |= {"TRIMO_BRANCH": request.branch, "TRIMO_START": self.start.base_sha}
            if writable:
                env["CODEX_HOME"] = CODEX_HOME_MOUNT
            endpoints += self.anthropic_endpoint(env)
            box = None if writable else self._warm_box()
            network = attach(
                self.host.client,
                request.network,
                request.run_id,
                [*adapter.api_hosts, *request.allowed_hosts],
                self.host.runner_id,
                self.host.upstream_proxy,
                endpoints,
                wait=False,
                joined=box.joined if box else None,
            )  # its proxy starts while the context, the sync bundle and the container are made
            if box is not None and box.joined and network.network == box.joined[1][0].name:
                box.joined = None  # the run's network now: let go of when the run ends
            if network.secret:
                self.protect(network.secret)
            phases = self.phases
            phases.mark("network")
            prompt = self.write_context(io)
            branches = workspace_branches(request, self.start)
            if not fresh:
                gitops.write_sync_bundle(
                    self.mirror, io / "sync.bundle", branches, self.pipeline.known()
                )
            phases.mark("context")
            resume = resumed and bool(request.history)
            adapter.session_cost_before = (
                self.pipeline.session_cost(adapter.name) if resume else 0.0
            )
            adapter.max_cost_usd = request.max_cost_usd
            command = adapter.command(prompt, resume=resume, read_only=request.mode == "discover")
            spec = self.spec(command, io, out, env, network, writable)
            container = self._container(spec, box)
            box = None
            phases.mark("container")
            network.ready()  # its proxy started while the container was made
            phases.mark("proxy")
            container.start()
            phases.mark("start")
            if container.first_line() != READY_LINE:
                raise WorkspaceBroken
            phases.mark("sync")
            phases.over()
            log.info("run %s: agent started after %s", request.run_id, phases)
            lines = without_first(container.lines(), READY_LINE)
            exit_info, timed_out = self._follow(container, lines, delivery)
            outcome, reason = self.outcome(exit_info, timed_out)
        except WorkspaceBroken:
            raise
        except BaseException as exc:
            if box is not None:
                box.discard()
            if container is not None:
                container.stop(0)
            interrupted = not isinstance(exc, Exception)
            if isinstance(exc, TrimoError):
                outcome, reason = Outcome.ERROR, str(exc)
            elif interrupted:
                outcome, reason = Outcome.CANCELLED, "interrupted"
            else:
                outcome, reason = Outcome.ERROR, internal_error(request.run_id)
            finished = self.finish(delivery, container, outcome, reason)
            if interrupted:
                raise Saved(finished) from exc
            return finished
        finally:
            if container is not None:
                container.remove()
                self._note_session()
            if network is not None and (blocked := network.release()):
                self.emit(EgressBlocked(hosts=blocked))
        return self.finish(delivery, container, outcome, reason, exit_info)

    def _warm_box(self) -> WarmBox | None:
        """A sandbox started ahead for runs like this one, when one is ready."""
        request, host = self.request, self.host
        if request.network not in warm.SERVED or self.mounts or not self.image_id:
            return None
        key = warm.BoxKey(
            image=request.image,
            image_id=self.image_id,
            user=host.user,
            resources=request.resources,
            network=request.network,
            runner_id=host.runner_id,
            upstream_proxy=host.upstream_proxy,
        )
        return warm.take(host.client, key)

    def _container(self, spec: ContainerSpec, box: WarmBox | None) -> AgentContainer:
        """The run's container: `box`, when it was made for exactly `spec`."""
        if box is not None:
            misfits = box.misfits(spec, self.image_id)
            if not misfits:
                log.info("run %s: in %s, started ahead", self.request.run_id, box.container.name)
                warm.note(self.pipeline.path, box)
                return WarmContainer(self.host.client, spec, box)
            log.warning("run %s: the sandbox started ahead differs in %s; starting one anew",
                        self.request.run_id, ", ".join(misfits))  # fmt: skip
            box.discard()
        return AgentContainer(self.host.client, spec)

    def _note_session(self) -> None:
        """What the agent's session in this home has cost now, for the next continued run:
        its own last report, or what it had cost before when it gave none."""
        adapter = self.adapter
        total = adapter.session_cost_usd
        self.pipeline.note_session_cost(
            adapter.name, adapter.session_cost_before if total is None else total
        )

    def _follow(
        self, container: AgentContainer, lines: Iterator[str], delivery: Delivery
    ) -> tuple[ExitInfo, bool]:
        """Stream the agent's events and push its commits until it ends, is stopped or times out."""
        request = self.request
        self.emit(
            RunStarted(
                run_id=request.run_id,
                runner=self.host.runner_id,
                agent=self.adapter.name,
                mode=request.mode,
                image=request.image,
                branch=request.branch,
                base_sha=self.start.base_sha,
            )
        )

        def exec_export(known: list[str], message: str | None) -> bool:
            command = export_command(BUNDLE_NAME, known, message, after=delivery.tip)
            return container.exec(command)

        deadline = time.monotonic() + request.timeout_s
        done, timed_out = threading.Event(), threading.Event()
        watchdog = threading.Thread(
            target=self._watch, args=(container, deadline, done, timed_out), daemon=True
        )
        pusher = threading.Thread(
            target=delivery.push_loop,
            args=(exec_export, done, self.host.push_interval_seconds),
            daemon=True,
        )
        watchdog.start()
        if request.mode == "code":  # a discovery run publishes nothing
            pusher.start()
        try:
            for line in lines:
                for event in self.adapter.parse_line(line):
                    self._observe(event)
                    self.emit(event)
            exit_info = container.wait(timeout=max(30, self.host.stop_grace_seconds + 30))
        finally:
            done.set()
            if pusher.is_alive():
                pusher.join()
        return exit_info, timed_out.is_set()

    def _watch(
        self,
        container: AgentContainer,
        deadline: float,
        done: threading.Event,
        timed_out: threading.Event,
    ) -> None:
        while not done.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out.set()
                container.stop(self.host.stop_grace_seconds)
                return
            if self.stop.wait(min(remaining, 0.2)):
                container.stop(self.host.stop_grace_seconds)
                return

    def _observe(self, event: AgentEvent) -> None:
        if isinstance(event, FinalResult):
            self.state.final_result = event
        elif isinstance(event, Usage):
            self.state.usage = add_usage(self.state.usage, event)
            self._check_budget()
        self.state.last_word.observe(event)

    def _check_budget(self) -> None:
        """Stop the run once the cost its agent reported reaches the run's budget: the
        watchdog stops the container at once, and its work is saved as for any stop."""
        cap, usage = self.request.max_cost_usd, self.state.usage
        spent = usage.cost_usd if usage is not None else None
        if cap is not None and spent is not None and spent >= cap and not self.stop.is_set():
            request = self.request
            self.stop.stop(
                budget_reason(spent, cap, request.budget_cap, shown=request.budget_shown)
            )

    def outcome(self, exit_info: ExitInfo | None, timed_out: bool) -> tuple[Outcome, str]:
        request, state = self.request, self.state
        if self.stop.is_set():
            return Outcome.CANCELLED, self.stop.reason or "stopped on request"
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
            reported = self.adapter.reported_error
            return Outcome.FAILURE, reported or exit_reason(
                exit_info.exit_code, request.resources.memory
            )
        if state.final_result is not None and not state.final_result.success:
            return Outcome.FAILURE, state.final_result.text or "the agent reported failure"
        return Outcome.SUCCESS, ""

    def finish(
        self,
        delivery: Delivery,
        container: AgentContainer | None,
        outcome: Outcome,
        reason: str,
        exit_info: ExitInfo | None = None,
    ) -> RunFinished:
        """A coding run's work is saved; a discovery run keeps nothing and answers its plan."""
        if self.request.mode == "code":
            return self.save(delivery, container, outcome, reason, exit_info)
        return RunFinished(
            run_id=self.request.run_id,
            outcome=outcome,
            reason=reason,
            exit_code=exit_info.exit_code if exit_info else None,
            head_sha=self.start.remote_sha,
            usage=self.state.usage,
            plan=self.state.last_word.text(),
        )

    def save(
        self,
        delivery: Delivery,
        container: AgentContainer | None,
        outcome: Outcome,
        reason: str,
        exit_info: ExitInfo | None = None,
    ) -> RunFinished:
        """Commit what the agent left and publish it, from a helper sandbox on the workspace."""
        if container is None:  # the agent never started: nothing can have changed
            return RunFinished(run_id=self.request.run_id, outcome=outcome, reason=reason)
        message = autosave_message(self.request.prompt, outcome, self.request.run_id)
        exit_code = exit_info.exit_code if exit_info else None
        return delivery.save(
            self.helper_exporter(container.spec), outcome, reason, message, exit_code
        )

    def helper_exporter(self, spec: ContainerSpec) -> Exporter:
        """Export from a short-lived helper sandbox (the agent's container has ended)."""

        def export(known: list[str], message: str | None) -> None:
            try:
                run_helper(self.host.client, spec, export_command(BUNDLE_NAME, known, message))
            except (TrimoError, docker.errors.DockerException, requests.RequestException) as exc:
                why = exc.message if isinstance(exc, TrimoError) else type(exc).__name__
                raise Unsaved(
                    f"the sandbox that saves the agent's last changes could not start ({why}); "
                    "they are kept on the runner and saved before this pipeline's next run"
                ) from exc

        return export


def _latest_plan(request: RunRequest) -> str:
    """The plan of the pipeline's latest discovery run that gave one."""
    plans = [r.plan for r in request.history if r.mode == "discover" and r.plan.strip()]
    return plans[-1] if plans else ""


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
