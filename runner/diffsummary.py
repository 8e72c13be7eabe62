"""Diff summary: files changed, lines added and removed, renames, binary files.

`summarize_diff` reads `git diff -M` output with unidiff. It never raises: when unidiff
rejects the text, a best-effort line scan fills the summary and `parse_error` says why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from unidiff.patch import PatchedFile, PatchSet

FileStatus = Literal["added", "modified", "removed", "renamed"]

DEV_NULL = "/dev/null"


class FileChange(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    old_path: str | None = None
    status: FileStatus = "modified"
    added: int = 0
    removed: int = 0
    binary: bool = False


class DiffSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    files: list[FileChange] = Field(default_factory=list)
    parse_error: str | None = None
    """Why unidiff rejected the diff; `files` then come from a best-effort scan."""
    truncated: str | None = None
    """Why only part of the diff is summarised (it was over the size cap)."""
    unlisted: int = 0
    """Changed files not in `files`: too many to list, or past the size cap."""
    at_least: bool = False
    """Counting stopped early: at least `files_changed` files changed."""

    @property
    def added(self) -> int:
        return sum(f.added for f in self.files)

    @property
    def removed(self) -> int:
        return sum(f.removed for f in self.files)

    @property
    def files_changed(self) -> int:
        return len(self.files) + self.unlisted

    @property
    def is_empty(self) -> bool:
        return not self.files and not self.unlisted


def summarize_diff(diff_text: str) -> DiffSummary:
    """Summarise unified diff text (`git diff -M` style); never raises."""
    try:
        patches = PatchSet(diff_text, metadata_only=True)  # counts only: ~7x faster
        files = [_from_patched_file(patched) for patched in patches]
    except Exception as exc:  # unidiff is not only UnidiffParseError on odd input
        return DiffSummary(
            files=_scan(diff_text), parse_error=f"{type(exc).__name__}: {exc}".strip()
        )
    return DiffSummary(files=files)


def _from_patched_file(patched: PatchedFile) -> FileChange:
    info = patched.patch_info
    if info and info[0].startswith("diff --git "):
        # git says "new file mode"/"deleted file mode" (unidiff maps them to /dev/null);
        # an empty file gaining lines also starts at "@@ -0,0" but was not added.
        added = patched.source_file == DEV_NULL
        removed = patched.target_file == DEV_NULL
    else:
        added = patched.is_added_file
        removed = patched.is_removed_file
    status = _status(added, removed, patched.is_rename)
    return FileChange(
        path=unquote_git_path(patched.path),
        old_path=_clean_name(patched.source_file) if status == "renamed" else None,
        status=status,
        added=patched.added,
        removed=patched.removed,
        binary=patched.is_binary_file,
    )


def _status(added: bool, removed: bool, renamed: bool) -> FileStatus:
    if added:
        return "added"
    if removed:
        return "removed"
    return "renamed" if renamed else "modified"


_C_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}
_OCTAL = re.compile(r"[0-3][0-7]{2}")
_PREFIX = re.compile(r"^[abciow12]/")


def unquote_git_path(name: str) -> str:
    """Decode a name git wrote C-quoted (`"caf\\303\\251.txt"`); other names are unchanged."""
    if len(name) < 2 or not (name.startswith('"') and name.endswith('"')):
        return name
    body, out, i = name[1:-1], bytearray(), 0
    while i < len(body):
        char = body[i]
        if char == "\\" and _OCTAL.match(body, i + 1):
            out.append(int(body[i + 1 : i + 4], 8))
            i += 4
        elif char == "\\" and body[i + 1 : i + 2] in _C_ESCAPES:
            out.append(_C_ESCAPES[body[i + 1]])
            i += 2
        else:
            out += char.encode("utf-8", "replace")
            i += 1
    return out.decode("utf-8", "replace")


def _clean_name(name: str) -> str:
    """A header name without quotes, timestamp or git's a/ b/ prefix (as unidiff's `path`)."""
    if not name.startswith('"'):
        name = name.split("\t", 1)[0]
    elif "\t" in name and not name.endswith('"'):
        name = name.rsplit("\t", 1)[0]
    quoted = len(name) >= 2 and name.startswith('"') and name.endswith('"')
    inner = name[1:-1] if quoted else name
    inner = _PREFIX.sub("", inner, count=1)
    return unquote_git_path(f'"{inner}"') if quoted else inner


# ---- best-effort scan, used only when unidiff rejects the text ----------------------------

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_BINARY = re.compile(r"^Binary files (.+?) and (.+?) differ$")
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_GIT_HEADERS = (
    re.compile(rf"^({_QUOTED}|a/.*?) ({_QUOTED}|b/.*)$"),
    re.compile(r"^(\S+) (.+)$"),
)


@dataclass
class _Draft:
    old: str | None = None
    new: str | None = None
    git: bool = False
    created: bool = False
    deleted: bool = False
    renamed: bool = False
    binary: bool = False
    closed: bool = False
    saw_source: bool = False
    hunks: int = 0
    starts_empty: bool = False
    ends_empty: bool = False
    added: int = 0
    removed: int = 0

    def result(self) -> FileChange | None:
        old = None if self.old == DEV_NULL else self.old
        new = None if self.new == DEV_NULL else self.new
        path = new or old
        if path is None:
            return None
        if self.git:
            added, removed = self.created, self.deleted
        else:  # unidiff's rule: one hunk from or to "0,0" adds or removes the file
            added = self.old == DEV_NULL or (self.hunks == 1 and self.starts_empty)
            removed = self.new == DEV_NULL or (self.hunks == 1 and self.ends_empty)
        renamed = self.renamed or (old is not None and new is not None and old != new)
        status = _status(added, removed, renamed)
        return FileChange(
            path=path,
            old_path=old if status == "renamed" else None,
            status=status,
            added=self.added,
            removed=self.removed,
            binary=self.binary,
        )


def _git_header_names(rest: str) -> tuple[str | None, str | None]:
    """Names from `diff --git <a> <b>`; equal halves win, as git itself reads them."""
    half = len(rest) // 2
    if len(rest) % 2 and rest[half] == " ":
        a, b = _clean_name(rest[:half]), _clean_name(rest[half + 1 :])
        if a == b:
            return a, b
    for pattern in _GIT_HEADERS:
        match = pattern.match(rest)
        if match is not None:
            return _clean_name(match[1]), _clean_name(match[2])
    return None, None


def _is_file_header(lines: list[str], i: int) -> bool:
    return (
        lines[i].startswith("--- ")
        and i + 2 < len(lines)
        and lines[i + 1].startswith("+++ ")
        and lines[i + 2].startswith("@@ ")
    )


def _scan(text: str) -> list[FileChange]:
    """Split on file headers and count hunk lines; trusts hunk lengths but stops early."""
    lines = text.split("\n")  # not splitlines(): a lone CR is part of a diff line
    drafts: list[_Draft] = []
    draft: _Draft | None = None
    old_left = new_left = 0
    in_binary_patch = False
    for i, line in enumerate(lines):
        if (old_left > 0 or new_left > 0) and draft is not None and not _is_file_header(lines, i):
            tag = line[:1]
            if tag == "-":
                draft.removed += 1
                old_left -= 1
                continue
            if tag == "+":
                draft.added += 1
                new_left -= 1
                continue
            if tag in (" ", ""):
                old_left, new_left = old_left - 1, new_left - 1
                continue
            if tag == "\\":
                continue
        old_left = new_left = 0
        if line.startswith("diff --git "):
            old, new = _git_header_names(line[len("diff --git ") :])
            draft = _Draft(old=old, new=new, git=True)
            drafts.append(draft)
            in_binary_patch = False
            continue
        if in_binary_patch:
            continue
        hunk = _HUNK.match(line)
        if hunk is not None:
            if draft is not None:
                old_left = int(hunk[2]) if hunk[2] is not None else 1
                new_left = int(hunk[4]) if hunk[4] is not None else 1
                draft.hunks += 1
                draft.starts_empty = hunk[1] == "0" and old_left == 0
                draft.ends_empty = hunk[3] == "0" and new_left == 0
            continue
        if _is_file_header(lines, i):
            if draft is None or draft.closed or draft.hunks or draft.saw_source:
                draft = _Draft()
                drafts.append(draft)
            draft.saw_source = True
            draft.old = _clean_name(line[4:])
            draft.new = _clean_name(lines[i + 1][4:])
            continue
        binary = _BINARY.match(line)
        if binary is not None:
            if draft is None or draft.closed or draft.hunks or not draft.git:
                draft = _Draft(old=_clean_name(binary[1]), new=_clean_name(binary[2]))
                drafts.append(draft)
            draft.binary = draft.closed = True
            continue
        if draft is None:
            continue
        if line.startswith("GIT binary patch"):
            draft.binary = in_binary_patch = True
        elif line.startswith("new file mode "):
            draft.created = True
        elif line.startswith("deleted file mode "):
            draft.deleted = True
        elif line.startswith(("rename from ", "copy from ")):
            draft.renamed = True
            draft.old = draft.old or unquote_git_path(line.split(" ", 2)[2])
        elif line.startswith(("rename to ", "copy to ")):
            draft.renamed = True
            draft.new = draft.new or unquote_git_path(line.split(" ", 2)[2])
    return [change for d in drafts if (change := d.result()) is not None]
