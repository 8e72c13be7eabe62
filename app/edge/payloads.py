"""The parts of webhook payloads that handlers read, as typed models.

Liberal in what they accept (see `app.github.tolerant`): unknown fields are ignored, and a field
Trimo can do without may be missing or null (it reads as its default). Only what a handler
cannot work without (ids, numbers, the repository) is required; a payload without it is
malformed.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.conversation.policy import is_bot
from app.github.client import PullInfo
from app.github.tolerant import Tolerant

_Model = Tolerant


class User(_Model):
    login: str = ""
    type: str | None = None

    @property
    def is_bot(self) -> bool:
        return is_bot(self.login, self.type)


class Owner(_Model):
    login: str = ""


class Repository(_Model):
    name: str
    full_name: str
    owner: Owner = Owner()
    clone_url: str
    default_branch: str = "main"


class Installation(_Model):
    id: int


class Issue(_Model):
    number: int
    title: str = ""
    body: str | None = None
    state: str = "open"
    user: User = User()
    pull_request: dict[str, Any] | None = None
    """Present when the issue is a pull request."""


class Comment(_Model):
    id: int
    body: str | None = None
    user: User = User()
    author_association: str = ""
    """GitHub's word for the author (OWNER, MEMBER, COLLABORATOR, CONTRIBUTOR, NONE...): a
    hint only, never a permission."""
    performed_via_github_app: dict[str, Any] | None = None

    @property
    def by_bot(self) -> bool:
        """Bots, apps (Trimo included) never command."""
        return self.user.is_bot or self.performed_via_github_app is not None


class ReviewComment(Comment):
    path: str = ""
    diff_hunk: str = ""
    line: int | None = None
    original_line: int | None = None
    start_line: int | None = None


class BranchRepo(_Model):
    full_name: str | None = None


class Branch(_Model):
    ref: str
    sha: str
    repo: BranchRepo | None = None


class PullRequest(_Model):
    number: int
    title: str = ""
    body: str | None = None
    state: str = "open"
    head: Branch
    base: Branch

    def info(self, repository: Repository) -> PullInfo:
        return PullInfo(
            number=self.number,
            state=self.state,
            title=self.title,
            body=self.body or "",
            head_ref=self.head.ref,
            head_sha=self.head.sha,
            head_repo=self.head.repo.full_name if self.head.repo else None,
            base_ref=self.base.ref,
            base_repo=(self.base.repo.full_name if self.base.repo else None)
            or repository.full_name,
        )


class Label(_Model):
    name: str = ""


class AppRef(_Model):
    id: int


class CheckRun(_Model):
    id: int
    external_id: str | None = None
    head_sha: str = ""
    app: AppRef | None = None


class CheckSuite(_Model):
    id: int
    head_branch: str | None = None
    head_sha: str = ""
    conclusion: str | None = None
    app: AppRef | None = None


class RequestedAction(_Model):
    identifier: str = ""


class RepoEvent(_Model):
    """Fields every repository event has."""

    repository: Repository
    sender: User = User()
    installation: Installation | None = None


class IssueCommentEvent(RepoEvent):
    issue: Issue
    comment: Comment


class ReviewCommentEvent(RepoEvent):
    pull_request: PullRequest
    comment: ReviewComment


class IssueLabeledEvent(RepoEvent):
    issue: Issue
    label: Label


class IssueClosedEvent(RepoEvent):
    issue: Issue


class PullClosedEvent(RepoEvent):
    pull_request: PullRequest


class PullEditedEvent(RepoEvent):
    pull_request: PullRequest


class PushEvent(RepoEvent):
    ref: str
    after: str = ""
    deleted: bool = False


class CheckRunEvent(RepoEvent):
    check_run: CheckRun
    requested_action: RequestedAction | None = None


class CheckSuiteEvent(RepoEvent):
    check_suite: CheckSuite


class InstalledRepo(_Model):
    full_name: str


class InstallationAccount(_Model):
    login: str = ""


class FullInstallation(_Model):
    id: int
    account: InstallationAccount | None = None
    suspended_at: str | None = None


class InstallationEvent(_Model):
    action: str = ""
    installation: FullInstallation
    repositories: list[InstalledRepo] | None = None


class InstallationRepositoriesEvent(_Model):
    action: str = ""
    installation: FullInstallation
    repositories_added: list[InstalledRepo] = Field(default_factory=list)
    repositories_removed: list[InstalledRepo] = Field(default_factory=list)
