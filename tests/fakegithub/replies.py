"""Answers of the stand-in's REST side, and GitHub's error shapes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DOCS = "https://docs.github.com/rest"


@dataclass
class Reply:
    status: int
    data: Any
    headers: dict[str, str] = field(default_factory=dict)


class GitHubError(Exception):
    """An error answer in GitHub's shape: message, documentation_url, status, errors."""

    def __init__(
        self,
        status: int,
        message: str,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.headers = headers or {}

    def reply(self) -> Reply:
        data: dict[str, Any] = {
            "message": self.message,
            "documentation_url": DOCS,
            "status": str(self.status),
        }
        if self.errors is not None:
            data["errors"] = self.errors
        return Reply(self.status, data, dict(self.headers))


class Moved(GitHubError):
    """301 (307 for writes) to where a transferred resource lives now, as GitHub redirects."""

    def __init__(self, url: str, method: str) -> None:
        super().__init__(301 if method in ("GET", "HEAD") else 307, "Moved Permanently")
        self.url = url

    def reply(self) -> Reply:
        data = {
            "message": "Moved Permanently",
            "url": self.url,
            "documentation_url": "https://docs.github.com/v3/#http-redirects",
        }
        return Reply(self.status, data, {"location": self.url})


def not_found() -> GitHubError:
    return GitHubError(404, "Not Found")


def validation_failed(resource: str, code: str, **fields: Any) -> GitHubError:
    """422 "Validation Failed" with one error item, as GitHub reports semantic errors."""
    return GitHubError(422, "Validation Failed", [{"resource": resource, "code": code, **fields}])


def default_fault_body(status: int, headers: dict[str, str]) -> dict[str, Any]:
    lowered = {k.lower() for k in headers}
    if status == 429 or (status == 403 and "retry-after" not in lowered):
        message = "API rate limit exceeded for installation."
    elif status == 403:
        message = (
            "You have exceeded a secondary rate limit. Please wait a few minutes before you"
            " try again."
        )
    elif status >= 500:
        message = "Server Error"
    else:
        message = "Injected failure"
    return {"message": message, "documentation_url": DOCS, "status": str(status)}
