"""Local pipelines: their runs, kept in the repository's own git directory.

`<git-common-dir>/trimo/pipelines/<name>.json` travels with the repository and
needs no server; the branch is `trimo/<name>`. Attempts of one prompt (`trimo run
--attempts`) are kept beside the runs, by set: attempt N's branch is `trimo/<name>-attempt-N`,
and N counts across the pipeline's attempts, never reused.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field

from runner import gitops
from runner.errors import TrimoError
from runner.job import RunRecord
from runner.ranking import DEFAULT_RANK_BY, AttemptResult, RankKey

PIPELINE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_ATTEMPT_LIKE = re.compile(r"(?:-attempt-[0-9]+|\.a[0-9]+)$")
"""Names an attempt's branch or workspace would take: `x-attempt-2` is attempt 2 of `x`."""


class LocalAttempt(BaseModel):
    """One attempt of a set: its branch, its run, and its evidence for the ranking."""

    number: int
    branch: str
    result: AttemptResult
    run: RunRecord | None = None
    """None until it ends: still running, or its `trimo run` was killed."""


class AttemptSet(BaseModel):
    """The attempts one `trimo run` started together, all from commit `start_sha`."""

    start_sha: str
    started_at: datetime
    rank_by: tuple[RankKey, ...] = DEFAULT_RANK_BY
    attempts: list[LocalAttempt] = Field(default_factory=list)
    """Best first, as they were ranked."""
    picked: int | None = None
    picked_at: datetime | None = None
    picked_sha: str | None = None
    """The commit the pick put on the pipeline branch."""
    cleaned: bool = False
    """Its branches were deleted, the keep window after its pick."""

    @property
    def order(self) -> str:
        """`verify, failing checks, diff, cost`: how it was ranked, for people."""
        return ", ".join(key.replace("_", " ") for key in self.rank_by)

    def attempt(self, number: int) -> LocalAttempt | None:
        return next((a for a in self.attempts if a.number == number), None)


class LocalPipeline(BaseModel):
    name: str
    branch: str
    base_branch: str
    runs: list[RunRecord] = Field(default_factory=list)
    attempts_started: int = 0
    """The last attempt number given out: the next set's numbers follow it."""
    attempt_sets: list[AttemptSet] = Field(default_factory=list)

    def attempt_branch(self, number: int) -> str:
        """Attempt `number`'s branch: a sibling of the pipeline's (git refuses a branch under
        another branch's name, so not `trimo/<name>/attempt-N`)."""
        return f"{self.branch}-attempt-{number}"

    def take_numbers(self, count: int) -> list[int]:
        """The next `count` attempt numbers (save the pipeline before using them)."""
        first = self.attempts_started + 1
        self.attempts_started += count
        return list(range(first, first + count))

    def set_of(self, number: int) -> AttemptSet | None:
        return next((s for s in self.attempt_sets if s.attempt(number) is not None), None)


def repo_root(path: Path) -> Path:
    """The top of the git repository containing `path`, or a clear error."""
    proc = gitops.git(path, "rev-parse", "--show-toplevel", check=False)
    if proc.returncode != 0:
        raise TrimoError(
            f"{path} is not inside a git repository.",
            "run `trimo run` inside a repository, or pass --repo PATH",
        )
    return Path(proc.stdout.strip())


def current_branch(repo: Path) -> str | None:
    proc = gitops.git(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    return proc.stdout.strip() or None


def _store(repo: Path) -> Path:
    common = gitops.git(repo, "rev-parse", "--git-common-dir").stdout.strip()
    return (repo / common).resolve() / "trimo" / "pipelines"


def name_from_prompt(prompt: str) -> str:
    words = re.findall(r"[a-z0-9]+", prompt.lower())[:6]
    name = "-".join(words)[:40].strip("-") or "run"
    return f"{name}-run" if _ATTEMPT_LIKE.search(name) else name


def validate_name(name: str) -> str:
    if not PIPELINE_NAME_RE.match(name):
        raise TrimoError(
            f"{name!r} is not a valid pipeline name.",
            "use lowercase letters, digits, '.', '_' and '-' (up to 63 characters)",
        )
    if _ATTEMPT_LIKE.search(name):
        raise TrimoError(
            f"{name!r} is not a valid pipeline name: it is how an attempt of another "
            "pipeline is named.",
            "leave out the -attempt-N or .aN ending",
        )
    return name


def load(repo: Path, name: str) -> LocalPipeline | None:
    path = _store(repo) / f"{name}.json"
    if not path.exists():
        return None
    try:
        return LocalPipeline.model_validate_json(path.read_text())
    except ValueError as exc:
        raise TrimoError(f"The record of pipeline {name!r} is damaged: {path}: {exc}") from exc


def save(repo: Path, pipeline: LocalPipeline) -> None:
    store = _store(repo)
    store.mkdir(parents=True, exist_ok=True)
    tmp = store / f".{pipeline.name}.json.tmp"
    tmp.write_text(json.dumps(pipeline.model_dump(mode="json"), indent=2))
    tmp.replace(store / f"{pipeline.name}.json")


def list_all(repo: Path) -> list[LocalPipeline]:
    store = _store(repo)
    found = []
    for path in sorted(store.glob("*.json")) if store.is_dir() else []:
        pipeline = load(repo, path.stem)
        if pipeline is not None:
            found.append(pipeline)
    return found


def unique_name(repo: Path, base: str) -> str:
    name, n = base, 2
    while load(repo, name) is not None:
        name, n = f"{base}-{n}", n + 1
    return name
