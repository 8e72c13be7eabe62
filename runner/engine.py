"""The run engine: a prompt, an agent in its own container, on a pipeline branch.

One call of `RunEngine.execute` brings the repository's mirror up to date,
mounts the pipeline's disk, makes the workspace if it is new, and hands the run
to an `Attempt` (runner.attempt), which starts the agent and always saves its
work. Before it, the pipeline's kept commits (from any runner of the fleet) are
brought here and settled against the branch; after it, what the remote still
lacks is kept for the fleet (runner.keeper). A runner that died mid-run leaves a
ledger entry; `recover_abandoned` saves those runs' work when the runner comes back.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import docker
import docker.errors
from pydantic import BaseModel

from runner import disk, dockerclient, gitops, warm
from runner.agents import get_adapter
from runner.attempt import (
    Attempt,
    EventSink,
    Host,
    Saved,
    StopSignal,
    WorkspaceBroken,
    autosave_message,
    internal_error,
)
from runner.container import LABEL_RUN, ContainerSpec
from runner.delivery import (
    Delivery,
    RunState,
    Start,
    pending_ref,
    remote_tip,
    starting_point,
    workspace_branches,
)
from runner.errors import TrimoError, WorkspaceError
from runner.handoff import Limits
from runner.job import Outcome, RunEvent, RunFinished, RunRequest, run_event_adapter
from runner.keeper import Keeper
from runner.keptstore import KeptStore
from runner.phases import Phases
from runner.pipelinedir import PipelineDir
from runner.registry import pid_alive
from runner.replay import Replayer
from runner.scrub import Scrubber
from runner.setup.build import Builder, Job, SetupFailed
from runner.setup.cache import Environment, SetupCache, setup_failure
from runner.setup.key import scope_of
from runner.setup.store import DEFAULT_MAX_BYTES, Store
from runner.verify import SetupHook, unrun, verify, verify_ref, with_report

__all__ = ["EngineConfig", "RunEngine", "StopSignal", "autosave_message"]

log = logging.getLogger(__name__)

SETUP_SCRATCH = "setup-layers"
"""On the pipeline's disk: the upper layers of a run's restored setup, thrown away after."""
ABANDONED = "the runner stopped while this run was going; the work it had done was saved"
SAVED_LATE = "its work was saved before the pipeline's next run"


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
    upstream_proxy: str | None = None
    """A proxy the egress proxy chains to, when this host must use one."""
    codex_auth_file: Path | None = None
    """Codex's ChatGPT sign-in (auth.json), given to each Codex run for that run only."""
    codex_config_file: Path | None = None
    """The operator's Codex config.toml (model providers), given to each Codex run likewise."""
    anthropic_base_url: str | None = None
    """The operator's endpoint for Anthropic's API, given to agents that call it."""
    setup_cache_bytes: int = DEFAULT_MAX_BYTES
    """TRIMO_SETUP_CACHE_MAX: the most the setup cache keeps, least recently used out."""

    @property
    def mirrors_dir(self) -> Path:
        return self.cache_dir / "mirrors"

    @property
    def ledger_dir(self) -> Path:
        return self.cache_dir / "runs" / gitops.repo_key(self.runner_id)


class _LedgerEntry(BaseModel):
    request: dict[str, Any]
    base_sha: str
    published_sha: str | None
    remote_sha: str = ""
    pid: int = 0


class RunEngine:
    """Executes `RunRequest`s on this machine."""

    def __init__(
        self,
        config: EngineConfig,
        client: docker.DockerClient | None = None,
        kept: KeptStore | None = None,
    ) -> None:
        self.config = config
        self._client = client
        self.kept = kept
        """Where kept commits go for the whole fleet (None: they stay in this mirror)."""
        self._setup_cache: SetupCache | None = None

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

    def _host(self) -> Host:
        config = self.config
        return Host(
            client=self.client,
            runner_id=config.runner_id,
            user=self._user,
            owner=self._owner,
            stop_grace_seconds=config.stop_grace_seconds,
            push_interval_seconds=config.push_interval_seconds,
            limits=config.limits,
            upstream_proxy=config.upstream_proxy,
            codex_auth_file=config.codex_auth_file,
            codex_config_file=config.codex_config_file,
            anthropic_base_url=config.anthropic_base_url,
        )

    def execute(
        self, request: RunRequest, on_event: EventSink, stop: StopSignal | None = None
    ) -> RunFinished:
        """Run `request` to the end and emit exactly one RunFinished, whatever is raised."""
        scrubber = Scrubber(request.secret_values())

        def emit(event: RunEvent) -> None:
            on_event(_scrubbed(scrubber, event))

        stop = stop or StopSignal()
        phases = Phases()
        try:
            finished = self._execute(request, emit, scrubber.add, stop, phases)
        except TrimoError as exc:
            finished = RunFinished(run_id=request.run_id, outcome=Outcome.ERROR, reason=str(exc))
        except Saved as saved:
            emit(saved.finished)
            raise saved.__cause__ or KeyboardInterrupt from None
        except Exception:
            finished = _internal_error(request.run_id)
        finally:
            phases.over()
        emit(finished)
        return _scrubbed_finished(scrubber, finished)

    def _execute(
        self,
        request: RunRequest,
        emit: EventSink,
        protect: Callable[[str], None],
        stop: StopSignal,
        phases: Phases,
    ) -> RunFinished:
        adapter = get_adapter(request.agent)
        if request.branch == request.base_branch:
            raise TrimoError(
                f"Refusing to run on {request.branch!r}: it is the base branch.",
                "a pipeline works on its own branch",
            )
        image_id = dockerclient.require_image(self.client, request.image)
        host = self._host()
        token = request.token.get_secret_value() if request.token else None
        phases.mark("image")
        mirror = gitops.ensure_mirror(self.config.mirrors_dir, request.repo.clone_url, token)
        phases.mark("mirror")
        pipeline = PipelineDir.of(self.config.cache_dir, request.repo.clone_url, request.pipeline)
        pipeline.create()
        disk_bytes = self.config.disk_bytes
        with (
            gitops.locked(pipeline.lock),
            disk.mounted(pipeline.path, disk_bytes) as root,
            contextlib.ExitStack() as setup,
        ):
            phases.mark("disk")
            if self._save_earlier_runs(request, mirror, root, pipeline):
                gitops.ensure_mirror(self.config.mirrors_dir, request.repo.clone_url, token)
            keeper = self._keeper(request, mirror, root, pipeline, emit, token)
            keeper.restore()
            start = starting_point(mirror, request)
            ledger = self._write_ledger(request, start)
            phases.mark("kept")
            attempt: Attempt | None = None
            try:
                try:
                    environment = self._environment(
                        request, image_id, mirror, root, start, setup, stop
                    )
                except SetupFailed as failed:
                    return setup_failure(request.run_id, failed, emit)
                phases.mark("setup")
                for number in (1, 2):
                    fresh = self._prepare_workspace(root, mirror, start, pipeline, request, number)
                    if environment is not None:
                        environment.place(root / "workspace", root / "home")
                    phases.mark("workspace")
                    attempt = Attempt(
                        host, request, adapter, mirror, root, pipeline, start, emit, protect,
                        stop, token, environment.mounts if environment else {}, phases,
                        image_id,
                    )  # fmt: skip
                    try:
                        finished = _shared(keeper, attempt.run(fresh), attempt.state, start)
                    except WorkspaceBroken:
                        log.warning("the workspace of %s was damaged", request.pipeline)
                        adapter = get_adapter(request.agent)
                        continue
                    return self._verified(request, mirror, root, attempt, finished, stop)
                raise WorkspaceError(
                    "the workspace could not be prepared in the sandbox",
                    "it will be made afresh on the next run",
                )
            finally:
                if request.mode == "discover":
                    _discard_workspace(root, pipeline)
                if ledger is not None and not (attempt is not None and attempt.state.unsaved):
                    ledger.unlink(missing_ok=True)

    @property
    def setup_cache(self) -> SetupCache:
        """This runner's setup entries (shared with its previews)."""
        if self._setup_cache is None:
            config = self.config
            builder = Builder(
                self.client, config.runner_id, self._user, self._owner, config.disk_bytes,
                config.upstream_proxy,
            )  # fmt: skip
            store = Store(config.cache_dir / "setup", config.runner_id, config.setup_cache_bytes)
            self._setup_cache = SetupCache(builder, store)
        return self._setup_cache

    def _environment(
        self,
        request: RunRequest,
        image_id: str,
        mirror: Path,
        root: Path,
        start: Start,
        stack: contextlib.ExitStack,
        stop: StopSignal,
    ) -> Environment | None:
        """The run's `setup:` restored from the cache (made first on a miss), held open by
        `stack`; None when the repository has none."""
        if request.setup is None:
            return None
        branches = workspace_branches(request, start)
        also = (pending_ref(request.pipeline),) if start.base_sha != start.remote_sha else ()

        def checkout(path: Path) -> None:
            gitops.create_workspace(path, mirror, branches, self._owner, also)

        scope = scope_of(mirror, start.base_sha, request.base_branch, request.pipeline)
        job = Job(
            request.setup, start.base_sha, request.image, image_id, request.resources, checkout,
            stop.is_set, scope,
        )  # fmt: skip
        scratch = root / SETUP_SCRATCH
        return stack.enter_context(
            self.setup_cache.ready(job, request.repo.clone_url, mirror, scratch)
        )

    def _verified(
        self,
        request: RunRequest,
        mirror: Path,
        root: Path,
        attempt: Attempt,
        finished: RunFinished,
        stop: StopSignal,
    ) -> RunFinished:
        """`finished` with its checks of `verify:`, run on the pushed head when the coding
        run made commits (and was neither stopped nor unable to run)."""
        sha = attempt.state.last_pushed
        if (
            request.mode != "code"
            or not request.verify
            or not finished.commits
            or sha is None
            or finished.outcome in (Outcome.CANCELLED, Outcome.ERROR)
            or stop.is_set()
        ):
            return finished
        try:
            report = verify(
                self._host(), request, mirror, root / "verify", sha, attempt.emit, stop.wait,
                attempt.protect, self._checks_setup(request, mirror, sha, stop),
            )  # fmt: skip
        except Exception:
            report = unrun(request, sha, internal_error(request.run_id))
        if stop.is_set():  # stopped while its checks ran: what they said so far is shown
            reason = stop.reason or "stopped on request"
            return finished.model_copy(
                update={"verify": report, "outcome": Outcome.CANCELLED, "reason": reason}
            )
        return with_report(finished, report)

    def _checks_setup(
        self, request: RunRequest, mirror: Path, sha: str, stop: StopSignal
    ) -> SetupHook:
        """Each check's sandbox gets the run's `setup:` keyed at `sha` (its own lockfile),
        from the cache (made first on a miss), with upper layers of its own; a setup made
        for it ends when the run is stopped."""
        spec = request.setup
        if spec is None:
            return contextlib.nullcontext
        image_id = dockerclient.require_image(self.client, request.image)

        def checkout(path: Path) -> None:
            ref = verify_ref(request.run_id)
            gitops.create_workspace(path, mirror, [request.base_branch], self._owner, (ref,))

        scope = scope_of(mirror, sha, request.base_branch, request.pipeline)
        job = Job(
            spec, sha, request.image, image_id, request.resources, checkout, stop.is_set, scope
        )

        @contextlib.contextmanager
        def with_setup(box: ContainerSpec) -> Iterator[ContainerSpec]:
            scratch = box.workspace.parent / SETUP_SCRATCH
            with contextlib.ExitStack() as stack:
                try:
                    environment = stack.enter_context(
                        self.setup_cache.ready(job, request.repo.clone_url, mirror, scratch)
                    )
                except SetupFailed as failed:
                    raise TrimoError(f"its setup failed: {failed.reason}") from failed
                environment.place(box.workspace, box.home or box.workspace)
                yield replace(box, writable={**box.writable, **environment.mounts})

        return with_setup

    def _prepare_workspace(
        self,
        root: Path,
        mirror: Path,
        start: Start,
        pipeline: PipelineDir,
        request: RunRequest,
        attempt: int,
    ) -> bool:
        """Make the workspace and home if they are missing; on a second attempt (the sandbox
        could not prepare the first) make both afresh. True when the workspace was made now."""
        workspace, home = root / "workspace", root / "home"
        kept = start.base_sha if start.base_sha != start.remote_sha else None
        lacks_kept = kept is not None and not any(
            gitops.is_ancestor(mirror, kept, known) for known in pipeline.known()
        )  # kept commits another runner made, or replayed: only a new workspace takes them
        made = attempt > 1 or workspace.is_symlink() or not workspace.is_dir() or lacks_kept
        if made:
            gitops.remove_tree(workspace)
            pipeline.forget_workspace()
            branches = workspace_branches(request, start)
            also = (pending_ref(request.pipeline),) if kept else ()
            gitops.create_workspace(workspace, mirror, branches, self._owner, also)
        if attempt > 1 or home.is_symlink() or not home.is_dir():
            gitops.remove_tree(home)
            home.mkdir(mode=0o700)
            if self._owner is not None:
                os.lchown(home, self._owner, self._owner)
        return made

    def _keeper(
        self,
        request: RunRequest,
        mirror: Path,
        root: Path,
        pipeline: PipelineDir,
        emit: EventSink,
        token: str | None,
    ) -> Keeper:
        config = self.config
        replayer = Replayer(
            self.client, request, mirror, root, pipeline, self._user, self._owner,
            config.runner_id, config.limits,
        )  # fmt: skip
        return Keeper(
            request, mirror, pipeline, self.kept, emit, token, config.runner_id,
            replayer.replay, config.limits,
        )  # fmt: skip

    def _write_ledger(self, request: RunRequest, start: Start) -> Path | None:
        if not self.config.keep_ledger:
            return None
        self.config.ledger_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        entry = _LedgerEntry(
            request=request.dump_for_queue(),
            base_sha=start.base_sha,
            published_sha=start.published_sha,
            remote_sha=start.remote_sha,
            pid=os.getpid(),
        )
        path = self.config.ledger_dir / f"{request.run_id}.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(entry.model_dump_json())
        return path

    def _ledger(self) -> Iterator[tuple[Path, _LedgerEntry, RunRequest]]:
        """The runs on record as going (or as not saved), oldest name first."""
        for path in sorted(self.config.ledger_dir.glob("*.json")):
            try:
                entry = _LedgerEntry.model_validate_json(path.read_text())
                request = RunRequest.model_validate(entry.request)
            except (OSError, ValueError):
                path.unlink(missing_ok=True)
                continue
            yield path, entry, request

    def recover_abandoned(self, on_event: EventSink) -> list[RunFinished]:
        """Save and report the runs that earlier, dead processes of this runner left behind."""
        recovered = []
        for path, entry, request in self._ledger():
            if entry.pid and entry.pid != os.getpid() and pid_alive(entry.pid):
                continue  # another process (a second `trimo run`) is still running it
            recovered.append(self._recover(path, request, entry, on_event))
        return recovered

    def _save_earlier_runs(
        self, request: RunRequest, mirror: Path, root: Path, pipeline: PipelineDir
    ) -> bool:
        """Save what earlier runs of this pipeline left unsaved, before the sandbox's sync
        would reset the workspace; True if there were any. The caller holds the pipeline's
        lock, so none of them is going."""
        saved = False
        if not self.config.keep_ledger:
            return saved
        for path, entry, earlier in self._ledger():
            if earlier.pipeline != request.pipeline or earlier.repo != request.repo:
                continue
            # The earlier run's token has likely expired; this run's is for the same repository.
            earlier = earlier.model_copy(update={"token": request.token})
            finished = self._save_work(
                path, earlier, entry, mirror, root, pipeline, _logged, SAVED_LATE
            )
            if finished.outcome is Outcome.ERROR and path.exists():
                raise TrimoError(
                    f"the work of this pipeline's earlier run {earlier.run_id} is not saved yet",
                    finished.reason,
                )
            log.warning("saved the work run %s had left unsaved", earlier.run_id)
            saved = True
        return saved

    def _recover(
        self, path: Path, request: RunRequest, entry: _LedgerEntry, on_event: EventSink
    ) -> RunFinished:
        scrubber = Scrubber(request.secret_values())

        def emit(event: RunEvent) -> None:
            on_event(_scrubbed(scrubber, event))

        try:
            token = request.token.get_secret_value() if request.token else None
            mirror = gitops.ensure_mirror(self.config.mirrors_dir, request.repo.clone_url, token)
            pipeline = PipelineDir.of(
                self.config.cache_dir, request.repo.clone_url, request.pipeline
            )
            pipeline.create()
            disk_bytes = self.config.disk_bytes
            with gitops.locked(pipeline.lock), disk.mounted(pipeline.path, disk_bytes) as root:
                finished = self._save_work(
                    path, request, entry, mirror, root, pipeline, emit, ABANDONED
                )
        except TrimoError as exc:
            finished = RunFinished(
                run_id=request.run_id, outcome=Outcome.ERROR, reason=f"{ABANDONED}, except: {exc}"
            )
        except Exception:
            finished = _internal_error(request.run_id)
        emit(finished)
        return finished

    def _save_work(
        self,
        path: Path,
        request: RunRequest,
        entry: _LedgerEntry,
        mirror: Path,
        root: Path,
        pipeline: PipelineDir,
        emit: EventSink,
        reason: str,
    ) -> RunFinished:
        """Commit and publish what a run that is no longer going left in its workspace; forget
        the run unless that could not be done."""
        for found in self.client.containers.list(
            all=True, filters={"label": f"{LABEL_RUN}={request.run_id}"}
        ):
            with contextlib.suppress(docker.errors.APIError):
                found.remove(force=True)
        warm.forget(self.client, pipeline.path)
        if request.mode == "discover":  # read-only: nothing of it is kept
            _discard_workspace(root, pipeline)
            path.unlink(missing_ok=True)
            return RunFinished(
                run_id=request.run_id,
                outcome=Outcome.FAILURE,
                reason="the runner stopped while this discovery run was going",
            )
        token = request.token.get_secret_value() if request.token else None
        start = Start(request.branch, entry.base_sha, entry.published_sha, entry.remote_sha)
        attempt = Attempt(
            self._host(), request, get_adapter(request.agent), mirror, root, pipeline, start,
            emit, lambda _secret: None, StopSignal(), token,
        )  # fmt: skip
        attempt.state.published_sha = gitops.branch_sha(mirror, request.branch)
        try:
            with attempt.io_dir() as (io, out):
                spec = attempt.spec([], io, out)
                delivery = Delivery(
                    request, mirror, start, pipeline, out, emit, token, attempt.state,
                    self.config.limits,
                )  # fmt: skip
                finished = delivery.save(
                    attempt.helper_exporter(spec),
                    Outcome.FAILURE,
                    reason,
                    autosave_message(request.prompt, Outcome.FAILURE, request.run_id),
                )
            keeper = self._keeper(request, mirror, root, pipeline, emit, token)
            finished = _shared(keeper, finished, attempt.state, start)
        except Exception:
            finished = _internal_error(request.run_id)
            attempt.state.unsaved = True
        if not attempt.state.unsaved:
            path.unlink(missing_ok=True)
        return finished


def _shared(keeper: Keeper, finished: RunFinished, state: RunState, start: Start) -> RunFinished:
    """`finished`, once what the remote still lacks is kept for the fleet (or said why not)."""
    if keeper.request.mode != "code":
        return finished
    try:
        words = keeper.share(remote_tip(state, start), state.kept_reason)
    except Exception:
        log.exception("run %s: kept commits not shared", finished.run_id)
        words = "they could not be kept in Trimo's store (see the runner's log)"
    if not words:
        return finished
    return finished.model_copy(update={"reason": "; ".join(filter(None, [finished.reason, words]))})


def _discard_workspace(root: Path, pipeline: PipelineDir) -> None:
    """Throw away what a discovery run left: the next run gets a fresh workspace made from
    the mirror, on the branch as it was."""
    gitops.remove_tree(root / "workspace")
    pipeline.forget_workspace()


def _scrubbed(scrubber: Scrubber, event: RunEvent) -> RunEvent:
    return run_event_adapter.validate_python(scrubber.scrub_json(event.model_dump(mode="json")))


def _scrubbed_finished(scrubber: Scrubber, finished: RunFinished) -> RunFinished:
    clean = _scrubbed(scrubber, finished)
    assert isinstance(clean, RunFinished)
    return clean


def _logged(event: RunEvent) -> None:
    if isinstance(event, RunFinished):
        log.warning("run %s, saved late: %s %s", event.run_id, event.outcome, event.reason)


def _internal_error(run_id: str) -> RunFinished:
    return RunFinished(run_id=run_id, outcome=Outcome.ERROR, reason=internal_error(run_id))
