"""Who is looking at the dashboard, and the page security around them.

People sign in with GitHub through the App's OAuth web flow. The signed session cookie holds
only a session id, the CSRF token and the sign-in's `state`; the person's token and the
repositories they reach live in Redis under that id, refreshed every few minutes.

Pages call `current_viewer(request)` first and redirect to `/login` when it is None; every
POST reads its form with `checked_form(request)`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import secrets
import time
import weakref
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.dashboard import pages
from app.dashboard.oauth import GitHubSignIn, OAuthFailure, UserToken
from app.settings import AppSettings
from runner import redisurl
from runner.templating import render

log = logging.getLogger("trimo.dashboard.auth")

SESSION_COOKIE: Final = "trimo_session"
SESSION_ID: Final = "sid"
SESSION_CSRF: Final = "csrf"
SESSION_STATE: Final = "oauth_state"
SESSION_NEXT: Final = "next"
CSRF_FIELD: Final = "csrf"
CSRF_HEADER: Final = "x-csrf-token"
SESSION_KEY_PREFIX: Final = "trimo:dash:session:"
SESSION_MAX_AGE_SECONDS: Final = 14 * 24 * 3600
REPOS_TTL_SECONDS: Final = 300
"""How long the list of repositories a person reaches is trusted before asking GitHub again."""
RETRY_SECONDS: Final = 30
"""After GitHub failed to answer, how long the last repository list is kept before asking again."""
TOKEN_MARGIN_SECONDS: Final = 120
REDIS_TIMEOUT_SECONDS: Final = 5.0
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'"
)
_SCOPE_KEY: Final = "trimo.signin"
_UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_T = TypeVar("_T")


@dataclass(frozen=True)
class Viewer:
    """A signed-in person: their login, whether they are a Trimo admin, and their role on
    each repository they reach through the App's installations."""

    login: str
    admin: bool
    repos: Mapping[str, str] = field(default_factory=dict)
    """Repository full name, as GitHub spells it → "admin" | "maintain" | "write" |
    "triage" | "read"."""

    def sees(self, repo: str) -> bool:
        return self.admin or self.role(repo) is not None

    def role(self, repo: str) -> str | None:
        """The viewer's role on `repo` (names compare case-insensitively, as on GitHub)."""
        role = self.repos.get(repo)
        if role is not None:
            return role
        wanted = repo.lower()
        return next((r for name, r in self.repos.items() if name.lower() == wanted), None)


@dataclass
class SessionRecord:
    """What Redis keeps for one signed-in session."""

    login: str
    token: UserToken
    repos: dict[str, str]
    repos_at: float

    def dumps(self) -> str:
        return json.dumps(
            {
                "login": self.login,
                "access_token": self.token.access_token,
                "refresh_token": self.token.refresh_token,
                "expires_at": self.token.expires_at,
                "repos": self.repos,
                "repos_at": self.repos_at,
            }
        )

    @classmethod
    def loads(cls, raw: bytes | str) -> SessionRecord | None:
        try:
            data = json.loads(raw)
            return cls(
                login=str(data["login"]),
                token=UserToken(
                    access_token=str(data["access_token"]),
                    refresh_token=data.get("refresh_token"),
                    expires_at=data.get("expires_at"),
                ),
                repos={str(k): str(v) for k, v in dict(data["repos"]).items()},
                repos_at=float(data["repos_at"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


def session_key(session_id: str) -> str:
    return f"{SESSION_KEY_PREFIX}{session_id}"


class SignIn:
    """Sessions in Redis and the GitHub sign-in, shared by the routes and `current_viewer`."""

    def __init__(self, settings: AppSettings, github: GitHubSignIn | None = None) -> None:
        self.settings = settings
        self.admins = settings.admin_logins()
        self.public_url = settings.public_url.rstrip("/")
        secret = settings.github_client_secret
        if github is None and settings.github_client_id and secret is not None:
            github = GitHubSignIn(
                settings.github_url,
                settings.github_api_url,
                settings.github_client_id,
                secret.get_secret_value(),
            )
        self.github = github
        self._redis: aioredis.Redis | None = None
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def aclose(self) -> None:
        """Close the Redis client and GitHub's HTTP client (the App's lifespan ends)."""
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        if self.github is not None:
            await self.github.aclose()

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = redisurl.async_client(self.settings.redis_url)
        return self._redis

    async def _bounded(self, call: Awaitable[_T]) -> _T:
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                return await call
        except (RedisError, OSError) as exc:
            log.warning("dashboard sessions: Redis failed: %s: %s", type(exc).__name__, exc)
            raise HTTPException(
                503, "The dashboard cannot reach Redis right now; try again in a moment."
            ) from exc

    async def load(self, session_id: str) -> SessionRecord | None:
        raw = await self._bounded(self.redis.get(session_key(session_id)))
        return None if raw is None else SessionRecord.loads(raw)

    async def save(self, session_id: str, record: SessionRecord) -> None:
        key = session_key(session_id)
        await self._bounded(self.redis.set(key, record.dumps(), ex=SESSION_MAX_AGE_SECONDS))

    async def forget(self, session_id: str) -> None:
        await self._bounded(self.redis.delete(session_key(session_id)))

    def viewer(self, record: SessionRecord) -> Viewer:
        return Viewer(
            login=record.login, admin=record.login.lower() in self.admins, repos=record.repos
        )

    async def open_session(self, login: str, token: UserToken, repos: dict[str, str]) -> str:
        """A new session id for a person who just signed in."""
        session_id = secrets.token_urlsafe(32)
        await self.save(session_id, SessionRecord(login, token, repos, time.time()))
        return session_id

    def _due(self, record: SessionRecord) -> bool:
        token_due = record.token.expires_within(TOKEN_MARGIN_SECONDS)
        repos_due = time.time() - record.repos_at >= REPOS_TTL_SECONDS
        return self.github is not None and (token_due or repos_due)

    async def fresh(self, session_id: str, record: SessionRecord) -> SessionRecord | None:
        """`record` with a live token and a recent repository list; None when the person
        must sign in again (token revoked, refresh refused).

        One refresh per session at a time: a refresh token works once, so a second request
        refreshing alongside would be refused and sign the person out."""
        if not self._due(record):
            return record
        lock = self._locks.get(session_id)
        if lock is None:
            lock = self._locks[session_id] = asyncio.Lock()
        async with lock:
            current = await self.load(session_id)
            if current is None or not self._due(current):
                return current
            try:
                updated = await self._refreshed(current)
            except OAuthFailure as exc:
                if exc.reason in ("expired", "revoked"):
                    log.info("session of %s ended: %s", current.login, exc)
                    await self.forget(session_id)
                    return None
                log.warning("keeping %s's session as it is for now: %s", current.login, exc)
                retry_at = time.time() - REPOS_TTL_SECONDS + RETRY_SECONDS
                updated = dataclasses.replace(current, repos_at=retry_at)
            await self.save(session_id, updated)
            return updated

    async def _refreshed(self, record: SessionRecord) -> SessionRecord:
        """`record` renewed; a failure to renew the token raises, while a failure to list
        the repositories keeps the last list (and a token just renewed: its refresh token
        is spent)."""
        assert self.github is not None
        token = record.token
        if token.expires_within(TOKEN_MARGIN_SECONDS):
            token = await self._renewed(token)
        for attempt in range(2):
            try:
                repos = await self.github.repositories(token.access_token)
            except OAuthFailure as exc:
                if exc.reason == "revoked" and attempt == 0 and token is record.token:
                    token = await self._renewed(token)
                    continue
                if exc.reason in ("revoked", "expired"):
                    raise
                log.warning("keeping %s's repository list for now: %s", record.login, exc)
                retry_at = time.time() - REPOS_TTL_SECONDS + RETRY_SECONDS
                return SessionRecord(record.login, token, record.repos, retry_at)
            return SessionRecord(record.login, token, repos, time.time())
        raise OAuthFailure("revoked", "GitHub refused a token it had just renewed")

    async def _renewed(self, token: UserToken) -> UserToken:
        assert self.github is not None
        if token.refresh_token is None:
            raise OAuthFailure("expired", "the token expired and came without a refresh token")
        return await self.github.refresh(token.refresh_token)

    def redirect_uri(self, request: Request) -> str:
        if self.public_url:
            return f"{self.public_url}/oauth/callback"
        return str(request.url_for("oauth_callback"))


def _signin(request: Request) -> SignIn:
    signin = request.scope.get(_SCOPE_KEY)
    if not isinstance(signin, SignIn):
        raise RuntimeError("the dashboard's security_middleware is not installed")
    return signin


async def current_viewer(request: Request) -> Viewer | None:
    """The signed-in person, or None (not signed in, or must sign in again)."""
    cached = request.scope.get("trimo.viewer")
    if isinstance(cached, Viewer):
        return cached
    session_id = request.session.get(SESSION_ID)
    if not isinstance(session_id, str):
        return None
    signin = _signin(request)
    record = await signin.load(session_id)
    if record is not None:
        record = await signin.fresh(session_id, record)
    if record is None:
        request.session.pop(SESSION_ID, None)
        return None
    viewer = signin.viewer(record)
    request.scope["trimo.viewer"] = viewer
    return viewer


def csrf_token(request: Request) -> str:
    """This session's CSRF token: templates put it in a hidden `csrf` form field, and
    scripts send it as the `X-CSRF-Token` header."""
    token = request.session.get(SESSION_CSRF)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session[SESSION_CSRF] = token
    return token


async def checked_form(request: Request) -> FormData:
    """The POSTed form, when it carries this session's CSRF token; else HTTPException(403)."""
    form = await request.form()
    sent = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    expected = request.session.get(SESSION_CSRF)
    if not isinstance(sent, str) or not isinstance(expected, str) or not expected:
        raise HTTPException(403, "This form has no valid security token: reload the page.")
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        raise HTTPException(403, "This form's security token is stale: reload the page.")
    return form


# --- pages -----------------------------------------------------------------------------------

_FAILURE_TEXT: Final[Mapping[str, tuple[str, str]]] = {
    "expired": (
        "That sign-in link has expired",
        "GitHub's sign-in codes work once and for a few minutes only.",
    ),
    "revoked": (
        "GitHub no longer accepts your sign-in",
        "The App's access was revoked or your session ended.",
    ),
    "refused": ("GitHub refused the sign-in", "GitHub did not hand over a token for you."),
    "unreachable": ("GitHub cannot be reached", "Trimo could not reach GitHub to sign you in."),
    "malformed": ("GitHub's answer was not understood", "Trimo could not read GitHub's answer."),
    "state": (
        "This sign-in did not start here",
        "The answer GitHub sent back belongs to another sign-in, or the session expired.",
    ),
    "denied": ("You did not authorise Trimo", "GitHub says the sign-in was cancelled."),
    "unconfigured": (
        "Signing in with GitHub is not configured",
        "Run trimo setup (it saves the App's client id and secret), or set "
        "TRIMO_GITHUB_CLIENT_ID and TRIMO_GITHUB_CLIENT_SECRET from the App's settings page "
        "on GitHub, then start Trimo again (trimo up, or trimo serve).",
    ),
}


def _page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    response = HTMLResponse(render(f"auth/{template}.html.j2", **context), status_code=status)
    response.headers["Cache-Control"] = "no-store"
    return response


def _failure(kind: str, status: int) -> HTMLResponse:
    title, message = _FAILURE_TEXT[kind]
    return _page("failed", status, title=title, message=message, retry=kind != "unconfigured")


def safe_next(target: str | None) -> str:
    """A local path to go back to after signing in; anything else becomes `/`."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(ord(c) < 0x20 for c in target):
        return "/"
    return target


async def login(request: Request) -> Response:
    signin = _signin(request)
    if signin.github is None:
        return _failure("unconfigured", 503)
    state = secrets.token_urlsafe(32)
    request.session[SESSION_STATE] = state
    request.session[SESSION_NEXT] = safe_next(request.query_params.get("next"))
    return RedirectResponse(signin.github.authorize_url(signin.redirect_uri(request), state), 302)


async def oauth_callback(request: Request) -> Response:
    signin = _signin(request)
    if signin.github is None:
        return _failure("unconfigured", 503)
    expected = request.session.pop(SESSION_STATE, None)
    sent = request.query_params.get("state", "")
    if not isinstance(expected, str) or not hmac.compare_digest(sent.encode(), expected.encode()):
        return _failure("state", 400)
    if request.query_params.get("error"):
        return _failure("denied", 400)
    try:
        token = await signin.github.exchange_code(
            request.query_params.get("code", ""), signin.redirect_uri(request)
        )
        login_name = await signin.github.login(token.access_token)
        repos = await signin.github.repositories(token.access_token)
    except OAuthFailure as exc:
        log.warning("sign-in failed: %s", exc)
        return _failure(exc.reason, 502 if exc.reason == "unreachable" else 400)
    old = request.session.get(SESSION_ID)
    if isinstance(old, str):
        await signin.forget(old)
    target = safe_next(request.session.get(SESSION_NEXT))
    request.session.clear()  # a new session id and CSRF token: no fixation
    request.session[SESSION_ID] = await signin.open_session(login_name, token, repos)
    log.info("%s signed in (%d repositories)", login_name, len(repos))
    return RedirectResponse(target, 303)


async def logout(request: Request) -> Response:
    if request.method == "GET":
        viewer = await current_viewer(request)
        return _page("signout", viewer=viewer, csrf=csrf_token(request))
    await checked_form(request)
    session_id = request.session.get(SESSION_ID)
    if isinstance(session_id, str):
        await _signin(request).forget(session_id)
    request.session.clear()
    return _page("signed_out")


_ERROR_TITLES: Final[Mapping[int, str]] = {
    400: "That request was not understood",
    401: "Sign in first",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    503: "Try again in a moment",
}


async def error_page(request: Request, exc: Exception) -> Response:
    """An HTTPException as a page for browsers, as plain text for scripts and streams."""
    if not isinstance(exc, HTTPException):
        raise exc
    headers = dict(exc.headers or {})
    if "text/html" not in request.headers.get("accept", ""):
        return PlainTextResponse(exc.detail, exc.status_code, headers)
    title = _ERROR_TITLES.get(exc.status_code, "Something went wrong")
    viewer = await current_viewer(request) if exc.status_code in (403, 404) else None
    if viewer is not None:  # signed in: the page keeps the navigation
        html = pages.render(
            "error.html.j2", viewer=viewer, csrf=csrf_token(request), path=request.url.path,
            title=title, detail=exc.detail, code=exc.status_code,
        )  # fmt: skip
        response: Response = HTMLResponse(html, exc.status_code)
    else:
        response = _page(
            "error", exc.status_code, title=title, detail=exc.detail, code=exc.status_code
        )
    response.headers.update(headers)
    return response


def error_pages() -> dict[Any, Any]:
    """Exception handlers for the Starlette app: `exception_handlers=error_pages()`."""
    return {HTTPException: error_page}


def auth_routes() -> list[BaseRoute]:
    """`/login`, `/oauth/callback` (the App's callback URL) and `/logout`."""
    return [
        Route("/login", login, methods=["GET"]),
        Route("/oauth/callback", oauth_callback, methods=["GET"], name="oauth_callback"),
        Route("/logout", logout, methods=["GET", "POST"]),
    ]


# --- middleware ------------------------------------------------------------------------------


def _origin_of(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"origin":
            return str(value.decode("latin-1"))
    return None


def _own_origins(scope: Scope, public_url: str) -> set[str]:
    host = next(
        (v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"), ""
    ).lower()
    origins = {f"http://{host}", f"https://{host}"}
    if public_url:
        parts = urlsplit(public_url)
        origins.add(f"{parts.scheme}://{parts.netloc}".lower())
    return origins


class _Guard:
    """Security headers on every answer; a cross-site POST (its Origin another site's) is
    refused before any handler runs; the sign-in context for `current_viewer`."""

    def __init__(self, app: ASGIApp, signin: SignIn) -> None:
        self.app = app
        self.signin = signin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[_SCOPE_KEY] = self.signin
        origin = _origin_of(scope)
        if (
            scope["method"] in _UNSAFE_METHODS
            and origin is not None
            and origin.lower() not in _own_origins(scope, self.signin.public_url)
        ):
            await _page("refused", 403)(scope, receive, self._with_headers(send))
            return
        await self.app(scope, receive, self._with_headers(send))

    @staticmethod
    def _with_headers(send: Send) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"content-security-policy", CSP.encode()),
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                ]
            await send(message)

        return sending


def session_secret(settings: AppSettings) -> str:
    """The secret that signs session cookies; without one, a random one for this process
    (everyone signs in again after a restart)."""
    if settings.session_secret is not None and settings.session_secret.get_secret_value():
        return settings.session_secret.get_secret_value()
    log.warning("TRIMO_SESSION_SECRET is not set: dashboard sessions end when the App restarts")
    return secrets.token_urlsafe(32)


def security_middleware(settings: AppSettings, signin: SignIn | None = None) -> list[Middleware]:
    """Signed sessions (secure cookies when `public_url` is https), SameSite=Lax, the CSP and
    framing headers, refusal of cross-site POSTs, and the sign-in context."""
    return [
        Middleware(_Guard, signin=signin or SignIn(settings)),
        Middleware(
            SessionMiddleware,
            secret_key=session_secret(settings),
            session_cookie=SESSION_COOKIE,
            max_age=SESSION_MAX_AGE_SECONDS,
            same_site="lax",
            https_only=settings.public_url.lower().startswith("https://"),
        ),
    ]
