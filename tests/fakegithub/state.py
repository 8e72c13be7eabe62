"""What the GitHub stand-in knows: apps, repositories, issues, check runs, tokens.

Every public method takes the lock: the HTTP server runs in another thread.
"""

from __future__ import annotations

import itertools
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from tests.fakegithub.modes import Chaos, Drift, Rounds
from tests.fakegithub.templates import example, recorded, status_of

UserType = Literal["User", "Bot", "Organization"]
PullRefusal = Literal["exists", "no_diff", "base_deleted"]

ROLE_TO_PERMISSION = {
    "admin": "admin",
    "maintain": "write",
    "write": "write",
    "triage": "read",
    "read": "read",
    "none": "none",
}

DEFAULT_INSTALLATION_PERMISSIONS: dict[str, str] = {
    "checks": "write",
    "contents": "write",
    "issues": "write",
    "metadata": "read",
    "pull_requests": "write",
}

TOKEN_LIFETIME = timedelta(hours=1)
CODE_LIFETIME = timedelta(minutes=10)
USER_TOKEN_LIFETIME = timedelta(hours=8)
REFRESH_TOKEN_LIFETIME = timedelta(days=183)

# Ids are unique across every FakeState of the process: githubkit caches JWTs and
# installation tokens process-wide, keyed by app id and installation id, so a reused id
# would hand one test's stand-in a token minted by another's.
_IDS = itertools.count(1001)


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class User:
    login: str
    id: int
    type: UserType = "User"


@dataclass
class App:
    id: int
    slug: str
    name: str
    client_id: str
    public_key_pem: str
    owner: str


@dataclass
class Installation:
    id: int
    account: str
    permissions: dict[str, str]
    created_at: datetime = field(default_factory=now)
    suspended: bool = False


@dataclass
class Repo:
    owner: str
    name: str
    id: int
    default_branch: str = "main"
    private: bool = True
    created_at: datetime = field(default_factory=now)
    has_issues: bool = True
    # What the git server refuses, as GitHub does (see gitserver.PUSH_RULES).
    push_protection: bool = True  # GH013 when a pushed file holds a known secret
    signed_commits: bool = False  # GH013 when a ruleset requires signatures
    max_file_bytes: int = 100 * 1024 * 1024  # GH001 above this

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass
class Reaction:
    id: int
    user: str
    content: str
    created_at: datetime = field(default_factory=now)


@dataclass
class Issue:
    owner: str
    repo: str
    number: int
    id: int
    title: str
    body: str | None
    user: str
    state: Literal["open", "closed"] = "open"
    is_pull: bool = False
    reactions: list[Reaction] = field(default_factory=list)
    created_at: datetime = field(default_factory=now)
    updated_at: datetime = field(default_factory=now)
    closed_at: datetime | None = None
    deleted: bool = False
    moved_to: tuple[str, str, int] | None = None  # transferred: (owner, repo, number)


@dataclass
class IssueComment:
    id: int
    owner: str
    repo: str
    issue_number: int
    body: str
    user: str
    via_app: bool = False
    reactions: list[Reaction] = field(default_factory=list)
    created_at: datetime = field(default_factory=now)
    updated_at: datetime = field(default_factory=now)


@dataclass
class ReviewComment:
    id: int
    owner: str
    repo: str
    pull_number: int
    body: str
    user: str
    path: str
    commit_id: str
    in_reply_to_id: int | None = None
    via_app: bool = False
    reactions: list[Reaction] = field(default_factory=list)
    created_at: datetime = field(default_factory=now)
    updated_at: datetime = field(default_factory=now)


@dataclass
class Pull:
    owner: str
    repo: str
    number: int
    id: int
    title: str
    body: str | None
    user: str
    head_ref: str
    base_ref: str
    head_sha: str
    base_sha: str
    state: Literal["open", "closed"] = "open"
    draft: bool = False
    maintainer_can_modify: bool = False
    created_at: datetime = field(default_factory=now)
    updated_at: datetime = field(default_factory=now)
    closed_at: datetime | None = None


@dataclass
class CheckRun:
    id: int
    owner: str
    repo: str
    name: str
    head_sha: str
    status: str = "queued"
    conclusion: str | None = None
    details_url: str | None = None
    external_id: str | None = None
    output: dict[str, Any] = field(default_factory=dict)
    actions: list[dict[str, Any]] = field(default_factory=list)
    started_at: datetime | None = field(default_factory=now)
    completed_at: datetime | None = None
    check_suite_id: int = 0
    app: dict[str, Any] | None = None
    """Another App's check run (CI): its `app` object; None for the App under test's."""
    updates: int = 0


@dataclass
class Token:
    token: str
    installation_id: int
    expires_at: datetime
    permissions: dict[str, str]
    repositories: list[str] | None  # repository names; None means every repository

    def covers(self, repo: str) -> bool:
        return self.repositories is None or repo in self.repositories

    def allows(self, permission: str, level: str) -> bool:
        granted = self.permissions.get(permission)
        if granted is None:
            return False
        return level == "read" or granted in ("write", "admin")


@dataclass
class Grant:
    """A code, a user token or a refresh token, and whom it stands for."""

    login: str
    expires_at: datetime
    redirect_uri: str = ""
    used: bool = False


@dataclass
class OAuthState:
    """What the stand-in's OAuth side knows; guarded by the FakeState's lock."""

    signed_in_as: str | None = None
    """The person signed in to GitHub in the browser; None makes them cancel."""
    callback_url: str | None = None
    """The App's callback URL; when set, a redirect_uri must start with it."""
    client_secret: str = field(default_factory=lambda: secrets.token_hex(20))
    codes: dict[str, Grant] = field(default_factory=dict)
    tokens: dict[str, Grant] = field(default_factory=dict)
    refresh_tokens: dict[str, Grant] = field(default_factory=dict)
    token_lifetime: timedelta = USER_TOKEN_LIFETIME


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    json: Any
    status: int = 0
    at: float = field(default_factory=time.monotonic)
    """When it was answered (`time.monotonic`)."""


@dataclass(frozen=True)
class Violation:
    method: str
    path: str
    detail: str


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    headers: dict[str, str]
    body: dict[str, Any] | None
    times: int


@dataclass
class Canned:
    """An answer served exactly as given, in place of the endpoint's own."""

    method: str
    path: re.Pattern[str]
    status: int
    data: Any
    times: int | None


@dataclass(frozen=True)
class Role:
    role_name: str
    permission: str


class FakeState:
    """All of the stand-in's data, behind one re-entrant lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.app: App | None = None
        self.installations: dict[int, Installation] = {}
        self.users: dict[str, User] = {}
        self.repos: dict[tuple[str, str], Repo] = {}
        self.roles: dict[tuple[str, str, str], Role] = {}
        self.issues: dict[tuple[str, str, int], Issue] = {}
        self.pulls: dict[tuple[str, str, int], Pull] = {}
        self.comments: dict[int, IssueComment] = {}
        self.review_comments: dict[int, ReviewComment] = {}
        self.check_runs: dict[int, CheckRun] = {}
        self.tokens: dict[str, Token] = {}
        self.requests: list[RecordedRequest] = []
        self.git_requests: list[RecordedRequest] = []
        self.violations: list[Violation] = []
        self.faults: list[Fault] = []
        self.canned: list[Canned] = []
        self.pull_refusals: list[PullRefusal] = []
        self._next_number: dict[tuple[str, str], int] = {}
        # Modes (see modes.py): seconds before every answer, drift, chaos.
        self.delay: float = 0.0
        self.rounds: Rounds | None = None
        self.git_delay: float = 0.0
        self.git_push_outage: bool = False
        """Pushes answer 503, as during a GitHub incident; fetches still work."""
        self.drift: Drift | None = None
        self.chaos: Chaos | None = None
        self.chaos_log: list[tuple[str, str, str]] = []  # (method, path, kind)
        self.oauth = OAuthState()  # the OAuth web flow and user tokens (oauth.py)

    def next_id(self) -> int:
        with self.lock:
            return next(_IDS)

    # --- users, app, installations -------------------------------------------------

    def user(self, login: str, type: UserType = "User") -> User:
        """The user called `login`, created on first use."""
        with self.lock:
            if login not in self.users:
                self.users[login] = User(login=login, id=self.next_id(), type=type)
            return self.users[login]

    def register_app(
        self, app_id: int, public_key_pem: str, slug: str = "trimo", name: str = "Trimo"
    ) -> App:
        with self.lock:
            self.app = App(
                id=app_id,
                slug=slug,
                name=name,
                client_id=f"Iv1.{secrets.token_hex(8)}",
                public_key_pem=public_key_pem,
                owner=self.user("trimo-dev", "Organization").login,
            )
            self.user(self.bot_login, "Bot")
            return self.app

    @property
    def bot_login(self) -> str:
        """The login of the app's bot user, e.g. `trimo[bot]`."""
        with self.lock:
            if self.app is None:
                raise RuntimeError("register_app first")
            return f"{self.app.slug}[bot]"

    def add_installation(
        self, account: str, permissions: Mapping[str, str] | None = None
    ) -> Installation:
        with self.lock:
            self.user(account, "Organization")
            inst = Installation(
                id=self.next_id(),
                account=account,
                permissions=dict(permissions or DEFAULT_INSTALLATION_PERMISSIONS),
            )
            self.installations[inst.id] = inst
            return inst

    def installation_for(self, owner: str) -> Installation | None:
        with self.lock:
            return next((i for i in self.installations.values() if i.account == owner), None)

    # --- tokens ----------------------------------------------------------------------

    def issue_token(
        self,
        installation_id: int,
        permissions: Mapping[str, str] | None = None,
        repositories: list[str] | None = None,
    ) -> Token:
        with self.lock:
            inst = self.installations[installation_id]
            token = Token(
                token="ghs_" + secrets.token_urlsafe(27).replace("-", "a").replace("_", "b")[:36],
                installation_id=installation_id,
                expires_at=now() + TOKEN_LIFETIME,
                permissions=dict(permissions or inst.permissions),
                repositories=repositories,
            )
            self.tokens[token.token] = token
            return token

    def valid_token(self, value: str) -> Token | None:
        """The token called `value` if it was issued and has not expired."""
        with self.lock:
            token = self.tokens.get(value)
            if token is None or token.expires_at <= now():
                return None
            if token.installation_id not in self.installations:
                return None  # the installation was removed: its tokens are revoked
            return token

    def expire_tokens(self) -> None:
        """Make every issued token expired, as an hour passing would."""
        with self.lock:
            for token in self.tokens.values():
                token.expires_at = now() - timedelta(seconds=1)

    # --- repositories and roles ------------------------------------------------------

    def add_repo(self, owner: str, name: str, default_branch: str = "main") -> Repo:
        with self.lock:
            self.user(owner)
            repo = Repo(owner=owner, name=name, id=self.next_id(), default_branch=default_branch)
            self.repos[(owner, name)] = repo
            return repo

    def repo(self, owner: str, name: str) -> Repo | None:
        with self.lock:
            return self.repos.get((owner, name))

    def set_role(
        self, owner: str, repo: str, login: str, role_name: str, permission: str | None = None
    ) -> None:
        """Give `login` a role on a repository; `permission` defaults from the role."""
        with self.lock:
            self.user(login)
            self.roles[(owner, repo, login)] = Role(
                role_name=role_name, permission=permission or ROLE_TO_PERMISSION[role_name]
            )

    def role_of(self, owner: str, repo: str, login: str) -> Role:
        with self.lock:
            return self.roles.get((owner, repo, login), Role("read", "read"))

    # --- issues, pulls and comments --------------------------------------------------

    def _number(self, owner: str, repo: str) -> int:
        key = (owner, repo)
        self._next_number[key] = self._next_number.get(key, 0) + 1
        return self._next_number[key]

    def add_issue(
        self, owner: str, repo: str, title: str, body: str | None = "", user: str = "octocat"
    ) -> Issue:
        with self.lock:
            self.user(user)
            issue = Issue(
                owner=owner,
                repo=repo,
                number=self._number(owner, repo),
                id=self.next_id(),
                title=title,
                body=body,
                user=user,
            )
            self.issues[(owner, repo, issue.number)] = issue
            return issue

    def add_pull(
        self,
        owner: str,
        repo: str,
        *,
        title: str,
        body: str | None,
        user: str,
        head_ref: str,
        base_ref: str,
        head_sha: str,
        base_sha: str,
        draft: bool = False,
        maintainer_can_modify: bool = False,
    ) -> Pull:
        """A pull request and the issue that carries its number."""
        with self.lock:
            issue = self.add_issue(owner, repo, title, body, user)
            issue.is_pull = True
            pull = Pull(
                owner=owner,
                repo=repo,
                number=issue.number,
                id=self.next_id(),
                title=title,
                body=body,
                user=user,
                head_ref=head_ref,
                base_ref=base_ref,
                head_sha=head_sha,
                base_sha=base_sha,
                draft=draft,
                maintainer_can_modify=maintainer_can_modify,
            )
            self.pulls[(owner, repo, pull.number)] = pull
            return pull

    def add_comment(
        self, owner: str, repo: str, number: int, body: str, user: str, via_app: bool = False
    ) -> IssueComment:
        with self.lock:
            self.user(user)
            comment = IssueComment(
                id=self.next_id(),
                owner=owner,
                repo=repo,
                issue_number=number,
                body=body,
                user=user,
                via_app=via_app,
            )
            self.comments[comment.id] = comment
            return comment

    def add_review_comment(
        self,
        owner: str,
        repo: str,
        pull_number: int,
        body: str,
        user: str,
        *,
        path: str = "README.md",
        in_reply_to_id: int | None = None,
        via_app: bool = False,
    ) -> ReviewComment:
        with self.lock:
            self.user(user)
            pull = self.pulls[(owner, repo, pull_number)]
            comment = ReviewComment(
                id=self.next_id(),
                owner=owner,
                repo=repo,
                pull_number=pull_number,
                body=body,
                user=user,
                path=path,
                commit_id=pull.head_sha,
                in_reply_to_id=in_reply_to_id,
                via_app=via_app,
            )
            self.review_comments[comment.id] = comment
            return comment

    def add_reaction(
        self, target: list[Reaction], user: str, content: str
    ) -> tuple[Reaction, bool]:
        """Add a reaction unless `user` already gave it; returns it and whether it is new."""
        with self.lock:
            for reaction in target:
                if reaction.user == user and reaction.content == content:
                    return reaction, False
            reaction = Reaction(id=self.next_id(), user=user, content=content)
            target.append(reaction)
            return reaction, True

    def add_check_run(
        self,
        owner: str,
        repo: str,
        name: str,
        head_sha: str,
        suite_id: int | None = None,
        app: dict[str, Any] | None = None,
    ) -> CheckRun:
        """A check run in a suite of its own (or `suite_id`), of the App under test or `app`."""
        with self.lock:
            run = CheckRun(
                id=self.next_id(),
                owner=owner,
                repo=repo,
                name=name,
                head_sha=head_sha,
                check_suite_id=suite_id or self.next_id(),
                app=app,
            )
            self.check_runs[run.id] = run
            return run

    # --- queries for tests -----------------------------------------------------------

    def check_runs_for(self, sha: str) -> list[CheckRun]:
        with self.lock:
            return [r for r in self.check_runs.values() if r.head_sha == sha]

    def comments_on(
        self, number: int, owner: str | None = None, repo: str | None = None
    ) -> list[IssueComment]:
        with self.lock:
            return [
                c
                for c in self.comments.values()
                if c.issue_number == number
                and (owner is None or c.owner == owner)
                and (repo is None or c.repo == repo)
            ]

    def review_comments_on(self, pull_number: int, owner: str, repo: str) -> list[ReviewComment]:
        with self.lock:
            return [
                c
                for c in self.review_comments.values()
                if (c.owner, c.repo, c.pull_number) == (owner, repo, pull_number)
            ]

    def pulls_for(self, head_ref: str) -> list[Pull]:
        with self.lock:
            return [p for p in self.pulls.values() if p.head_ref == head_ref]

    def requests_to(self, method: str, path_regex: str) -> list[RecordedRequest]:
        pattern = re.compile(path_regex)
        with self.lock:
            return [r for r in self.requests if r.method == method and pattern.search(r.path)]

    # --- recording, violations and faults --------------------------------------------

    def record(self, request: RecordedRequest, git: bool = False) -> None:
        with self.lock:
            (self.git_requests if git else self.requests).append(request)

    def violate(self, method: str, path: str, detail: str) -> None:
        with self.lock:
            self.violations.append(Violation(method, path, detail))

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        headers: Mapping[str, str] | None = None,
        body: dict[str, Any] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next `times` matching API requests with `status` (checked before auth)."""
        with self.lock:
            self.faults.append(
                Fault(
                    method=method.upper(),
                    path=re.compile(path_regex),
                    status=status,
                    headers={k.lower(): v for k, v in (headers or {}).items()},
                    body=body,
                    times=times,
                )
            )

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.method == method and fault.path.search(path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
            return None

    def serve(
        self,
        method: str,
        path_regex: str,
        data: Any,
        status: int = 200,
        times: int | None = None,
    ) -> None:
        """Answer matching API requests (after authentication) with `data` exactly as given.

        For GitHub's own answers: `serve("GET", r"/permission$", *example_reply(name))`.
        `times=None` serves it until `canned` is cleared.
        """
        with self.lock:
            self.canned.append(Canned(method.upper(), re.compile(path_regex), status, data, times))

    def serve_example(
        self, method: str, path_regex: str, name: str, times: int | None = None
    ) -> None:
        """Serve GitHub's documented example `api/openapi/<name>.json`, byte for byte."""
        self.serve(method, path_regex, example(name), status_of(name), times)

    def serve_recorded(
        self, method: str, path_regex: str, fixture: str, index: int = 0, times: int | None = None
    ) -> None:
        """Serve an answer real GitHub gave (`api/octokit-fixtures/<fixture>`), as recorded."""
        data, status = recorded(fixture, index)
        self.serve(method, path_regex, data, status, times)

    def take_canned(self, method: str, path: str) -> Canned | None:
        with self.lock:
            for canned in self.canned:
                if canned.method == method and canned.path.search(path):
                    if canned.times is not None:
                        canned.times -= 1
                        if canned.times <= 0:
                            self.canned.remove(canned)
                    return canned
            return None

    # --- what happens on GitHub while Trimo works (targeted faults) --------------------

    def delete_issue(self, owner: str, repo: str, number: int) -> None:
        """Someone deleted the issue: it and its comments answer 404 from now on."""
        with self.lock:
            self.issues[(owner, repo, number)].deleted = True

    def transfer_issue(self, owner: str, repo: str, number: int, to: tuple[str, str, int]) -> None:
        """The issue moved to another repository: it and its comments answer 301."""
        with self.lock:
            self.issues[(owner, repo, number)].moved_to = to

    def delete_comment(self, comment_id: int) -> None:
        with self.lock:
            del self.comments[comment_id]

    def edit_comment(self, comment_id: int, body: str) -> None:
        """GitHub carries out an edit by itself: a person's, or a write it never answered."""
        with self.lock:
            comment = self.comments[comment_id]
            comment.body = body
            comment.updated_at = now()

    def delete_check_run(self, check_run_id: int) -> None:
        with self.lock:
            del self.check_runs[check_run_id]

    def refuse_pull(self, reason: PullRefusal) -> None:
        """The next POST /pulls gets GitHub's 422 for `reason`.

        "exists": a person opens a pull request from the same branch just before;
        "no_diff": no commits between base and head; "base_deleted": base is invalid.
        """
        with self.lock:
            self.pull_refusals.append(reason)

    def disable_issues(self, owner: str, repo: str) -> None:
        """Issues turned off in the repository's settings: 410 on issue endpoints."""
        with self.lock:
            self.repos[(owner, repo)].has_issues = False

    def remove_installation(self, account: str) -> None:
        """The App was uninstalled from `account`: its tokens stop working (401)."""
        with self.lock:
            inst = self.installation_for(account)
            if inst is not None:
                del self.installations[inst.id]

    def suspend_installation(self, account: str) -> None:
        """The installation was suspended: every call with its tokens gets 403."""
        with self.lock:
            inst = self.installation_for(account)
            assert inst is not None
            inst.suspended = True

    def revoke_permission(self, account: str, permission: str) -> None:
        """An owner took `permission` away from the App: 403 "not accessible by integration"."""
        with self.lock:
            inst = self.installation_for(account)
            assert inst is not None
            inst.permissions.pop(permission, None)
            for token in self.tokens.values():
                if token.installation_id == inst.id:
                    token.permissions.pop(permission, None)

    # --- signing in (oauth.py) -------------------------------------------------------

    def sign_in_as(self, login: str | None) -> None:
        """The person signed in to GitHub in the browser (None: they cancel the sign-in)."""
        with self.lock:
            if login is not None:
                self.user(login)
            self.oauth.signed_in_as = login

    def expire_codes(self) -> None:
        """Make every OAuth code expired, as ten minutes passing would."""
        with self.lock:
            for grant in self.oauth.codes.values():
                grant.expires_at = now() - timedelta(seconds=1)

    def expire_user_tokens(self) -> None:
        """Make every user token expired, as eight hours passing would (refresh still works)."""
        with self.lock:
            for grant in self.oauth.tokens.values():
                grant.expires_at = now() - timedelta(seconds=1)

    def revoke_user_tokens(self, login: str) -> None:
        """`login` revokes the App's authorisation: their tokens and refresh tokens die."""
        with self.lock:
            for grants in (self.oauth.tokens, self.oauth.refresh_tokens):
                for value in [k for k, g in grants.items() if g.login == login]:
                    del grants[value]
