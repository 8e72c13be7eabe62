"""A thin I/O layer over githubkit: the App's clients, scoped tokens and the calls handlers make.

Nothing here decides anything; handlers do. `GitHubApp` talks as the App (JWT) and as an
installation; `RepoAPI` is that installation's view of one repository.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

import redis.asyncio as aioredis
from githubkit import AppAuthStrategy, AppInstallationAuthStrategy, GitHub
from githubkit.cache import MemCacheStrategy
from githubkit.exception import RateLimitExceeded, RequestError, RequestFailed
from githubkit_schemas.latest.models import ContentFile
from githubkit_schemas.latest.types import (
    ReposOwnerRepoCheckRunsCheckRunIdPatchBodyPropActionsItemsType as CheckButton,
)
from githubkit_schemas.latest.types import (
    ReposOwnerRepoCheckRunsCheckRunIdPatchBodyPropOutputType as CheckOutput,
)

from app.policy import ROLE_ORDER
from app.settings import AppSettings

log = logging.getLogger("trimo.github")

ReactionContent = Literal["+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"]
ReactionTarget = Literal["issue_comment", "review_comment", "issue"]
CheckConclusion = Literal["success", "failure", "neutral", "cancelled", "timed_out", "skipped"]

FILE_CACHE_PREFIX: Final = "trimo:gh:file:"
BLOB_CACHE_PREFIX: Final = "trimo:gh:blob:"
BLOB_CACHE_SECONDS: Final = 7 * 24 * 3600
HTTP_TIMEOUT_SECONDS: Final = 15.0
MAX_CHECK_TEXT: Final = 65_000
MAX_TITLE: Final = 250
MAX_BODY: Final = 65_000


class FileUnreadable(Exception):
    """A file exists but its content cannot be had through the contents API."""


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
        self._auth = AppAuthStrategy(settings.github_app_id, settings.private_key())
        # Installation tokens stay in this process's memory: runners can read Redis.
        self._app = GitHub(
            self._auth,
            base_url=settings.github_api_url,
            user_agent="trimo-app",
            timeout=timeout,
            cache_strategy=MemCacheStrategy(),
            http_cache=False,
            auto_retry=auto_retry,
        )

    def app_client(self) -> GitHub[AppAuthStrategy]:
        """A client authenticated as the App itself (JWT)."""
        return self._app

    async def installation_client(
        self, installation_id: int
    ) -> GitHub[AppInstallationAuthStrategy]:
        """A client authenticated as installation `installation_id`."""
        return self._app.with_auth(self._auth.as_installation(installation_id))

    async def mint_token(self, installation_id: int, repo_name: str) -> str:
        """A fresh token for the one repository `repo_name` (no owner), able only to push."""
        response = await self._app.rest.apps.async_create_installation_access_token(
            installation_id,
            repositories=[repo_name],
            # All a runner needs: fetch and push this one repository.
            permissions={"contents": "write", "metadata": "read"},
        )
        return response.parsed_data.token

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

    async def react(self, target: ReactionTarget, target_id: int, content: ReactionContent) -> None:
        """React to an issue comment, a review comment or an issue (by number)."""
        reactions = self._gh.rest.reactions
        if target == "issue_comment":
            await reactions.async_create_for_issue_comment(
                self.owner, self.name, target_id, content=content
            )
        elif target == "review_comment":
            await reactions.async_create_for_pull_request_review_comment(
                self.owner, self.name, target_id, content=content
            )
        else:
            await reactions.async_create_for_issue(
                self.owner, self.name, target_id, content=content
            )

    async def comment(self, number: int, body: str) -> int:
        """Post `body` on issue or pull request `number`; the new comment's id."""
        response = await self._gh.rest.issues.async_create_comment(
            self.owner, self.name, number, body=body
        )
        return response.parsed_data.id

    async def update_comment(self, comment_id: int, body: str) -> None:
        await self._gh.rest.issues.async_update_comment(
            self.owner, self.name, comment_id, body=body
        )

    async def role_of(self, login: str) -> str | None:
        """`login`'s role on the repository (`role_name`), None when GitHub knows no such user."""
        try:
            response = await self._gh.rest.repos.async_get_collaborator_permission_level(
                self.owner, self.name, login
            )
        except RequestFailed as exc:
            if _not_found(exc):
                return None
            raise
        data = response.parsed_data
        # A custom role (GitHub Enterprise) counts as the base permission it builds on.
        return data.role_name if data.role_name in ROLE_ORDER else data.permission

    async def pull(self, number: int) -> PullInfo:
        data = (await self._gh.rest.pulls.async_get(self.owner, self.name, number)).parsed_data
        return PullInfo(
            number=data.number,
            state=data.state,
            title=data.title,
            body=data.body or "",
            head_ref=data.head.ref,
            head_sha=data.head.sha,
            head_repo=data.head.repo.full_name if data.head.repo else None,
            base_ref=data.base.ref,
            base_repo=data.base.repo.full_name,
        )

    async def branch_head(self, branch: str) -> str | None:
        """The commit `branch` points at, None when there is no such branch."""
        try:
            response = await self._gh.rest.git.async_get_ref(
                self.owner, self.name, f"heads/{branch}"
            )
        except RequestFailed as exc:
            if _not_found(exc):
                return None
            raise
        return response.parsed_data.object_.sha

    async def read_file(self, path: str, ref: str) -> str | None:
        """The text of `path` at `ref`, None when absent.

        Conditional requests keep it cheap: the ETag and blob sha of the last answer are
        remembered, and the text is cached in Redis under its blob sha.
        """
        file_key = f"{FILE_CACHE_PREFIX}{self.full_name.lower()}:{ref}:{path}"
        known = await self._redis.hmget(file_key, ["etag", "sha"])  # type: ignore[misc]
        etag, sha = (_text(value) for value in known)
        headers = {"If-None-Match": etag} if etag and sha else None
        try:
            response = await self._gh.rest.repos.async_get_content(
                self.owner, self.name, path, ref=ref, headers=headers
            )
        except RequestFailed as exc:
            if _not_found(exc):
                return None
            raise
        if response.status_code == 304 and sha:
            cached = await self._redis.get(BLOB_CACHE_PREFIX + sha)
            if cached is not None:
                return _text(cached)
            response = await self._gh.rest.repos.async_get_content(
                self.owner, self.name, path, ref=ref
            )
        data = response.parsed_data
        if not isinstance(data, ContentFile):
            return None
        if data.encoding != "base64":
            raise FileUnreadable(f"`{path}` is {data.size} bytes, too large to read")
        text = base64.b64decode(data.content).decode("utf-8", errors="replace")
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
        response = await self._gh.rest.checks.async_create(
            self.owner,
            self.name,
            data={
                "name": name,
                "head_sha": head_sha,
                "status": "queued",
                "external_id": external_id,
                "output": {"title": title, "summary": summary},
                "actions": [
                    {"label": a.label, "identifier": a.identifier, "description": a.description}
                    for a in actions
                ],
            },
        )
        return response.parsed_data.id

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
        output: CheckOutput = {"title": title[:MAX_TITLE], "summary": summary[:MAX_CHECK_TEXT]}
        buttons: list[CheckButton] = [
            {"label": a.label, "identifier": a.identifier, "description": a.description}
            for a in actions
        ]
        checks = self._gh.rest.checks
        if conclusion is None:
            await checks.async_update(
                self.owner,
                self.name,
                check_run_id,
                data={"status": "in_progress", "output": output, "actions": buttons},
            )
        else:
            await checks.async_update(
                self.owner,
                self.name,
                check_run_id,
                data={
                    "status": "completed",
                    "conclusion": conclusion,
                    "output": output,
                    "actions": buttons,
                },
            )

    async def issue_title(self, number: int) -> str:
        response = await self._gh.rest.issues.async_get(self.owner, self.name, number)
        return response.parsed_data.title

    async def open_pull_for(self, head_branch: str) -> int | None:
        """The number of the open pull request from `head_branch` of this repository."""
        response = await self._gh.rest.pulls.async_list(
            self.owner, self.name, state="open", head=f"{self.owner}:{head_branch}"
        )
        pulls = cast(list[Any], response.parsed_data)  # mypy cannot resolve githubkit's alias
        numbers = [int(pull.number) for pull in pulls]
        return numbers[0] if numbers else None

    async def create_pull(self, *, head: str, base: str, title: str, body: str) -> int:
        response = await self._gh.rest.pulls.async_create(
            self.owner, self.name, head=head, base=base, title=title, body=body[:MAX_BODY]
        )
        return response.parsed_data.number

    async def update_pull_body(self, number: int, body: str) -> None:
        await self._gh.rest.pulls.async_update(self.owner, self.name, number, body=body[:MAX_BODY])

    async def complete_check_run(
        self, check_run_id: int, *, conclusion: CheckConclusion, title: str, summary: str
    ) -> None:
        """Mark a check run completed (its buttons go away)."""
        await self.update_check_run(
            check_run_id, title=title, summary=summary, actions=[], conclusion=conclusion
        )


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value
