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
    pass


class WorkspaceError(TrimoError):
    pass
