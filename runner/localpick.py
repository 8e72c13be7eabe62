"""`trimo pick NAME N`: attempt N's commits become the pipeline's branch, in the person's own
repository; and, the keep window after a pick, the set's attempt branches are deleted.

Every attempt starts from the pipeline branch's head, so a first pick is a fast-forward. Within
the keep window (`TRIMO_ATTEMPTS_KEEP_DAYS`) a later pick may switch: the branch is reset to
the new attempt, and the answer says so. Past the window, or once later runs have built on the
pick, nothing is reset: that would drop commits.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from runner import gitops
from runner.errors import TrimoError
from runner.localstate import AttemptSet, LocalAttempt, LocalPipeline


def pick(
    root: Path,
    pipeline: LocalPipeline,
    number: int,
    keep_days: float,
    now: datetime,
    why: str,
) -> list[str]:
    """Make attempt `number` the pipeline's branch (`why`: who or what picked it); what was
    done, one line each. The caller saves `pipeline`. TrimoError when it cannot be done."""
    found = pipeline.set_of(number)
    if found is None:
        known = [a.number for s in pipeline.attempt_sets for a in s.attempts]
        raise TrimoError(
            f"Pipeline {pipeline.name} has no attempt {number}.",
            f"its attempts: {', '.join(map(str, sorted(known)))}"
            if known
            else f'start some with: trimo run --pipeline {pipeline.name} --attempts 2 "…"',
        )
    attempt = found.attempt(number)
    assert attempt is not None
    if found.cleaned:
        raise TrimoError(
            f"Attempt {number}'s branch is gone: the attempts of its set were deleted "
            f"{keep_days:g} days after attempt {found.picked} was picked.",
            "start new attempts from the pipeline's branch",
        )
    if attempt.run is None:
        raise TrimoError(
            f"Attempt {number} has not ended in its trimo run: it is still running, or that "
            "trimo run was killed (the next one saves its work on its branch).",
            f"wait for it; or keep what {attempt.branch} holds yourself: "
            f"git branch -f {pipeline.branch} {attempt.branch}",
        )
    if attempt.result.commits == 0:
        raise TrimoError(
            f"Attempt {number} made no commits ({attempt.result.standing}): there is nothing "
            "to keep.",
            "pick an attempt with commits (trimo pipelines lists them)",
        )
    target = gitops.branch_sha(root, attempt.branch)
    if target is None:
        raise TrimoError(f"Attempt {number}'s branch {attempt.branch} is not in the repository.")
    branch = pipeline.branch
    head = gitops.branch_sha(root, branch)
    if head == target:
        return [f"{branch} is already attempt {number}'s head ({target[:7]}); nothing to do."]
    switched = _switching(found, head, keep_days, now)
    if not switched and head is not None and not gitops.is_ancestor(root, head, target):
        raise TrimoError(
            f"{branch} has moved on since these attempts started (it is at {head[:7]}, which "
            f"attempt {number} does not build on): picking it would drop those commits.",
            f"start new attempts from the branch, or move it yourself: "
            f"git branch -f {branch} {attempt.branch}",
        )
    _not_checked_out(root, branch)
    _move(root, branch, target, head)
    previous = found.attempt(found.picked) if found.picked is not None else None
    kept = attempt.run.model_copy(update={"attempts": attempts_note(found, attempt, why)})
    earlier = previous.run.run_id if previous is not None and previous.run else None
    at = next((i for i, r in enumerate(pipeline.runs) if r.run_id == earlier), None)
    if at is None:
        pipeline.runs.append(kept)
    else:
        pipeline.runs[at] = kept  # the switch takes the earlier pick's place in the history
    found.picked, found.picked_at, found.picked_sha = number, now, target
    done = f"{branch} is now attempt {number}'s head ({target[:7]}, {why})"
    if switched and previous is not None and head is not None:
        return [
            f"{done}: reset from attempt {previous.number}'s head ({head[:7]}), picked "
            f"{_ago(now, found)} ago; within TRIMO_ATTEMPTS_KEEP_DAYS ({keep_days:g}) a "
            "later pick may switch.",
            f"Attempt {previous.number}'s commits stay on {previous.branch} until the other "
            "attempts' branches are deleted.",
        ]
    return [f"{done}: a fast-forward from {head[:7] if head else 'nothing'}."]


def _switching(found: AttemptSet, head: str | None, keep_days: float, now: datetime) -> bool:
    """Whether this pick switches from an earlier pick of the set (the branch is still where
    that pick put it); TrimoError when that pick is older than the keep window."""
    if found.picked is None or found.picked_at is None or head != found.picked_sha:
        return False
    if now - found.picked_at > timedelta(days=keep_days):
        raise TrimoError(
            f"Attempt {found.picked} was picked {_ago(now, found)} ago, longer than "
            f"TRIMO_ATTEMPTS_KEEP_DAYS ({keep_days:g}) allows to switch.",
            "start new attempts from the pipeline's branch",
        )
    return True


def _ago(now: datetime, found: AttemptSet) -> str:
    seconds = (now - found.picked_at).total_seconds() if found.picked_at else 0.0
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 86400 else f"{seconds / 86400:.1f} days"


def attempts_note(found: AttemptSet, attempt: LocalAttempt, why: str) -> str:
    """The picked run's note in the pipeline's history, for later runs' context: which
    attempts ran, how they ranked, and why this one was kept. No agent-written text."""
    ranked = ", ".join(
        f"#{a.number} {a.result.agent} ({a.result.standing})" for a in found.attempts
    )
    return (
        f"This was attempt #{attempt.number} of {len(found.attempts)} of the same prompt, "
        f"ranked by {found.order}: {ranked}. It was kept: {why}; the others' "
        "commits are not on this branch."
    )


def _not_checked_out(root: Path, branch: str) -> None:
    listing = gitops.git(root, "worktree", "list", "--porcelain").stdout
    if f"branch refs/heads/{branch}" in listing.splitlines():
        raise TrimoError(
            f"{branch} is checked out, so Trimo will not move it under your work.",
            "switch to another branch first (git switch -)",
        )


def _move(root: Path, branch: str, target: str, head: str | None) -> None:
    """`branch` to `target`, only if it is still at `head` (a compare-and-swap)."""
    old = head or "0" * 40
    moved = gitops.git(root, "update-ref", f"refs/heads/{branch}", target, old, check=False)
    if moved.returncode != 0:
        raise TrimoError(
            f"{branch} changed while Trimo was moving it: {moved.stderr.strip()[:200]}",
            "run trimo pick again",
        )


def clean(root: Path, pipeline: LocalPipeline, keep_days: float, now: datetime) -> list[str]:
    """Delete the attempt branches of sets picked longer than `keep_days` ago, each only while
    it is where its attempt left it; what was done, one line each. The caller saves."""
    said = []
    for found in pipeline.attempt_sets:
        if found.cleaned or found.picked_at is None:
            continue
        if now - found.picked_at <= timedelta(days=keep_days):
            continue
        for attempt in found.attempts:
            left = attempt.result.head_sha or found.start_sha
            deleted = gitops.git(
                root, "update-ref", "-d", f"refs/heads/{attempt.branch}", left, check=False
            )
            if deleted.returncode == 0:
                said.append(f"deleted {attempt.branch} (picked: attempt {found.picked})")
            elif gitops.branch_sha(root, attempt.branch) is not None:
                said.append(f"kept {attempt.branch}: it has moved since its attempt ended")
        found.cleaned = True
    return said
