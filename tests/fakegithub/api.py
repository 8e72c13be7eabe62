"""`FakeGitHub`: the REST endpoints and the git server as one Starlette app.

Each request waits `state.delay` (and its round, `state.rounds`), is recorded, may meet an
injected fault or chaos (modes.py), is authenticated (JWT for /app routes, installation
token elsewhere), and has its body checked against the request shape GitHub documents.
Bodies that do not fit get GitHub's 422 and become entries of `state.violations`.

Answers are GitHub's documented examples (corpora) with the stand-in's state written in,
or canned answers served exactly as given (`state.serve`). They are never re-validated
with githubkit: real GitHub does not always match githubkit's models, and the App must
cope with what GitHub sends, not with what a model accepts. Drift (modes.py) then
removes, nulls and adds fields outside those Trimo reads.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakegithub import gitserver, validation
from tests.fakegithub.endpoints import ENDPOINTS, Call, Endpoint
from tests.fakegithub.oauth import OAuthSide
from tests.fakegithub.render import Renderer
from tests.fakegithub.replies import GitHubError, Reply, default_fault_body, not_found
from tests.fakegithub.state import FakeState, RecordedRequest, Repo, Token

JWT_MAX_LIFETIME = 600
CLIENT_GONE = 499
"""What a request whose client went away before its body was read is answered (nobody reads it)."""


class FakeGitHub:
    """GitHub's REST API (the part Trimo uses) and git smart HTTP, in one ASGI app."""

    def __init__(self, root: Path, state: FakeState | None = None) -> None:
        self.root = root
        self.state = state or FakeState()
        routes = [
            Route(
                "/{owner}/{repo}.git/{rest:path}",
                gitserver.GitHttp(root, self.state).handle,
                methods=["GET", "POST"],
            )
        ]
        routes += OAuthSide(self.state).routes()
        routes += [
            Route(e.path, self._endpoint(e), methods=[e.method], name=e.handler.__name__)
            for e in ENDPOINTS
        ]
        routes.append(
            Route(
                "/{anything:path}",
                self._unhandled,
                methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
            )
        )
        self.asgi_app = Starlette(routes=routes)

    # --- helpers for tests -------------------------------------------------------------

    def create_repo(
        self,
        owner: str,
        name: str,
        files: Mapping[str, str | bytes],
        default_branch: str = "main",
    ) -> Repo:
        """A repository with one commit on `default_branch`, known to the API and git."""
        gitserver.create_bare_repo(self.root, owner, name, files, default_branch)
        return self.state.add_repo(owner, name, default_branch)

    def bare_path(self, owner: str, name: str) -> Path:
        return gitserver.repo_path(self.root, owner, name)

    def branch_sha(self, owner: str, name: str, branch: str) -> str | None:
        return gitserver.branch_sha(self.bare_path(owner, name), branch)

    def has_file(self, owner: str, name: str, rev: str, path: str) -> bool:
        return gitserver.read_file(self.bare_path(owner, name), rev, path) is not None

    # --- request handling ----------------------------------------------------------------

    def _endpoint(self, endpoint: Endpoint) -> Any:
        async def handle(request: Request) -> Response:
            return await self._dispatch(endpoint, request)

        return handle

    async def _unhandled(self, request: Request) -> Response:
        await self._wait(request)
        path = request.url.path
        self.state.violate(request.method, path, "no such endpoint in the GitHub stand-in")
        self._record(request, None, 404)
        return self._respond(not_found().reply())

    async def _wait(self, request: Request) -> None:
        """`state.delay`, then `state.rounds` (modes.py)."""
        if self.state.delay:
            await asyncio.sleep(self.state.delay)
        if self.state.rounds is not None:
            await self.state.rounds.hold(f"{request.method} {request.url.path}")

    async def _dispatch(self, endpoint: Endpoint, request: Request) -> Response:
        await self._wait(request)
        try:
            raw = await request.body()
        except ClientDisconnect:  # the App went away mid-request (a process stopped)
            return Response(status_code=CLIENT_GONE)
        body: Any = None
        try:
            if raw.strip():
                body = json.loads(raw)
            reply = await self._answer(endpoint, request, body)
        except json.JSONDecodeError:
            self.state.violate(request.method, request.url.path, "body is not JSON")
            reply = GitHubError(400, "Problems parsing JSON").reply()
        except GitHubError as exc:
            reply = exc.reply()
        self._record(request, body, reply.status)
        return self._respond(reply)

    async def _answer(self, endpoint: Endpoint, request: Request, body: Any) -> Reply:
        method, path = request.method, request.url.path
        fault = self.state.take_fault(method, path)
        if fault is not None:
            headers = dict(fault.headers)
            if fault.status == 429 or (fault.status == 403 and "retry-after" not in headers):
                headers.setdefault("x-ratelimit-remaining", "0")
                headers.setdefault("x-ratelimit-reset", str(int(time.time()) + 1))
            data = fault.body or default_fault_body(fault.status, headers)
            return Reply(fault.status, data, headers)
        chaos = self.state.chaos
        if chaos is not None:
            with self.state.lock:
                kind = chaos.draw(endpoint.name)
                if kind is not None:
                    self.state.chaos_log.append((method, path, kind))
            if kind == "slow":
                await asyncio.sleep(chaos.slow_seconds)
            elif kind is not None:
                return chaos.reply(kind)

        params = {k: str(v) for k, v in request.path_params.items()}
        token: Token | None = None
        if endpoint.auth == "app":
            self._verify_jwt(request.headers.get("authorization", ""))
        elif endpoint.auth == "installation":
            token = self._verify_token(request.headers.get("authorization", ""))
            self._check_scope(token, params, endpoint)
        base = str(request.base_url).rstrip("/")

        if endpoint.body is not None:
            body = {} if body is None else body
            problems = validation.check_body(endpoint.body, body)
            if problems:
                self.state.violate(method, path, "; ".join(problems))
                raise GitHubError(422, "Invalid request.\n\n" + "\n".join(problems))

        canned = self.state.take_canned(method, path)
        if canned is not None:
            return Reply(canned.status, canned.data)
        call = Call(
            method=method,
            state=self.state,
            render=Renderer(self.state, base),
            root=self.root,
            params=params,
            query=request.query_params,
            body=body if isinstance(body, dict) else {},
            token=token,
        )
        reply = await endpoint.handler(call)
        drift = self.state.drift
        if drift is not None and 200 <= reply.status < 300:
            with self.state.lock:
                reply.data = drift.apply(reply.data, endpoint.needs, endpoint.name)
        return reply

    def _verify_jwt(self, header: str) -> None:
        scheme, _, value = header.partition(" ")
        app = self.state.app
        if scheme.lower() != "bearer" or not value or app is None:
            raise GitHubError(401, "A JSON web token could not be decoded")
        try:
            claims = jwt.decode(
                value,
                app.public_key_pem,
                algorithms=["RS256"],
                options={"require": ["exp", "iat", "iss"]},
                leeway=60,
            )
        except jwt.ExpiredSignatureError:
            raise GitHubError(
                401,
                "'Expiration time' claim ('exp') must be a numeric value representing the"
                " future time at which the assertion expires",
            ) from None
        except jwt.PyJWTError:
            raise GitHubError(401, "A JSON web token could not be decoded") from None
        if str(claims["iss"]) not in (str(app.id), app.client_id):
            raise GitHubError(401, "'Issuer' claim ('iss') must be the app's ID or client ID")
        if int(claims["exp"]) - int(claims["iat"]) > JWT_MAX_LIFETIME:
            raise GitHubError(401, "'Expiration time' claim ('exp') is too far in the future")

    def _verify_token(self, header: str) -> Token:
        scheme, _, value = header.partition(" ")
        token = None
        if scheme.lower() in ("token", "bearer") and value:
            token = self.state.valid_token(value.strip())
        if token is None:
            raise GitHubError(401, "Bad credentials")
        inst = self.state.installations.get(token.installation_id)
        if inst is not None and inst.suspended:
            raise GitHubError(403, "This installation has been suspended")
        return token

    def _check_scope(self, token: Token, params: dict[str, str], endpoint: Endpoint) -> None:
        if "owner" in params:
            inst = self.state.installations.get(token.installation_id)
            owner, name = params["owner"], params["repo"]
            if (
                self.state.repo(owner, name) is None
                or inst is None
                or inst.account != owner
                or not token.covers(name)
            ):
                raise not_found()
        if endpoint.permissions and not any(
            token.allows(perm, level) for perm, level in endpoint.permissions
        ):
            raise GitHubError(403, "Resource not accessible by integration")

    def _record(self, request: Request, body: Any, status: int) -> None:
        self.state.record(
            RecordedRequest(
                method=request.method,
                path=request.url.path,
                query=dict(request.query_params),
                json=body,
                status=status,
            )
        )

    def _respond(self, reply: Reply) -> Response:
        used = len(self.state.requests)
        headers = {
            "x-github-request-id": uuid.uuid4().hex[:20].upper(),
            "x-github-media-type": "github.v3; format=json",
            "x-ratelimit-limit": "5000",
            "x-ratelimit-remaining": str(max(1, 5000 - used)),
            "x-ratelimit-reset": str(int(time.time()) + 3600),
            "x-ratelimit-used": str(used),
            "x-ratelimit-resource": "core",
        }
        headers.update({k.lower(): v for k, v in reply.headers.items()})
        if reply.status == 204:  # no body, as GitHub sends (a "null" broke kept-alive connections)
            return Response(status_code=204, headers=headers)
        return JSONResponse(reply.data, status_code=reply.status, headers=headers)
