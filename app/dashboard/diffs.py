"""A pipeline's branch against its base (or an attempt against where it started), file by
file, from GitHub's compare API.

Files by folder (the top folder's first), in natural order (page2 before page10); each
patch's lines numbered on both sides, and paired into rows for the split view. `diff_page`
is pure.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
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


_HUNK: Final = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@")
_DIGITS: Final = re.compile(r"(\d+)")


@dataclass(frozen=True)
class PatchLine:
    kind: str
    """`add`, `del`, `hunk` or `ctx`."""
    text: str
    old: int | None = None
    """Its line number in the base (None: an added line, or a hunk's header)."""
    new: int | None = None
    """Its line number on the branch (None: a deleted line, or a hunk's header)."""


@dataclass(frozen=True)
class SplitRow:
    """One row of the split view: the base's line on the left, the branch's on the right."""

    left: PatchLine | None
    right: PatchLine | None


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
    rows: list[SplitRow] = field(default_factory=list)
    digest: str = ""
    """What the file's change is, in short: a "viewed" mark holds for this change only."""


@dataclass(frozen=True)
class DiffPage:
    files: list[DiffFile] = field(default_factory=list)
    more_files: int = 0
    additions: int = 0
    deletions: int = 0
    commits: int = 0
    url: str = ""
    problem: str = ""

    def seen(self, viewed: Mapping[str, str]) -> int:
        """How many files a person marked viewed as they are now (`viewed`: name → digest)."""
        return sum(1 for f in self.files if viewed.get(f.name) == f.digest)

    def tree(self) -> list[tuple[str, list[tuple[int, DiffFile]]]]:
        """The files by folder, as they are in order: (folder, [(its index, the file)])."""
        folders: dict[str, list[tuple[int, DiffFile]]] = {}
        for index, item in enumerate(self.files):
            folders.setdefault(item.name.rpartition("/")[0], []).append((index, item))
        return list(folders.items())


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sorts names as people count: page2 before page10."""
    return tuple((0, int(p)) if p.isdigit() else (1, p.lower()) for p in _DIGITS.split(name))


def _patch_lines(patch: str) -> tuple[list[PatchLine], bool]:
    text = patch[:PATCH_CHARS]
    raw = text.split("\n")
    cut = len(patch) > PATCH_CHARS or len(raw) > PATCH_LINES
    lines = []
    old = new = 0
    for line in raw[:PATCH_LINES]:
        kind = {"+": "add", "-": "del", "@": "hunk", "\\": "note"}.get(line[:1], "ctx")
        shown = printable(line.expandtabs(4), 2000)
        if kind == "hunk":
            found = _HUNK.match(line)
            old, new = (int(found.group(1)), int(found.group(2))) if found else (0, 0)
            lines.append(PatchLine(kind, shown))
        elif kind == "note":  # "\ No newline at end of file"
            lines.append(PatchLine("hunk", shown))
        elif kind == "add":
            lines.append(PatchLine(kind, shown[1:], new=new))
            new += 1
        elif kind == "del":
            lines.append(PatchLine(kind, shown[1:], old=old))
            old += 1
        elif line:  # an empty string only ends the patch
            lines.append(PatchLine(kind, shown[1:], old=old, new=new))
            old, new = old + 1, new + 1
    return lines, cut


def split_rows(lines: list[PatchLine]) -> list[SplitRow]:
    """`lines` side by side: a run of deletions beside the additions that follow it."""
    rows: list[SplitRow] = []
    dels: list[PatchLine] = []
    adds: list[PatchLine] = []

    def flush() -> None:
        for index in range(max(len(dels), len(adds))):
            left = dels[index] if index < len(dels) else None
            rows.append(SplitRow(left, adds[index] if index < len(adds) else None))
        dels.clear()
        adds.clear()

    for line in lines:
        if line.kind == "del" and not adds:
            dels.append(line)
        elif line.kind == "add":
            adds.append(line)
        else:
            flush()
            if line.kind == "del":
                dels.append(line)
            else:
                rows.append(SplitRow(line, line))
    flush()
    return rows


def diff_page(comparison: Comparison) -> DiffPage:
    """Pure: GitHub's comparison as the page shows it, capped and cleaned."""
    files = []
    for item in comparison.files[:FILES_SHOWN]:
        lines, cut = _patch_lines(item.patch) if item.patch else ([], False)
        change = f"{item.filename}\0{item.previous_filename}\0{item.status}\0{item.patch}"
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
                rows=split_rows(lines),
                digest=hashlib.sha256(change.encode()).hexdigest()[:16],
            )
        )
    files.sort(key=lambda f: tuple(natural_key(part) for part in f.name.rpartition("/")[::2]))
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
    return await compare_diff(github, pipeline, pipeline.base_branch, pipeline.branch)


async def compare_diff(
    github: GitHubApp | None, pipeline: Pipeline, base: str, head: str
) -> DiffPage:
    """What `head` changes against `base` in the pipeline's repository, or what kept it
    from being shown."""
    if github is None:
        return DiffPage(problem="The App's GitHub key is not configured on this server.")
    try:
        api = await github.repo(pipeline.installation_id, pipeline.repo)
        comparison = await api.compare(base, head)
    except RequestFailed as exc:
        return DiffPage(problem=f"GitHub would not compare the branches: {failure_detail(exc)}")
    except (RequestError, UnexpectedAnswer, TimeoutError) as exc:
        log.warning("%s: no diff: %s", pipeline.id, exc)
        return DiffPage(problem="GitHub did not answer; reload the page to try again.")
    if comparison is None:
        return DiffPage(problem="The branch has not been pushed yet.")
    return diff_page(comparison)
