"""GitHub's OAuth web flow for a GitHub App, and the user endpoints a user token reaches.

As GitHub documents it: `GET /login/oauth/authorize` sends the browser back to the
`redirect_uri` with `code` and `state` (here for the user a test chose with `sign_in_as`),
`POST /login/oauth/access_token` answers form-encoded unless asked for JSON, and its
errors come back with status 200 and an `error` field. User tokens (`ghu_`) expire after
8 hours and come with a refresh token (`ghr_`) that works once.

Faults: `expire_codes`, `expire_user_tokens`, `revoke_user_tokens`; a code works once.
"""

from __future__ import annotations

import json
import secrets
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from tests.fakegithub.render import Renderer, node_id
from tests.fakegithub.replies import GitHubError, Reply, not_found
from tests.fakegithub.state import (
    CODE_LIFETIME,
    REFRESH_TOKEN_LIFETIME,
    FakeState,
    Grant,
    RecordedRequest,
    Repo,
    now,
)
from tests.fakegithub.templates import example, rewrite

ERROR_DOCS = (
    "https://docs.github.com/apps/managing-oauth-apps/"
    "troubleshooting-oauth-app-access-token-request-errors/"
)

_PERMISSIONS_BY_ROLE = {
    "admin": ("admin", "maintain", "push", "triage", "pull"),
    "maintain": ("maintain", "push", "triage", "pull"),
    "write": ("push", "triage", "pull"),
    "triage": ("triage", "pull"),
    "read": ("pull",),
}


class OAuthSide:
    """The routes, bound to a FakeState (whose `oauth` attribute holds an OAuthState)."""

    def __init__(self, state: FakeState) -> None:
        self.state = state
        self.oauth = state.oauth

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/login/oauth/authorize", self.authorize, methods=["GET"]),
            Route("/login/oauth/access_token", self.access_token, methods=["POST"]),
            Route("/user", self.user, methods=["GET"]),
            Route("/user/installations", self.installations, methods=["GET"]),
            Route(
                "/user/installations/{installation_id}/repositories",
                self.repositories,
                methods=["GET"],
            ),
        ]

    # --- the web flow ------------------------------------------------------------------

    def _record(self, request: Request, status: int, body: Any = None) -> None:
        self.state.record(
            RecordedRequest(
                request.method, request.url.path, dict(request.query_params), body, status
            )
        )

    async def authorize(self, request: Request) -> Response:
        query = request.query_params
        app = self.state.app
        if app is None or query.get("client_id") != app.client_id:
            self._record(request, 404)
            return HTMLResponse(
                "<h1>404</h1><p>This is not the web page you are looking for.</p>", 404
            )
        redirect_uri = query.get("redirect_uri", "")
        state_param = query.get("state", "")
        with self.state.lock:
            login = self.oauth.signed_in_as
            callback = self.oauth.callback_url
            if callback is not None and not redirect_uri.startswith(callback):
                params = {
                    "error": "redirect_uri_mismatch",
                    "error_description": "The redirect_uri MUST match the registered callback "
                    "URL for this application.",
                    "error_uri": ERROR_DOCS + "#redirect-uri-mismatch",
                    "state": state_param,
                }
                self._record(request, 302)
                return RedirectResponse(f"{callback}?{urlencode(params)}", 302)
            if login is None:
                params = {
                    "error": "access_denied",
                    "error_description": "The user has denied your application access.",
                    "error_uri": ERROR_DOCS + "#access-denied",
                    "state": state_param,
                }
            else:
                code = secrets.token_hex(10)
                self.oauth.codes[code] = Grant(login, now() + CODE_LIFETIME, redirect_uri)
                params = {"code": code, "state": state_param}
        self._record(request, 302)
        separator = "&" if urlsplit(redirect_uri).query else "?"
        return RedirectResponse(f"{redirect_uri}{separator}{urlencode(params)}", 302)

    async def access_token(self, request: Request) -> Response:
        raw = (await request.body()).decode("utf-8", "replace")
        if "json" in request.headers.get("content-type", ""):
            try:
                loaded = json.loads(raw)
                fields = {str(k): str(v) for k, v in dict(loaded).items()}
            except (ValueError, TypeError):
                fields = {}
        else:
            fields = {k: v[-1] for k, v in parse_qs(raw).items()}
        fields.update({k: v for k, v in request.query_params.items() if k not in fields})
        answer = self._grant(fields)
        self._record(request, 200, {k: v for k, v in fields.items() if k != "client_secret"})
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse(answer)
        return Response(urlencode(answer), media_type="application/x-www-form-urlencoded")

    def _error(self, error: str, description: str) -> dict[str, str]:
        return {
            "error": error,
            "error_description": description,
            "error_uri": ERROR_DOCS + "#" + error.replace("_", "-"),
        }

    def _grant(self, fields: dict[str, str]) -> dict[str, Any]:
        app = self.state.app
        if (
            app is None
            or fields.get("client_id") != app.client_id
            or fields.get("client_secret") != self.oauth.client_secret
        ):
            return self._error(
                "incorrect_client_credentials",
                "The client_id and/or client_secret passed are incorrect.",
            )
        with self.state.lock:
            if fields.get("grant_type") == "refresh_token":
                grant = self.oauth.refresh_tokens.get(fields.get("refresh_token", ""))
                if grant is None or grant.used or grant.expires_at <= now():
                    return self._error(
                        "bad_refresh_token", "The refresh token passed is incorrect or expired."
                    )
            else:
                grant = self.oauth.codes.get(fields.get("code", ""))
                if grant is None or grant.used or grant.expires_at <= now():
                    return self._error(
                        "bad_verification_code", "The code passed is incorrect or expired."
                    )
                if fields.get("redirect_uri") and fields["redirect_uri"] != grant.redirect_uri:
                    return self._error(
                        "redirect_uri_mismatch",
                        "The redirect_uri MUST match the registered callback URL for this "
                        "application.",
                    )
            grant.used = True
            return self._issue(grant.login)

    def _issue(self, login: str) -> dict[str, Any]:
        token = "ghu_" + secrets.token_hex(18)
        refresh = "ghr_" + secrets.token_hex(38)
        self.oauth.tokens[token] = Grant(login, now() + self.oauth.token_lifetime)
        self.oauth.refresh_tokens[refresh] = Grant(login, now() + REFRESH_TOKEN_LIFETIME)
        return {
            "access_token": token,
            "expires_in": int(self.oauth.token_lifetime.total_seconds()),
            "refresh_token": refresh,
            "refresh_token_expires_in": int(REFRESH_TOKEN_LIFETIME.total_seconds()),
            "scope": "",
            "token_type": "bearer",
        }

    # --- the user endpoints ------------------------------------------------------------

    def _login(self, request: Request) -> str:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        with self.state.lock:
            grant = self.oauth.tokens.get(value.strip())
            if scheme.lower() not in ("token", "bearer") or grant is None:
                raise GitHubError(401, "Bad credentials")
            if grant.expires_at <= now():
                raise GitHubError(401, "Bad credentials")
            return grant.login

    async def _answer(self, request: Request, reply: Any) -> Response:
        try:
            fault = self.state.take_fault(request.method, request.url.path)
            if fault is not None:
                raise GitHubError(fault.status, "Server Error" if fault.status >= 500 else "Fault")
            login = self._login(request)
            answer: Reply = reply(login, Renderer(self.state, str(request.base_url)))
        except GitHubError as exc:
            answer = exc.reply()
        self._record(request, answer.status)
        return JSONResponse(answer.data, answer.status, answer.headers)

    async def user(self, request: Request) -> Response:
        def reply(login: str, render: Renderer) -> Reply:
            person = self.state.user(login)
            data: dict[str, Any] = rewrite(
                example("users__get-by-username.response.200.default-response"),
                [
                    ("/users/octocat", f"/users/{login}"),
                    ("github.com/octocat", f"github.com/{login}"),
                    *render.pairs,
                ],
            )
            data.update(
                login=login,
                id=person.id,
                node_id=node_id("U", person.id),
                avatar_url=f"{render.base}/avatars/u/{person.id}",
                type=person.type,
                name=login.capitalize(),
            )
            return Reply(200, data)

        return await self._answer(request, reply)

    def _reachable(self, login: str) -> dict[int, list[tuple[Repo, str]]]:
        """Installation id → (repository, role) pairs `login` reaches through it."""
        with self.state.lock:
            found: dict[int, list[tuple[Repo, str]]] = {}
            for inst in self.state.installations.values():
                pairs = []
                for repo in self.state.repos.values():
                    if repo.owner != inst.account:
                        continue
                    role = self.state.roles.get((repo.owner, repo.name, login))
                    if role is not None and role.permission != "none":
                        pairs.append((repo, role.role_name))
                    elif repo.owner == login:
                        pairs.append((repo, "admin"))
                if pairs:
                    found[inst.id] = pairs
            return found

    @staticmethod
    def _page(request: Request, items: list[Any]) -> tuple[list[Any], dict[str, str]]:
        try:
            per_page = max(1, min(100, int(request.query_params.get("per_page", "30"))))
            page = max(1, int(request.query_params.get("page", "1")))
        except ValueError:
            per_page, page = 30, 1
        chunk = items[(page - 1) * per_page : page * per_page]
        headers = {}
        if page * per_page < len(items):
            query = urlencode({"per_page": per_page, "page": page + 1})
            headers["link"] = f'<{request.url.replace(query=query)}>; rel="next"'
        return chunk, headers

    async def installations(self, request: Request) -> Response:
        def reply(login: str, render: Renderer) -> Reply:
            reachable = self._reachable(login)
            with self.state.lock:
                found = [self.state.installations[i] for i in sorted(reachable)]
            chunk, headers = self._page(request, found)
            data = {
                "total_count": len(found),
                "installations": [render.installation(inst) for inst in chunk],
            }
            return Reply(200, data, headers)

        return await self._answer(request, reply)

    async def repositories(self, request: Request) -> Response:
        def reply(login: str, render: Renderer) -> Reply:
            raw_id = request.path_params["installation_id"]
            pairs = self._reachable(login).get(int(raw_id)) if raw_id.isdigit() else None
            if pairs is None:
                raise not_found()
            chunk, headers = self._page(request, pairs)
            repos = []
            for repo, role in chunk:
                data = render.repo_simple(repo)
                granted = _PERMISSIONS_BY_ROLE.get(role, ("pull",))
                data["permissions"] = {
                    key: key in granted for key in ("admin", "maintain", "push", "triage", "pull")
                }
                repos.append(data)
            body = {"total_count": len(pairs), "repository_selection": "all", "repositories": repos}
            return Reply(200, body, headers)

        return await self._answer(request, reply)
