"""One run's work, from the sandbox to the remote.

The sandbox exports the agent's commits as a bundle: during the run with
`docker exec` in the agent's container, at the end in a helper container that
first commits what the agent left. The host takes the bundle (`runner.handoff`)
into the trusted mirror and pushes from there: a fast-forward of the pipeline
branch, or a salvage ref when the agent rewrote history. Commits the remote
refuses, or that no push could deliver, are kept as the pipeline's pending ref; the
engine then stores them for the whole fleet (`runner.keeper`), and the pipeline's next
run continues from them on whichever runner takes it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from runner import gitops, handoff
from runner.contract import MAX_LAST_WORD_CHARS
from runner.diffsummary import DiffSummary
from runner.errors import GitError, HandoffRefused, PushRefused, TrimoError
from runner.events import FinalResult, Usage
from runner.job import (
    CommitInfo,
    Outcome,
    Pushed,
    RunEvent,
    RunFinished,
    RunRequest,
    Salvaged,
)
from runner.job import PushRefused as PushRefusedEvent
from runner.lastword import LastWord
from runner.pipelinedir import PipelineDir
from runner.printable import printable
from runner.ranking import cut_short

log = logging.getLogger(__name__)

BUNDLE_NAME = "run.bundle"
HEAD_NAME = f"{BUNDLE_NAME}.head"
MAX_HEAD_BYTES = 4096
MAX_REFUSED_PATHS = 5


class Unsaved(TrimoError):
    """The sandbox that commits and exports the agent's last changes could not run."""


Exporter = Callable[[list[str], str | None], object]
"""Runs `trimo-export` in a sandbox with (commits the host has, commit message or None).
It leaves the bundle and a line `head SHA` in the run's out directory."""


def run_ref(run_id: str) -> str:
    return f"refs/trimo/runs/{run_id}"


def salvage_ref(run_id: str) -> str:
    return f"refs/trimo/salvage/{run_id}"


def pending_ref(pipeline: str) -> str:
    """Commits of the pipeline that the remote refused or could not take, kept for its next
    run."""
    return f"refs/trimo/pending/{pipeline}"


@dataclass(frozen=True)
class Start:
    """Where a run begins."""

    branch: str
    base_sha: str
    """The commit the run starts from (the refused commits it continues, if any)."""
    published_sha: str | None
    """The pipeline branch's head on the remote before the run (None on a first run)."""
    remote_sha: str = ""
    """What the remote has that the run builds on: the published head, or the base branch's.
    The run's commits are counted from here."""
    on: str = ""
    """The branch whose head it starts from (its own, the one it was told, or the base)."""

    def __post_init__(self) -> None:
        if not self.remote_sha:
            object.__setattr__(self, "remote_sha", self.published_sha or self.base_sha)


@dataclass
class RunState:
    """What the engine learns while a run is going."""

    published_sha: str | None
    last_pushed: str | None = None
    pushed_commits: int = 0
    refused: PushRefusedEvent | None = None
    taken: str | None = None
    """The newest head taken from the sandbox (later bundles leave out what it holds)."""
    taken_bytes: int = 0
    content_bytes: int = 0
    final_result: FinalResult | None = None
    last_word: LastWord = field(default_factory=LastWord)
    usage: Usage | None = None
    unsaved: bool = False
    """The final export could not run: the workspace still holds work the remote lacks."""
    kept_reason: str = ""
    """Why commits of this run were kept as the pipeline's pending ref, if they were."""
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Delivery:
    """One run's git side: where its work is taken from, where it goes, what was published."""

    request: RunRequest
    mirror: Path
    start: Start
    pipeline: PipelineDir
    out_dir: Path
    emit: Callable[[RunEvent], None]
    token: str | None
    state: RunState
    limits: handoff.Limits = field(default_factory=handoff.Limits)

    @property
    def tip(self) -> str:
        """The newest commit of this pipeline on the remote."""
        return remote_tip(self.state, self.start)

    def known(self) -> list[str]:
        """Commits the mirror has that the workspace may build on (bundle prerequisites)."""
        shas = [
            self.state.taken,
            self.state.last_pushed,
            self.state.published_sha,
            self.start.base_sha,
            self.start.remote_sha,
        ]
        return list(dict.fromkeys([s for s in shas if s] + self.pipeline.known()))

    def take(self, export: Exporter, commit_message: str | None) -> str | None:
        """Export in the sandbox and take the bundle into the mirror; the head, or None."""
        known = self.known()
        export(known, commit_message)
        incoming = self.pipeline.incoming / self.request.run_id
        try:
            if handoff.take_file(self.out_dir, HEAD_NAME, incoming, MAX_HEAD_BYTES):
                claimed = _claimed_head(incoming.read_text(errors="replace"))
            else:
                claimed = None
            if handoff.take_file(self.out_dir, BUNDLE_NAME, incoming, self._budget()):
                self.state.taken_bytes += incoming.stat().st_size
                ref = run_ref(self.request.run_id)
                head, content = handoff.import_bundle(
                    self.mirror, incoming, ref, known, self.limits
                )
                self.state.taken = head
                self.state.content_bytes += content
                return head
        finally:
            incoming.unlink(missing_ok=True)
        # Nothing new was bundled: the head the sandbox claims must be one of the commits the
        # host named, or older than one of them, never any other commit of the mirror.
        if claimed is None or gitops.resolve(self.mirror, claimed) != claimed:
            return None
        if claimed in known or any(gitops.is_ancestor(self.mirror, claimed, k) for k in known):
            return claimed
        return None

    def _budget(self) -> int:
        """What this run may still hand over: its bundles together stay under the cap."""
        limits, state = self.limits, self.state
        left = limits.bundle_bytes - state.taken_bytes
        if left <= 0 or state.content_bytes > limits.content_bytes:
            handed = max(limits.bundle_bytes, state.taken_bytes)
            raise HandoffRefused(
                f"the agent handed over more than {handoff.size_text(handed)} (or "
                f"{handoff.size_text(limits.content_bytes)} of file contents) in this run, "
                "so nothing more was taken from the sandbox"
            )
        return left

    def push_loop(self, export: Exporter, done: threading.Event, interval: float) -> None:
        """Publish commits as they appear, so a crash loses nothing that was committed."""
        while not done.wait(interval):
            with contextlib.suppress(TrimoError, OSError):
                self.publish(export, final=False)

    def publish(
        self, export: Exporter, final: bool, commit_message: str | None = None
    ) -> str | None:
        """Take the workspace's head and fast-forward the pipeline branch to it."""
        request, mirror, state = self.request, self.mirror, self.state
        with state.lock:
            head = self.take(export, commit_message)
            previous = self.tip
            if head is None or head == previous or state.refused is not None:
                return head
            if not gitops.is_ancestor(mirror, previous, head):
                if final:  # the agent may still be rewriting while it runs; decide at the end
                    gitops.git(mirror, "update-ref", salvage_ref(request.run_id), head)
                    gitops.push(
                        mirror,
                        request.repo.clone_url,
                        head,
                        salvage_ref(request.run_id),
                        self.token,
                    )
                    self.emit(Salvaged(ref=salvage_ref(request.run_id), sha=head))
                    # The remote keeps it now: no ref per salvaged run here for ever.
                    gitops.git(mirror, "update-ref", "-d", salvage_ref(request.run_id))
                return head
            try:
                gitops.push(
                    mirror, request.repo.clone_url, head, f"refs/heads/{request.branch}", self.token
                )
                self._pushed(previous, head)
            except PushRefused as exc:
                self._push_what_is_accepted(previous, head, exc)
            except GitError as exc:
                if not final:
                    raise
                gitops.git(mirror, "update-ref", pending_ref(request.pipeline), head)
                state.kept_reason = exc.message
                raise GitError(
                    f"{exc.message}; the run's commits are kept for this pipeline, and its next "
                    "run pushes them",
                    detail=exc.detail,
                ) from exc
            return head

    def _pushed(self, previous: str, head: str) -> None:
        new = gitops.count_commits(self.mirror, previous, head)
        self.state.last_pushed = head
        self.state.pushed_commits += new
        self.emit(Pushed(branch=self.request.branch, sha=head, commits=new))

    def _push_what_is_accepted(self, previous: str, head: str, refusal: PushRefused) -> None:
        """Push the longest run of commits the remote accepts; keep and report the rest."""
        request, mirror = self.request, self.mirror
        line = gitops.git(
            mirror,
            "rev-list", "--first-parent", "--ancestry-path", "--reverse", f"{previous}..{head}",
            bounds=gitops.UNTRUSTED,
        ).stdout.split()  # fmt: skip
        accepted, low, high = -1, 0, len(line) - 2  # line[-1] (the head) was refused
        reason = refusal.reason
        while low <= high:
            middle = (low + high) // 2
            try:
                gitops.push(
                    mirror,
                    request.repo.clone_url,
                    line[middle],
                    f"refs/heads/{request.branch}",
                    self.token,
                )
                accepted, low = middle, middle + 1
            except PushRefused as exc:
                reason, high = exc.reason, middle - 1
        if accepted >= 0:
            self._pushed(previous, line[accepted])
        first_refused = line[accepted + 1]
        gitops.git(mirror, "update-ref", pending_ref(request.pipeline), head)
        self.state.kept_reason = f"the repository refused commit {first_refused[:7]}: {reason}"
        paths = gitops.first_lines(
            mirror,
            ["diff-tree", "--no-commit-id", "--name-only", "--no-renames", "-r", "--root",
             first_refused],
            MAX_REFUSED_PATHS,
            gitops.SUMMARY,
        )  # fmt: skip
        event = PushRefusedEvent(
            branch=request.branch,
            sha=first_refused,
            reason=reason,
            paths=[printable(p, 200, one_line=True) for p in paths],
            kept_ref=pending_ref(request.pipeline),
        )
        self.state.refused = event
        self.emit(event)

    def save(
        self,
        export: Exporter,
        outcome: Outcome,
        reason: str,
        commit_message: str,
        exit_code: int | None = None,
    ) -> RunFinished:
        """Commit leftovers in the sandbox, publish (fast-forward only, or salvage), summarise."""
        notes = [reason] if reason else []
        head: str | None = None
        try:
            head = self.publish(export, final=True, commit_message=commit_message)
        except (HandoffRefused, GitError) as exc:
            notes.append(exc.message)
            outcome = Outcome.FAILURE if outcome is Outcome.SUCCESS else outcome
        except Unsaved as exc:
            notes.append(exc.message)
            outcome = Outcome.ERROR
            self.state.unsaved = True
        tip, base = self.tip, self.start.remote_sha
        commits: list[CommitInfo] = []
        diff = DiffSummary()
        if tip != base:
            commits = gitops.commits_between(self.mirror, base, tip)
            diff = gitops.summarize(self.mirror, base, tip)
        self.pipeline.remember(head, tip, base)
        gitops.git(self.mirror, "update-ref", "-d", run_ref(self.request.run_id), check=False)
        salvaged = None
        if self.state.refused is not None:
            refused = self.state.refused
            kept = (
                "are kept with this attempt (as a bundle, not on its branch)"
                if self.request.from_branch
                else "are kept for this pipeline, and its next run continues from them"
            )
            notes.append(
                f"the repository refused commit {refused.sha[:7]} ({refused.reason}); "
                f"it and the commits after it {kept}"
            )
            outcome = Outcome.FAILURE if outcome is Outcome.SUCCESS else outcome
        elif head is not None and head != tip:
            salvaged = salvage_ref(self.request.run_id)
            notes.append(
                "the agent rewrote the branch's history, so its work was kept on "
                f"{salvaged} instead of being force-pushed"
            )
            outcome = Outcome.FAILURE if outcome is Outcome.SUCCESS else outcome
        return RunFinished(
            run_id=self.request.run_id,
            outcome=outcome,
            reason="; ".join(notes),
            exit_code=exit_code,
            head_sha=tip,
            commits=commits,
            diff=diff,
            salvage_ref=salvaged,
            refused=self.state.refused,
            usage=self.state.usage,
            last_word=cut_short(self.state.last_word.text(), MAX_LAST_WORD_CHARS),
        )


def _claimed_head(output: str) -> str | None:
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "head" and gitops.SHA_RE.match(parts[1]):
            return parts[1]
    return None


def remote_tip(state: RunState, start: Start) -> str:
    """The newest commit of the pipeline on the remote, as far as the run knows."""
    return state.last_pushed or state.published_sha or start.remote_sha


def start_branch(mirror: Path, request: RunRequest) -> str:
    """The branch whose head a run starts from: its own once published, else the branch it
    is told to start from (an attempt's pipeline branch) when that exists, else its base."""
    if gitops.branch_sha(mirror, request.branch):
        return request.branch
    if request.from_branch and gitops.branch_sha(mirror, request.from_branch):
        return request.from_branch
    return request.base_branch


def workspace_branches(request: RunRequest, start: Start) -> list[str]:
    """The remote branches a run's workspace holds: its base, and the branch it starts on."""
    on = start.on or (request.branch if start.published_sha else request.base_branch)
    return [request.base_branch] + ([on] if on != request.base_branch else [])


def starting_point(mirror: Path, request: RunRequest) -> Start:
    """Where the run starts: the pipeline's kept commits when they build on its published
    head (`runner.keeper` has settled them against the branch), else that head (or the head
    of the branch it starts from), else the base branch."""
    on = start_branch(mirror, request)
    published = gitops.branch_sha(mirror, request.branch)
    base = gitops.branch_sha(mirror, on)
    if base is None:
        raise GitError(f"the base branch {request.base_branch!r} does not exist in the repository")
    remote = base
    pending = gitops.resolve(mirror, pending_ref(request.pipeline))
    if pending is not None and pending != base and gitops.is_ancestor(mirror, base, pending):
        base = pending
    return Start(request.branch, base_sha=base, published_sha=published, remote_sha=remote, on=on)
