"""Diff summary: files changed, lines added and removed, renames, binary files."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FileStatus = Literal["added", "modified", "removed", "renamed"]


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

    @property
    def added(self) -> int:
        return sum(f.added for f in self.files)

    @property
    def removed(self) -> int:
        return sum(f.removed for f in self.files)

    @property
    def is_empty(self) -> bool:
        return not self.files
