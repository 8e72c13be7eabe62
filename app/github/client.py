"""A thin I/O layer over githubkit: the App's clients, scoped tokens and the calls handlers make.

Nothing here decides anything; handlers do. `GitHubApp` talks as the App (JWT) and as an
installation; `RepoAPI` is that installation's view of one repository.

githubkit does the requests, authentication and retries; its response models do not read
the answers. Real GitHub (and GitHub Enterprise Server more so) drifts from the OpenAPI
description those models come from, so each answer is read as JSON through a small model
of the few fields Trimo uses, tolerating missing, extra and null fields.
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar
from urllib.parse import quote

import redis.asyncio as aioredis
from githubkit import AppAuthStrategy, AppInstallationAuthStrategy, GitHub
from githubkit.cache import MemCacheStrategy
from githubkit.exception import RateLimitExceeded, RequestError, RequestFailed
from pydantic import Field, ValidationError

from app.conversation.policy import ROLE_ORDER
from app.github.tolerant import Tolerant
from app.github.transport import SharedTransport
from app.ops import metrics
from app.redisio import as_text, hmget
from app.settings import AppSettings

log = logging.getLogger("trimo.github")

ReactionContent = Literal["+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"]
ReactionTarget = Literal["issue_comment", "review_comment", "issue"]
CheckConclusion = Literal["success", "failure", "neutral", "cancelled", "timed_out", "skipped"]

FILE_CACHE_PREFIX: Final = "trimo:gh:file:"
BLOB_CACHE_PREFIX: Final = "trimo:gh:blob:"
BLOB_CACHE_SECONDS: Final = 7 * 24 * 3600
HTTP_TIMEOUT_SECONDS: Final = 15.0
PERMISSIONS_TTL_SECONDS: Final = 300.0
MAX_CHECK_TEXT: Final = 65_000
MAX_TITLE: Final = 250
MAX_BODY: Final = 65_000


class FileUnreadable(Exception):
    """A file exists but its content cannot be had through the contents API."""


class UnexpectedAnswer(Exception):
    """GitHub answered without a field Trimo cannot do without (an id, a number)."""


@dataclass(frozen=True)
class CheckAction:
    """A button on a check run: label ≤ 20, identifier ≤ 20, description ≤ 40 characters."""

    label: str
    identifier: str
    description: str


@dataclass(frozen=True)
class PullInfo:
    """What handlers need to know about a pull request."""

    number: int
    state: str
    title: str
    body: str
    head_ref: str
    head_sha: str
    head_repo: str | None
    """Full name of the head repository; None when the fork was deleted."""
    base_ref: str
    base_repo: str

    @property
    def is_fork(self) -> bool:
        return self.head_repo is None or self.head_repo.lower() != self.base_repo.lower()


# --- the fields of GitHub's answers that Trimo reads -----------------------------------------


class Answer(Tolerant):
    """Base of the answer models: unknown fields ignored, null or missing reads as default."""


class Created(Answer):
    id: int


class Numbered(Answer):
    number: int


class OpenPull(Answer):
    number: int
    title: str = ""


class Title(Answer):
    title: str | None = None


class InstallationAnswer(Answer):
    permissions: dict[str, str] = Field(default_factory=dict)


class AccessToken(Answer):
    token: str


class AppIdentity(Answer):
    """`GET /app`: the App GitHub knows these credentials as."""

    id: int
    slug: str = ""
    name: str = ""


class Permission(Answer):
    """`GET .../collaborators/{user}/permission`: only the top-level fields (no `user.*`)."""

    permission: str | None = None
    role_name: str | None = None


class RefObject(Answer):
    sha: str


class GitRef(Answer):
    object: RefObject


class ContentFile(Answer):
    type: str | None = None
    encoding: str | None = None
    content: str | None = None
    sha: str | None = None
    size: int | None = None


class CheckRunRef(Answer):
    id: int
    external_id: str | None = None


class BranchName(Answer):
    name: str


class RepoInfo(Answer):
    clone_url: str
    default_branch: str = "main"


class ComparedFile(Answer):
    filename: str
    status: str = "modified"
    additions: int = 0
    deletions: int = 0
    previous_filename: str | None = None
    patch: str | None = None
    """Absent for binary files and for diffs too big for GitHub to show."""


class Comparison(Answer):
    """`GET .../compare/{base}...{head}`: the files it changes (at most 300 are listed)."""

    status: str = ""
    ahead_by: int = 0
    behind_by: int = 0
    total_commits: int = 0
    html_url: str = ""
    files: list[ComparedFile] = Field(default_factory=list)


class CheckRunList(Answer):
    check_runs: list[CheckRunRef] = Field(default_factory=list)


class CheckOutput(Answer):
    title: str = ""
    summary: str = ""


class CheckRunResult(Answer):
    name: str = ""
    conclusion: str = ""
    output: CheckOutput = CheckOutput()


class CheckRunResults(Answer):
    check_runs: list[CheckRunResult] = Field(default_factory=list)


MAX_SUITE_RUNS: Final = 100


class RepoName(Answer):
    full_name: str | None = None


class PullSide(Answer):
    ref: str
    sha: str
    repo: RepoName | None = None


class PullAnswer(Answer):
    number: int
    state: str | None = "open"
    title: str | None = ""
    body: str | None = None
    head: PullSide
    base: PullSide


A = TypeVar("A", bound=Answer)


def read(model: type[A], data: object) -> A:
    """`data` (decoded JSON) read as `model`; `UnexpectedAnswer` when a needed field is missing."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise UnexpectedAnswer(f"GitHub's answer lacks what Trimo needs: {exc}") from exc


def _json(response: Any) -> object:
    try:
        data: object = response.json()
    except ValueError as exc:
        raise UnexpectedAnswer(f"GitHub's answer is not JSON ({response.status_code})") from exc
    return data


# --- failures ----------------------------------------------------------------------------------


def status_of(exc: BaseException) -> int | None:
    return exc.response.status_code if isinstance(exc, RequestFailed) else None


def _not_found(exc: RequestFailed) -> bool:
    return exc.response.status_code == 404


def is_transient(exc: BaseException) -> bool:
    """Whether a GitHub failure may pass if tried again later (network, limits, 5xx)."""
    if isinstance(exc, RateLimitExceeded):
        return True
    if isinstance(exc, RequestFailed):
        status = exc.response.status_code
        return status >= 500 or status in (401, 408, 409, 429)
    return isinstance(exc, RequestError)


def is_gone(exc: BaseException) -> bool:
    """The thing is no longer there for the App: deleted or moved (404, 301), disabled (410),
    or out of reach (403: a permission removed, the App suspended or uninstalled)."""
    return status_of(exc) in (301, 403, 404, 410) and not isinstance(exc, RateLimitExceeded)


def failure_detail(exc: RequestFailed) -> str:
    """GitHub's own words for a failed request: status and message."""
    try:
        message = exc.response.json().get("message", "")
    except (ValueError, AttributeError):
        message = ""
    return f"{exc.response.status_code} {message}".strip()


class GitHubApp:
    """The App's access to GitHub: `base_url` from settings, so GHES and the stand-in work."""

    def __init__(
        self,
        settings: AppSettings,
        redis: aioredis.Redis,
        *,
        auto_retry: bool = True,
        timeout: float = HTTP_TIMEOUT_SECONDS,
    ) -> None:
        if settings.github_app_id is None:
            raise ValueError("TRIMO_GITHUB_APP_ID is not set")
        self.redis = redis
        self._workflows: dict[int, tuple[float, bool]] = {}
        self._auth = AppAuthStrategy(settings.github_app_id, settings.private_key())
        self._transport = SharedTransport()
        # Installation tokens stay in this process's memory: runners can read Redis.
        self._app = GitHub(
            self._auth,
            base_url=settings.github_api_url,
            user_agent="trimo-app",
            timeout=timeout,
            cache_strategy=MemCacheStrategy(),
            http_cache=False,
            auto_retry=auto_retry,
            async_transport=self._transport,
            async_event_hooks={
                "request": [metrics.count_github_request],
                "response": [metrics.count_github_response],
            },
        )

    async def installation_client(
        self, installation_id: int
    ) -> GitHub[AppInstallationAuthStrategy]:
        """A client authenticated as installation `installation_id`."""
        return self._app.with_auth(self._auth.as_installation(installation_id))

    async def identity(self) -> AppIdentity:
        """Who GitHub says this App is; an answer means the App id and private key work."""
        return read(AppIdentity, _json(await self._app.arequest("GET", "/app")))

    async def mint_token(self, installation_id: int, repo_name: str) -> str:
        """A fresh token for the one repository `repo_name` (no owner), able only to push
        (and to push workflow files, when the installation granted `workflows`)."""
        permissions = {"contents": "write", "metadata": "read"}
        if await self.grants_workflows(installation_id):
            permissions["workflows"] = "write"
        response = await self._app.arequest(
            "POST",
            f"/app/installations/{installation_id}/access_tokens",
            json={"repositories": [repo_name], "permissions": permissions},
        )
        return read(AccessToken, _json(response)).token

    async def grants_workflows(self, installation_id: int) -> bool:
        """Whether the installation lets the App change workflow files (`trimo setup
        --workflows`), from its permissions, read at most every few minutes."""
        now = time.monotonic()
        cached = self._workflows.get(installation_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            response = await self._app.arequest("GET", f"/app/installations/{installation_id}")
            granted = read(InstallationAnswer, _json(response)).permissions.get("workflows")
        except (RequestError, RequestFailed, UnexpectedAnswer) as exc:
            log.warning("could not read installation %s's permissions: %s", installation_id, exc)
            granted = None
        allowed = granted == "write"
        self._workflows[installation_id] = (now + PERMISSIONS_TTL_SECONDS, allowed)
        return allowed

    async def repo(self, installation_id: int, full_name: str) -> RepoAPI:
        """Installation `installation_id`'s view of repository `full_name`."""
        owner, _, name = full_name.partition("/")
        client = await self.installation_client(installation_id)
        return RepoAPI(client, self.redis, owner, name)


class RepoAPI:
    """The calls handlers make on one repository, as the installation."""

    def __init__(
        self,
        client: GitHub[AppInstallationAuthStrategy],
        redis: aioredis.Redis,
        owner: str,
        name: str,
    ) -> None:
        self._gh = client
        self._redis = redis
        self.owner = owner
        self.name = name

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    def _url(self, path: str) -> str:
        return f"/repos/{self.owner}/{self.name}/{path}"

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """One request on this repository; the githubkit response (its JSON not validated)."""
        return await self._gh.arequest(
            method, self._url(path), json=json, params=params, headers=headers
        )

    async def react(self, target: ReactionTarget, target_id: int, content: ReactionContent) -> None:
        """React to an issue comment, a review comment or an issue (by number)."""
        path = {
            "issue_comment": f"issues/comments/{target_id}/reactions",
            "review_comment": f"pulls/comments/{target_id}/reactions",
            "issue": f"issues/{target_id}/reactions",
        }[target]
        await self._call("POST", path, json={"content": content})

    async def comment(self, number: int, body: str) -> int:
        """Post `body` on issue or pull request `number`; the new comment's id."""
        response = await self._call(
            "POST", f"issues/{number}/comments", json={"body": body[:MAX_BODY]}
        )
        return read(Created, _json(response)).id

    async def comment_exists(self, comment_id: int) -> bool:
        """Whether issue comment `comment_id` is there (a 404 on editing it may be GitHub's
        hiccup, not a deletion)."""
        return await self._exists(f"issues/comments/{comment_id}")

    async def check_run_exists(self, check_run_id: int) -> bool:
        return await self._exists(f"check-runs/{check_run_id}")

    async def _exists(self, path: str) -> bool:
        try:
            await self._call("GET", path)
        except RequestFailed as exc:
            if is_gone(exc):
                return False
            raise
        return True

    async def update_comment(self, comment_id: int, body: str) -> None:
        await self._call("PATCH", f"issues/comments/{comment_id}", json={"body": body[:MAX_BODY]})

    async def role_of(self, login: str) -> str | None:
        """`login`'s role on the repository (`role_name`), None when GitHub knows no such user."""
        try:
            response = await self._call("GET", f"collaborators/{login}/permission")
        except RequestFailed as exc:
            if _not_found(exc):
                return None
            raise
        data = read(Permission, _json(response))
        # A custom role (GitHub Enterprise) counts as the base permission it builds on.
        return data.role_name if data.role_name in ROLE_ORDER else data.permission

    async def pull(self, number: int) -> PullInfo:
        data = read(PullAnswer, _json(await self._call("GET", f"pulls/{number}")))
        return PullInfo(
            number=data.number,
            state=data.state or "open",
            title=data.title or "",
            body=data.body or "",
            head_ref=data.head.ref,
            head_sha=data.head.sha,
            head_repo=data.head.repo.full_name if data.head.repo else None,
            base_ref=data.base.ref,
            base_repo=(data.base.repo.full_name if data.base.repo else None) or self.full_name,
        )

    async def branch_head(self, branch: str) -> str | None:
        """The commit `branch` points at, None when there is no such branch."""
        try:
            response = await self._call("GET", f"git/ref/heads/{branch}")
        except RequestFailed as exc:
            if _not_found(exc):
                return None
            raise
        return read(GitRef, _json(response)).object.sha

    async def create_branch(self, branch: str, sha: str) -> None:
        """A new branch on commit `sha` (GitHub answers 422 when it exists)."""
        await self._call("POST", "git/refs", json={"ref": f"refs/heads/{branch}", "sha": sha})

    async def move_branch(self, branch: str, sha: str, *, force: bool = False) -> None:
        """`branch` to commit `sha`: a fast-forward, unless `force` (422 when it is not one)."""
        await self._call("PATCH", f"git/refs/heads/{branch}", json={"sha": sha, "force": force})

    async def delete_branch(self, branch: str) -> bool:
        """Delete `branch`; False when it was not there."""
        try:
            await self._call("DELETE", f"git/refs/heads/{branch}")
        except RequestFailed as exc:
            if status_of(exc) in (404, 422):
                return False
            raise
        return True

    async def read_file(self, path: str, ref: str) -> str | None:
        """The text of `path` at `ref`, None when absent.

        Conditional requests keep it cheap: the ETag and blob sha of the last answer are
        remembered, and the text is cached in Redis under its blob sha.
        """
        file_key = f"{FILE_CACHE_PREFIX}{self.full_name.lower()}:{ref}:{path}"
        etag, sha = await hmget(self._redis, file_key, "etag", "sha")
        headers = {"If-None-Match": etag} if etag and sha else None
        try:
            response = await self._call(
                "GET", f"contents/{path}", params={"ref": ref}, headers=headers
            )
        except RequestFailed as exc:
            if _not_found(exc):
                return None
            raise
        if response.status_code == 304 and sha:
            cached = await self._redis.get(BLOB_CACHE_PREFIX + sha)
            if cached is not None:
                return as_text(cached)
            response = await self._call("GET", f"contents/{path}", params={"ref": ref})
        raw = _json(response)
        if not isinstance(raw, dict):
            return None  # a directory
        data = read(ContentFile, raw)
        if data.type not in (None, "file"):
            return None
        if data.encoding != "base64" or data.content is None:
            raise FileUnreadable(f"`{path}` is {data.size} bytes, too large to read")
        text = base64.b64decode(data.content).decode("utf-8", errors="replace")
        if data.sha:
            pipe = self._redis.pipeline(transaction=False)
            pipe.set(BLOB_CACHE_PREFIX + data.sha, text, ex=BLOB_CACHE_SECONDS)
            new_etag = response.headers.get("etag")
            if new_etag:
                pipe.hset(file_key, mapping={"etag": new_etag, "sha": data.sha})
                pipe.expire(file_key, BLOB_CACHE_SECONDS)
            await pipe.execute()
        return text

    async def create_check_run(
        self,
        *,
        name: str,
        head_sha: str,
        external_id: str,
        title: str,
        summary: str,
        actions: list[CheckAction],
    ) -> int:
        """A queued check run on `head_sha`; its id."""
        response = await self._call(
            "POST",
            "check-runs",
            json={
                "name": name,
                "head_sha": head_sha,
                "status": "queued",
                "external_id": external_id,
                "output": {"title": title[:MAX_TITLE], "summary": summary[:MAX_CHECK_TEXT]},
                "actions": _buttons(actions),
            },
        )
        return read(Created, _json(response)).id

    async def find_check_run(self, *, name: str, head_sha: str, external_id: str) -> int | None:
        """The newest check run `name` on `head_sha` with `external_id`: one an earlier
        request made although its answer never came."""
        response = await self._call(
            "GET",
            f"commits/{head_sha}/check-runs",
            params={"check_name": name, "filter": "all", "per_page": "100"},
        )
        found = read(CheckRunList, _json(response)).check_runs
        return next((run.id for run in found if run.external_id == external_id), None)

    async def suite_check_runs(self, check_suite_id: int) -> list[CheckRunResult]:
        """The latest check runs of suite `check_suite_id` (the first 100): name, conclusion
        and output, as the Checks API gives them."""
        response = await self._call(
            "GET",
            f"check-suites/{check_suite_id}/check-runs",
            params={"filter": "latest", "per_page": str(MAX_SUITE_RUNS)},
        )
        return read(CheckRunResults, _json(response)).check_runs

    async def update_check_run(
        self,
        check_run_id: int,
        *,
        title: str,
        summary: str,
        actions: list[CheckAction],
        conclusion: CheckConclusion | None = None,
    ) -> None:
        """In progress with a live summary, or completed with `conclusion`."""
        body: dict[str, object] = {
            "status": "in_progress" if conclusion is None else "completed",
            "output": {"title": title[:MAX_TITLE], "summary": summary[:MAX_CHECK_TEXT]},
            "actions": _buttons(actions),
        }
        if conclusion is not None:
            body["conclusion"] = conclusion
        await self._call("PATCH", f"check-runs/{check_run_id}", json=body)

    async def repository(self) -> RepoInfo:
        """Where the repository is cloned from, and its default branch."""
        response = await self._gh.arequest("GET", f"/repos/{self.owner}/{self.name}")
        return read(RepoInfo, _json(response))

    async def branches(self, limit: int = 100) -> list[str]:
        """The names of up to `limit` (≤ 100) of the repository's branches."""
        response = await self._call("GET", "branches", params={"per_page": str(min(limit, 100))})
        answer = _json(response)
        if not isinstance(answer, list):
            raise UnexpectedAnswer("GitHub's list of branches is not a list")
        return [read(BranchName, item).name for item in answer[:limit]]

    async def compare(self, base: str, head: str) -> Comparison | None:
        """What `head` changes against `base`; None when either is not there (404)."""
        try:
            response = await self._call(
                "GET", f"compare/{quote(base, safe='/')}...{quote(head, safe='/')}"
            )
        except RequestFailed as exc:
            if _not_found(exc):
                return None
            raise
        return read(Comparison, _json(response))

    async def issue_title(self, number: int) -> str:
        response = await self._call("GET", f"issues/{number}")
        return read(Title, _json(response)).title or ""

    async def open_pull_for(self, head_branch: str) -> OpenPull | None:
        """The open pull request from `head_branch` of this repository."""
        response = await self._call(
            "GET", "pulls", params={"state": "open", "head": f"{self.owner}:{head_branch}"}
        )
        raw = _json(response)
        pulls = raw if isinstance(raw, list) else []
        return read(OpenPull, pulls[0]) if pulls else None

    async def create_pull(self, *, head: str, base: str, title: str, body: str) -> int:
        response = await self._call(
            "POST",
            "pulls",
            json={"head": head, "base": base, "title": title[:MAX_TITLE], "body": body[:MAX_BODY]},
        )
        return read(Numbered, _json(response)).number

    async def update_pull_body(self, number: int, body: str) -> None:
        await self._call("PATCH", f"pulls/{number}", json={"body": body[:MAX_BODY]})

    async def complete_check_run(
        self, check_run_id: int, *, conclusion: CheckConclusion, title: str, summary: str
    ) -> None:
        """Mark a check run completed (its buttons go away)."""
        await self.update_check_run(
            check_run_id, title=title, summary=summary, actions=[], conclusion=conclusion
        )


def _buttons(actions: list[CheckAction]) -> list[dict[str, str]]:
    return [
        {"label": a.label, "identifier": a.identifier, "description": a.description}
        for a in actions
    ]
