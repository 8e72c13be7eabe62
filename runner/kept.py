"""Kept work: commits of a pipeline that its remote does not have yet, and why.

A run keeps commits when the remote refuses them or takes no push at the end. They
belong to the pipeline, not to the runner that made them: `runner.keptstore` holds
them for the whole fleet, and `runner.keeper` brings them to the pipeline's next run
on whichever runner takes it. These are the records both sides (runners, and the
dashboard) read. Pure: no I/O here.
"""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel, Field

from runner.contract import KEPT_PENDING
from runner.job import CommitInfo, is_valid_branch_name, now

MAX_LISTED = 20
"""Of a kept set's commits, the newest this many are listed (the bundle holds them all)."""


class BundleRef(BaseModel):
    """Where a kept bundle's bytes are, and what they must add up to."""

    key: str
    size: int
    sha256: str
    chunks: int


class KeptRecord(BaseModel):
    """One set of kept commits: `base..head`, where `base` is what the remote had."""

    id: str
    """`pending` (the next run continues from them) or `kept-<n>` (set aside)."""
    pipeline: str
    clone_url: str
    run_id: str = ""
    """The run that kept them ("" when no record says)."""
    reason: str
    """Why the remote does not have them, in Trimo's and the remote's words."""
    head: str
    base: str
    count: int
    commits: list[CommitInfo] = Field(default_factory=list)
    """The newest `MAX_LISTED`, oldest first."""
    branch: str = ""
    """A set-aside set pushed to the remote: the branch that holds it."""
    bundle: BundleRef | None = None
    at: datetime = Field(default_factory=now)

    @property
    def pending(self) -> bool:
        return self.id == KEPT_PENDING


def set_aside_id(number: int) -> str:
    return f"kept-{number}"


def kept_local_ref(pipeline: str, number: int) -> str:
    """Set-aside commits in a runner's mirror, while they are bundled or when nothing else
    would take them; a downloaded bundle names them so."""
    return f"refs/trimo/kept/{pipeline}-kept-{number}"


def kept_branch(pipeline: str, number: int) -> str:
    """The branch a person sees set-aside commits on: `trimo/<pipeline>-kept-<n>`."""
    branch = f"trimo/{pipeline}-kept-{number}"
    if not is_valid_branch_name(branch):
        raise ValueError(f"not a safe branch name: {branch!r}")
    return branch


def kept_patterns(pipeline: str) -> list[str]:
    """`git for-each-ref` patterns of every kept branch and kept ref of `pipeline`."""
    return [f"refs/heads/trimo/{pipeline}-kept-*", f"refs/trimo/kept/{pipeline}-kept-*"]


_NUMBER = re.compile(r"-kept-(\d{1,6})$")


def next_number(taken: list[str]) -> int:
    """The first free `<n>` after every kept branch or entry in `taken` (names ending in
    `-kept-<n>`, or entry ids `kept-<n>`)."""
    numbers = [int(m.group(1)) for name in taken if (m := _NUMBER.search(f"-{name}"))]
    return max(numbers, default=0) + 1
