"""A pipeline's branch against its base, file by file, from GitHub's compare API."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Final

from githubkit.exception import RequestError, RequestFailed

from app.github.client import Comparison, GitHubApp, UnexpectedAnswer, failure_detail
from app.runs.pipelines import Pipeline
from runner.printable import printable

log = logging.getLogger("trimo.dashboard")

FILES_SHOWN: Final = 100
PATCH_LINES: Final = 400
PATCH_CHARS: Final = 60_000


@dataclass(frozen=True)
class PatchLine:
    kind: str
    """`add`, `del`, `hunk` or `ctx`."""
    text: str


@dataclass(frozen=True)
class DiffFile:
    name: str
    old_name: str
    status: str
    additions: int
    deletions: int
    lines: list[PatchLine]
    cut: bool
    """Only the start of the patch is shown."""
    no_patch: bool
    """GitHub gave no patch: a binary file, or one too big to show."""


@dataclass(frozen=True)
class DiffPage:
    files: list[DiffFile] = field(default_factory=list)
    more_files: int = 0
    additions: int = 0
    deletions: int = 0
    commits: int = 0
    url: str = ""
    problem: str = ""


def _patch_lines(patch: str) -> tuple[list[PatchLine], bool]:
    text = patch[:PATCH_CHARS]
    raw = text.split("\n")
    cut = len(patch) > PATCH_CHARS or len(raw) > PATCH_LINES
    lines = []
    for line in raw[:PATCH_LINES]:
        kind = {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "ctx")
        lines.append(PatchLine(kind, printable(line.expandtabs(4), 2000)))
    return lines, cut


def diff_page(comparison: Comparison) -> DiffPage:
    """Pure: GitHub's comparison as the page shows it, capped and cleaned."""
    files = []
    for item in comparison.files[:FILES_SHOWN]:
        lines, cut = _patch_lines(item.patch) if item.patch else ([], False)
        files.append(
            DiffFile(
                name=printable(item.filename, 500),
                old_name=printable(item.previous_filename or "", 500),
                status=printable(item.status, 20),
                additions=item.additions,
                deletions=item.deletions,
                lines=lines,
                cut=cut,
                no_patch=item.patch is None,
            )
        )
    return DiffPage(
        files=files,
        more_files=max(0, len(comparison.files) - FILES_SHOWN),
        additions=sum(f.additions for f in comparison.files),
        deletions=sum(f.deletions for f in comparison.files),
        commits=comparison.total_commits,
        url=comparison.html_url if comparison.html_url.startswith(("https://", "http://")) else "",
    )


async def load_diff(github: GitHubApp | None, pipeline: Pipeline) -> DiffPage:
    """The diff of the pipeline's branch, or what kept it from being shown."""
    if github is None:
        return DiffPage(problem="The App's GitHub key is not configured on this server.")
    try:
        api = await github.repo(pipeline.installation_id, pipeline.repo)
        comparison = await api.compare(pipeline.base_branch, pipeline.branch)
    except RequestFailed as exc:
        return DiffPage(problem=f"GitHub would not compare the branches: {failure_detail(exc)}")
    except (RequestError, UnexpectedAnswer, TimeoutError) as exc:
        log.warning("%s: no diff: %s", pipeline.id, exc)
        return DiffPage(problem="GitHub did not answer; reload the page to try again.")
    if comparison is None:
        return DiffPage(problem="The branch has not been pushed yet.")
    return diff_page(comparison)
