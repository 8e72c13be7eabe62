"""A pipeline's kept commits, carried to whichever runner takes its next run.

Before a run, under the pipeline's lock (`Keeper.restore`): the kept set in Trimo's
store comes into this runner's mirror as the pipeline's pending ref, verified
first, and is settled against the branch as it is now:

- the branch has them already: they are forgotten;
- the branch is where they left it: the run continues from them;
- the branch moved on without them (a person pushed): they are replayed on its new
  head in a sandbox (`runner.replay`) and the run continues from the replayed
  commits; if they conflict, they are set aside on `trimo/<pipeline>-kept-<n>`,
  pushed when the remote takes it, else as a bundle in the store (offered on the
  dashboard), else, as a last resort, on this runner only.

After a run (`Keeper.share`): what the remote still lacks is stored for the fleet,
or forgotten once the remote has it. Nothing is dropped that is not on the remote or
kept somewhere else, and each outcome a person should know of is a `Kept` event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runner import gitops, handoff
from runner.contract import KEPT_PENDING
from runner.delivery import pending_ref, start_branch
from runner.errors import GitError, PushRefused, TrimoError
from runner.job import Kept, KeptWhy, RunEvent, RunRequest
from runner.kept import (
    MAX_LISTED,
    KeptRecord,
    kept_branch,
    kept_local_ref,
    kept_patterns,
    next_number,
    set_aside_id,
)
from runner.keptstore import KeptStore
from runner.pipelinedir import PipelineDir

log = logging.getLogger(__name__)

Replay = Callable[[str, str, str, str], str | None]
"""`runner.replay.Replayer.replay`: (onto branch, upstream, kept ref, into) → the new head,
or None when the commits conflict; raises TrimoError when it cannot be tried."""

SET_ASIDE_TRIES = 3
"""Kept branch numbers tried when another one appears on the remote meanwhile."""


@dataclass
class Keeper:
    request: RunRequest
    mirror: Path
    pipeline: PipelineDir
    store: KeptStore | None
    """None in local mode: kept commits stay in the local mirror."""
    emit: Callable[[RunEvent], None]
    token: str | None
    runner_id: str
    replay: Replay
    limits: handoff.Limits

    @property
    def ref(self) -> str:
        return pending_ref(self.request.pipeline)

    # -- before a run -------------------------------------------------------------------

    def restore(self) -> None:
        """Bring the pipeline's kept commits here and settle them against its branch."""
        record = self._stored()
        local = gitops.resolve(self.mirror, self.ref)
        if record is not None and not (local and self._has(local, record.head)):
            local = self._take(record, local)
        elif record is None and local is not None and self._set_aside_elsewhere(local):
            gitops.git(self.mirror, "update-ref", "-d", self.ref)
            local = None
        if local is None:
            return
        about = record if record is not None and record.head == local else None
        request, mirror = self.request, self.mirror
        onto = start_branch(mirror, request)
        remote = gitops.branch_sha(mirror, onto)
        if remote is None:
            return  # no base branch: the run stops on that, and they stay kept
        if self._has(remote, local):
            self._forget()
        elif self._has(local, remote):
            count = gitops.count_commits(mirror, remote, local)
            kept_by = about.run_id if about else ""
            self.emit(Kept(action="continued", kept_by=kept_by, commits=count, sha=local))
        elif request.mode == "code":  # a discovery run leaves them to the next coding run
            self._moved_on(about, local, onto, remote)

    def _moved_on(self, about: KeptRecord | None, local: str, onto: str, remote: str) -> None:
        """The branch moved on without the kept commits: replay them on it, or set them aside."""
        mirror = self.mirror
        if about is not None and self._has(local, about.base):
            upstream = about.base
        else:
            upstream = gitops.git(
                mirror, "merge-base", local, remote, bounds=gitops.SUMMARY
            ).stdout.strip()
        kept_by = about.run_id if about else ""
        why: KeptWhy = "conflict"
        problem = ""
        try:
            replayed = self.replay(onto, upstream, self.ref, self.ref)
        except TrimoError as exc:
            log.warning("could not replay the kept commits of %s: %s", self.request.pipeline, exc)
            replayed, why, problem = None, "replay_failed", exc.message
        if replayed is None:
            self._set_aside(local, upstream, remote, about, why, problem)
            self._forget()
        elif replayed == remote:  # the branch has their changes already
            self._forget()
            self.emit(Kept(action="replayed", kept_by=kept_by, commits=0, sha=remote))
        else:
            try:
                self._keep_pending(replayed, remote, about.reason if about else "", kept_by)
            except TrimoError as exc:  # kept here; the run's end tries again
                log.warning("could not store the replayed commits: %s", exc)
            count = gitops.count_commits(mirror, remote, replayed)
            self.emit(Kept(action="replayed", kept_by=kept_by, commits=count, sha=replayed))

    def _take(self, record: KeptRecord, local: str | None) -> str | None:
        """Bring the stored set into the mirror as the pending ref; what the pending ref held
        that it lacks is set aside. A set that cannot be taken (it fails verification) is
        set aside in the store instead, and the pending ref stays as it was."""
        mirror = self.mirror
        if gitops.resolve(mirror, record.head) != record.head:
            try:
                self._fetch(record)
            except TrimoError as exc:
                log.warning("kept commits of %s not taken: %s", self.request.pipeline, exc)
                self._set_aside_stored(record, exc.message)
                return local
        if local is not None and not self._has(record.head, local):
            remote = gitops.branch_sha(mirror, self.request.branch) or record.base
            base = (
                gitops.git(
                    mirror, "merge-base", local, remote, bounds=gitops.SUMMARY
                ).stdout.strip()
                or remote
            )
            self._set_aside(local, base, remote, None, "beside_newer")
        gitops.git(mirror, "update-ref", self.ref, record.head)
        return record.head

    def _fetch(self, record: KeptRecord) -> None:
        """The stored bundle into the mirror, verified and checked as any hand-over."""
        assert self.store is not None
        bundle = self.pipeline.incoming / f"{self.request.run_id}.kept"
        landing = f"refs/trimo/restored/{self.request.pipeline}"
        try:
            self.store.read_bundle(record, bundle)
            head, _ = handoff.import_bundle(
                self.mirror, bundle, landing, [record.base], self.limits
            )
        finally:
            bundle.unlink(missing_ok=True)
        gitops.git(self.mirror, "update-ref", "-d", landing)
        if head != record.head:
            raise TrimoError("it holds other commits than its record names")

    def _set_aside_elsewhere(self, local: str) -> bool:
        """Whether another runner already set aside the commits this mirror still holds as
        pending (the store has them under a kept-<n> entry)."""
        if self.store is None:
            return False
        return any(entry.head == local for entry in self.store.entries(self.request.pipeline))

    # -- setting aside ------------------------------------------------------------------

    def _set_aside(
        self,
        head: str,
        base: str,
        remote: str,
        about: KeptRecord | None,
        why: KeptWhy,
        problem: str = "",
    ) -> None:
        """Keep `base..head` where a person finds them: a kept branch on the remote, else a
        bundle in the store (`about`'s, when it is their stored record), else a ref on this
        runner. Told as a `Kept` event."""
        request, mirror = self.request, self.mirror
        reason, kept_by = (about.reason, about.run_id) if about else ("", "")
        told = Kept(
            action="branch",
            kept_by=kept_by,
            commits=gitops.count_commits(mirror, base, head),
            sha=head,
            why=why,
            problem=problem,
        )
        number, refused = self._next_number(), ""
        for _ in range(SET_ASIDE_TRIES):
            branch = kept_branch(request.pipeline, number)
            try:
                gitops.push(
                    mirror, request.repo.clone_url, head, f"refs/heads/{branch}", self.token
                )
            except PushRefused as exc:
                if exc.reason == gitops.NOT_FAST_FORWARD:  # someone took that number meanwhile
                    number += 1
                    continue
                refused = exc.reason
            except GitError as exc:
                refused = exc.message
            else:
                record = self._record(set_aside_id(number), head, base, reason, kept_by, branch)
                self._quietly_put(record)
                self.emit(told.model_copy(update={"branch": branch}))
                return
            break
        local, entry = kept_local_ref(request.pipeline, number), set_aside_id(number)
        gitops.git(mirror, "update-ref", local, head)
        refused = refused or "every kept branch name was taken"
        try:
            if self.store is None:
                raise TrimoError("there is none in local mode")
            if about is not None and about.bundle is not None:
                self.store.rename(about, entry, reason)
            else:
                self._put_bundle(self._record(entry, head, base, reason, kept_by), local, remote)
            gitops.git(mirror, "update-ref", "-d", local)
            self.emit(
                told.model_copy(update={"action": "bundle", "entry": entry, "refused": refused})
            )
        except TrimoError as exc:
            update = {"action": "runner", "refused": refused, "unstored": exc.message, "ref": local}
            self.emit(told.model_copy(update=update))

    def _set_aside_stored(self, record: KeptRecord, problem: str) -> None:
        """A stored pending set no runner can take (it fails verification): set aside in the
        store as it is, for a person to look at."""
        assert self.store is not None
        entry = set_aside_id(self._next_number())
        said = f"its bundle could not be taken: {problem}"
        self.store.rename(record, entry, f"{record.reason}; {said}" if record.reason else said)
        self.emit(
            Kept(
                action="bundle",
                kept_by=record.run_id,
                commits=record.count,
                sha=record.head,
                why="unverified",
                problem=problem,
                entry=entry,
            )
        )

    def _next_number(self) -> int:
        pipeline = self.request.pipeline
        taken = gitops.git(
            self.mirror, "for-each-ref", "--format=%(refname)",
            *kept_patterns(pipeline),
        ).stdout.split()  # fmt: skip
        if self.store is not None:
            taken += [entry.id for entry in self.store.entries(pipeline)]
        return next_number(taken)

    # -- after a run --------------------------------------------------------------------

    def share(self, tip: str, reason: str) -> str:
        """After a run that got the remote to `tip`: store the pending commits the remote
        lacks for the fleet, or forget them once it has them. `reason`: why this run kept
        commits, if it did. Words for the run's reason when they could not be stored."""
        local = gitops.resolve(self.mirror, self.ref)
        if local is None:
            return ""
        if self._has(tip, local):
            self._forget()
            return ""
        if self.store is None:
            return ""
        try:
            record = self._stored()
            if record is not None and (record.head, record.base) == (local, tip):
                return ""
            kept_by = self.request.run_id if reason or record is None else record.run_id
            self._keep_pending(local, tip, reason or (record.reason if record else ""), kept_by)
        except TrimoError as exc:
            log.warning("kept commits of %s not stored: %s", self.request.pipeline, exc)
            return (
                f"they could not be kept in Trimo's store ({exc.message}), so they are only on "
                f"runner {self.runner_id} ({self.ref}) and only a run there continues from them"
            )
        return ""

    # -- the store ----------------------------------------------------------------------

    def _stored(self) -> KeptRecord | None:
        if self.store is None:
            return None
        record = self.store.get(self.request.pipeline, KEPT_PENDING)
        if record is not None and record.clone_url != self.request.repo.clone_url:
            log.warning("kept commits of %s are of another repository", self.request.pipeline)
            return None
        return record

    def _record(
        self, entry: str, head: str, base: str, reason: str, kept_by: str, branch: str = ""
    ) -> KeptRecord:
        commits = gitops.commits_between(self.mirror, base, head)
        return KeptRecord(
            id=entry,
            pipeline=self.request.pipeline,
            clone_url=self.request.repo.clone_url,
            run_id=kept_by,
            reason=reason,
            head=head,
            base=base,
            count=gitops.count_commits(self.mirror, base, head),
            commits=commits[-MAX_LISTED:],
            branch=branch,
        )

    def _keep_pending(self, head: str, base: str, reason: str, kept_by: str) -> None:
        """`base..head` (at the pending ref) as the pipeline's pending set in the store."""
        if self.store is not None:
            record = self._record(KEPT_PENDING, head, base, reason, kept_by)
            self._put_bundle(record, self.ref, base)

    def _put_bundle(self, record: KeptRecord, ref: str, base: str) -> None:
        """Bundle `ref` (minus `base`) from the mirror, and store it with `record`."""
        assert self.store is not None
        bundle = self.pipeline.incoming / f"{self.request.run_id}.bundle-out"
        try:
            gitops.git(
                self.mirror, "bundle", "create", "--quiet", str(bundle), ref, f"^{base}",
                what="could not bundle the kept commits", bounds=gitops.UNTRUSTED,
            )  # fmt: skip
            self.store.put(record, bundle)
        finally:
            bundle.unlink(missing_ok=True)

    def _quietly_put(self, record: KeptRecord) -> None:
        """Record a set that is safe elsewhere (on a branch): a failure only loses the listing."""
        if self.store is not None:
            try:
                self.store.put(record, None)
            except TrimoError as exc:
                log.warning("could not list kept commits on the dashboard: %s", exc)

    def _forget(self) -> None:
        """The pending set is on the remote now, or kept elsewhere: drop it here and in the
        store."""
        gitops.git(self.mirror, "update-ref", "-d", self.ref, check=False)
        if self.store is not None:
            try:
                self.store.drop(self.request.pipeline, KEPT_PENDING)
            except TrimoError as exc:  # the next run finds the remote has them, and retries
                log.warning("could not forget kept commits in the store: %s", exc)

    # -- helpers ------------------------------------------------------------------------

    def _has(self, head: str, commit: str) -> bool:
        """Whether `head` contains `commit`."""
        return gitops.is_ancestor(self.mirror, commit, head)
