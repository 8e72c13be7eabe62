"""GitHub's OAuth web flow for a GitHub App (user-to-server tokens), and the user endpoints
that say which repositories a signed-in person reaches through the App's installations.

Pure parsing is apart from the two HTTP calls per step. Every failure is an `OAuthFailure`
whose `reason` is one of a few known words, never GitHub's text, so pages can explain it
without echoing anything raw.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import parse_qs, urlencode

import httpx

Reason = Literal["expired", "revoked", "refused", "unreachable", "malformed"]

HTTP_TIMEOUT_SECONDS: Final = 10.0
PER_PAGE: Final = 100
MAX_PAGES: Final = 50
"""Listing stops after 5,000 installations or repositories per installation."""

_EXPIRED_CODES: Final = frozenset({"bad_verification_code", "bad_refresh_token"})
_ROLE_BY_PERMISSION: Final = (
    ("admin", "admin"),
    ("maintain", "maintain"),
    ("push", "write"),
    ("triage", "triage"),
    ("pull", "read"),
)


class OAuthFailure(Exception):
    """Signing in or staying signed in failed; `reason` says why in one known word."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class UserToken:
    """A user-to-server token; `expires_at` is None when the App's tokens do not expire."""

    access_token: str
    refresh_token: str | None
    expires_at: float | None

    def expires_within(self, seconds: float, now: float | None = None) -> bool:
        if self.expires_at is None:
            return False
        return self.expires_at - seconds <= (time.time() if now is None else now)


# --- pure pieces -----------------------------------------------------------------------------


def authorize_url(github_url: str, client_id: str, redirect_uri: str, state: str) -> str:
    """Where the browser goes to sign in with GitHub."""
    query = urlencode({"client_id": client_id, "redirect_uri": redirect_uri, "state": state})
    return f"{github_url.rstrip('/')}/login/oauth/authorize?{query}"


def _fields(content_type: str, body: bytes) -> Mapping[str, Any]:
    if "json" in content_type.lower():
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise OAuthFailure("malformed", "the token answer is not JSON") from exc
        if not isinstance(data, dict):
            raise OAuthFailure("malformed", "the token answer is not a JSON object")
        return data
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OAuthFailure("malformed", "the token answer is not UTF-8") from exc
    return {key: values[-1] for key, values in parse_qs(text).items()}


def _seconds(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def parse_token_answer(content_type: str, body: bytes, now: float) -> UserToken:
    """GitHub's answer to `POST /login/oauth/access_token`: form-encoded or JSON, and
    errors come back with status 200 and an `error` field."""
    data = _fields(content_type, body)
    error = data.get("error")
    if error:
        reason: Reason = "expired" if error in _EXPIRED_CODES else "refused"
        raise OAuthFailure(reason, f"GitHub answered {str(error)[:60]!r}")
    token = data.get("access_token")
    if not isinstance(token, str) or not token:
        raise OAuthFailure("malformed", "the token answer has no access_token")
    refresh = data.get("refresh_token")
    lifetime = _seconds(data.get("expires_in"))
    return UserToken(
        access_token=token,
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        expires_at=None if lifetime is None else now + lifetime,
    )


def role_from_permissions(permissions: Any) -> str | None:
    """The highest role among a repository's `permissions` booleans, as GitHub lists them."""
    if not isinstance(permissions, dict):
        return None
    return next((role for key, role in _ROLE_BY_PERMISSION if permissions.get(key) is True), None)


# --- GitHub ----------------------------------------------------------------------------------


class GitHubSignIn:
    """The App's OAuth client and the user endpoints, on one HTTP client."""

    def __init__(
        self,
        github_url: str,
        api_url: str,
        client_id: str,
        client_secret: str,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.github_url = github_url.rstrip("/")
        self.api_url = api_url.rstrip("/")
        self.client_id = client_id
        self._secret = client_secret
        self._http = http or httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS)

    async def aclose(self) -> None:
        await self._http.aclose()

    def authorize_url(self, redirect_uri: str, state: str) -> str:
        return authorize_url(self.github_url, self.client_id, redirect_uri, state)

    async def exchange_code(self, code: str, redirect_uri: str) -> UserToken:
        return await self._token({"code": code, "redirect_uri": redirect_uri})

    async def refresh(self, refresh_token: str) -> UserToken:
        return await self._token({"grant_type": "refresh_token", "refresh_token": refresh_token})

    async def _token(self, fields: dict[str, str]) -> UserToken:
        form = {"client_id": self.client_id, "client_secret": self._secret, **fields}
        try:
            response = await self._http.post(
                f"{self.github_url}/login/oauth/access_token",
                data=form,
                headers={"Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise OAuthFailure("unreachable", type(exc).__name__) from exc
        if response.status_code != 200:
            raise OAuthFailure("refused", f"GitHub answered {response.status_code}")
        return parse_token_answer(
            response.headers.get("content-type", ""), response.content, time.time()
        )

    async def _get(self, token: str, path: str, params: dict[str, Any] | None = None) -> Any:
        headers = {
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {token}",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        try:
            response = await self._http.get(f"{self.api_url}{path}", params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise OAuthFailure("unreachable", type(exc).__name__) from exc
        if response.status_code == 401:
            raise OAuthFailure("revoked", "GitHub no longer accepts the token")
        if response.status_code != 200:
            raise OAuthFailure("refused", f"GET {path} answered {response.status_code}")
        try:
            return response.json()
        except ValueError as exc:
            raise OAuthFailure("malformed", f"GET {path} answered no JSON") from exc

    async def login(self, token: str) -> str:
        """The signed-in person's login (`GET /user`)."""
        data = await self._get(token, "/user")
        login = data.get("login") if isinstance(data, dict) else None
        if not isinstance(login, str) or not login:
            raise OAuthFailure("malformed", "GET /user has no login")
        return login

    async def _pages(self, token: str, path: str, key: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for page in range(1, MAX_PAGES + 1):
            data = await self._get(token, path, {"per_page": PER_PAGE, "page": page})
            batch = data.get(key) if isinstance(data, dict) else None
            if not isinstance(batch, list):
                raise OAuthFailure("malformed", f"GET {path} has no {key} list")
            items += [item for item in batch if isinstance(item, dict)]
            if len(batch) < PER_PAGE:
                break
        return items

    async def repositories(self, token: str) -> dict[str, str]:
        """Repository full name → the person's role, over every installation of the App
        the person can reach."""
        repos: dict[str, str] = {}
        for installation in await self._pages(token, "/user/installations", "installations"):
            installation_id = installation.get("id")
            if not isinstance(installation_id, int):
                continue
            path = f"/user/installations/{installation_id}/repositories"
            for repo in await self._pages(token, path, "repositories"):
                name, role = repo.get("full_name"), role_from_permissions(repo.get("permissions"))
                if isinstance(name, str) and role is not None:
                    repos[name] = role
        return repos
