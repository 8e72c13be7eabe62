"""Errors that Trimo explains to the user, with what to do about them."""

from __future__ import annotations


class TrimoError(Exception):
    """An error with a message meant for a person, and a hint on how to fix it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  → {self.hint}" if self.hint else self.message


class DockerUnavailable(TrimoError):
    pass


class ImageMissing(TrimoError):
    pass


class GitError(TrimoError):
    """A git step failed. `message` is in Trimo's words; git's own text stays in `detail`,
    which only the runner's log sees (it can quote files an agent linked to)."""

    def __init__(self, message: str, hint: str = "", detail: str = "") -> None:
        super().__init__(message, hint)
        self.detail = detail


class HandoffRefused(TrimoError):
    """What the agent handed over was refused (too big, malformed, or failed verification)."""


class PushRefused(GitError):
    """The remote refused a push; `reason` is its first line of explanation."""

    def __init__(self, message: str, reason: str, detail: str = "") -> None:
        super().__init__(message, detail=detail)
        self.reason = reason


class WorkspaceError(TrimoError):
    pass
