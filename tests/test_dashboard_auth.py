"""Signing in to the dashboard with GitHub (the stand-in's OAuth web flow), sessions in a
real Redis, CSRF, and the security headers. Pages are a tiny app behind the real middleware."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from app.dashboard.auth import (
    CSP,
    SESSION_KEY_PREFIX,
    Viewer,
    auth_routes,
    checked_form,
    csrf_token,
    current_viewer,
    error_pages,
    safe_next,
    security_middleware,
)
from app.dashboard.oauth import OAuthFailure, parse_token_answer, role_from_permissions
from app.settings import AppSettings
from tests.dashboard_helpers import sign_in
from tests.fakegithub import RunningFakeGitHub

ORG = "octo-org"


async def whoami(request: Request) -> Response:
    viewer = await current_viewer(request)
    if viewer is None:
        return RedirectResponse(f"/login?next={request.url.path}", 303)
    return JSONResponse(
        {
            "login": viewer.login,
            "admin": viewer.admin,
            "repos": dict(viewer.repos),
            "csrf": csrf_token(request),
        }
    )


async def act(request: Request) -> Response:
    form = await checked_form(request)
    return JSONResponse({"done": form.get("what")})


def dashboard(settings: AppSettings) -> Starlette:
    routes = [Route("/", whoami), Route("/act", act, methods=["POST"]), *auth_routes()]
    return Starlette(
        routes=routes, middleware=security_middleware(settings), exception_handlers=error_pages()
    )


@pytest.fixture
def github() -> Iterator[RunningFakeGitHub]:
    with RunningFakeGitHub() as gh:
        gh.install_app(ORG)
        gh.create_repo(ORG, "widgets", {"README.md": "w\n"})
        gh.create_repo(ORG, "secret-plans", {"README.md": "s\n"})
        gh.state.set_role(ORG, "widgets", "alice", "write")
        gh.state.set_role(ORG, "secret-plans", "bob", "admin")
        yield gh


def settings_for(gh: RunningFakeGitHub, redis_url: str, **extra: str) -> AppSettings:
    app = gh.state.app
    assert app is not None
    fields: dict[str, object] = {
        "github_url": gh.api_url,
        "github_api_url": gh.api_url,
        "github_client_id": app.client_id,
        "github_client_secret": gh.state.oauth.client_secret,
        "session_secret": "test-session-secret",
        "redis_url": redis_url,
        **extra,
    }
    return AppSettings.model_validate(fields)


@pytest.fixture
async def client(github: RunningFakeGitHub, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = dashboard(settings_for(github, redis_url, admins="Carol, dave"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


async def through_github(client: httpx.AsyncClient, start: str = "/login") -> httpx.Response:
    """Follow /login to the stand-in's authorize page and back to the callback."""
    login = await client.get(start)
    assert login.status_code == 302, login.text
    authorize = login.headers["location"]
    async with httpx.AsyncClient() as browser:
        back = await browser.get(authorize)
    assert back.status_code == 302, back.text
    callback = urlsplit(back.headers["location"])
    return await client.get(f"{callback.path}?{callback.query}")


async def test_signing_in_lands_on_the_page_asked_for_with_the_repositories_reached(
    client: httpx.AsyncClient, github: RunningFakeGitHub
) -> None:
    github.state.sign_in_as("alice")
    first = await client.get("/")
    assert first.status_code == 303 and first.headers["location"] == "/login?next=/"
    login = await client.get("/login?next=/")
    query = parse_qs(urlsplit(login.headers["location"]).query)
    assert query["redirect_uri"] == ["http://testserver/oauth/callback"]
    assert query["client_id"] == [github.state.app.client_id]  # type: ignore[union-attr]
    done = await through_github(client, "/login?next=/")
    assert done.status_code == 303 and done.headers["location"] == "/"
    me = (await client.get("/")).json()
    assert me["login"] == "alice" and me["admin"] is False
    assert me["repos"] == {f"{ORG}/widgets": "write"}


async def test_admins_are_named_case_insensitively(
    client: httpx.AsyncClient, github: RunningFakeGitHub
) -> None:
    github.state.sign_in_as("carol")
    await through_github(client)
    me = (await client.get("/")).json()
    assert me["admin"] is True and me["repos"] == {}


async def test_a_callback_with_another_sessions_state_is_refused(
    client: httpx.AsyncClient, github: RunningFakeGitHub
) -> None:
    github.state.sign_in_as("alice")
    login = await client.get("/login")
    async with httpx.AsyncClient() as browser:
        back = await browser.get(login.headers["location"])
    code = parse_qs(urlsplit(back.headers["location"]).query)["code"][0]
    forged = await client.get(f"/oauth/callback?code={code}&state=attacker-state")
    assert forged.status_code == 400
    assert "did not start here" in forged.text
    assert (await client.get("/")).status_code == 303


async def test_a_used_or_expired_code_asks_to_sign_in_again(
    client: httpx.AsyncClient, github: RunningFakeGitHub
) -> None:
    github.state.sign_in_as("alice")
    login = await client.get("/login")
    async with httpx.AsyncClient() as browser:
        back = await browser.get(login.headers["location"])
    github.state.expire_codes()
    callback = urlsplit(back.headers["location"])
    answer = await client.get(f"{callback.path}?{callback.query}")
    assert answer.status_code == 400
    assert "expired" in answer.text and 'href="/login"' in answer.text
    assert "bad_verification_code" not in answer.text  # GitHub's words are not echoed


async def test_cancelling_on_github_shows_no_raw_error_text(
    client: httpx.AsyncClient, github: RunningFakeGitHub
) -> None:
    github.state.sign_in_as(None)
    login = await client.get("/login")
    state = parse_qs(urlsplit(login.headers["location"]).query)["state"][0]
    evil = "<script>alert(1)</script>"
    answer = await client.get(
        "/oauth/callback",
        params={"error": "access_denied", "error_description": evil, "state": state},
    )
    assert answer.status_code == 400 and "did not authorise" in answer.text
    assert "<script>" not in answer.text


async def test_a_revoked_token_signs_the_person_out_at_the_next_refresh(
    client: httpx.AsyncClient, github: RunningFakeGitHub, redis_url: str
) -> None:
    github.state.sign_in_as("alice")
    await through_github(client)
    github.state.revoke_user_tokens("alice")
    _age_sessions(redis_url)
    answer = await client.get("/")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
    assert not redis.Redis.from_url(redis_url).keys(SESSION_KEY_PREFIX + "*")


async def test_an_expired_token_is_refreshed_and_the_repository_list_follows_github(
    client: httpx.AsyncClient, github: RunningFakeGitHub, redis_url: str
) -> None:
    github.state.sign_in_as("alice")
    await through_github(client)
    github.state.expire_user_tokens()
    github.state.set_role(ORG, "secret-plans", "alice", "triage")
    _age_sessions(redis_url)
    me = (await client.get("/")).json()
    assert me["repos"] == {f"{ORG}/widgets": "write", f"{ORG}/secret-plans": "triage"}
    assert refreshes(github) == 1


async def test_requests_at_once_share_one_refresh_of_an_expired_token(
    client: httpx.AsyncClient, github: RunningFakeGitHub, redis_url: str
) -> None:
    github.state.sign_in_as("alice")
    await through_github(client)
    github.state.expire_user_tokens()
    _age_sessions(redis_url, expired_token=True)
    answers = await asyncio.gather(*(client.get("/") for _ in range(5)))
    assert [a.status_code for a in answers] == [200] * 5
    assert refreshes(github) == 1


async def test_github_down_keeps_the_last_repository_list(
    client: httpx.AsyncClient, github: RunningFakeGitHub, redis_url: str
) -> None:
    github.state.sign_in_as("alice")
    await through_github(client)
    github.state.fail_next("GET", r"^/user/installations$", 502)
    _age_sessions(redis_url)
    me = (await client.get("/")).json()
    assert me["login"] == "alice" and me["repos"] == {f"{ORG}/widgets": "write"}
    asked = len(github.state.requests_to("GET", r"^/user/installations$"))
    await client.get("/")
    assert len(github.state.requests_to("GET", r"^/user/installations$")) == asked


async def test_a_renewed_token_is_kept_when_listing_repositories_then_fails(
    client: httpx.AsyncClient, github: RunningFakeGitHub, redis_url: str
) -> None:
    github.state.sign_in_as("alice")
    await through_github(client)
    github.state.expire_user_tokens()
    _age_sessions(redis_url, expired_token=True)
    github.state.fail_next("GET", r"^/user/installations$", 502)
    assert (await client.get("/")).json()["repos"] == {f"{ORG}/widgets": "write"}
    _age_sessions(redis_url)
    me = await client.get("/")  # the renewed token still works: no second refresh
    assert me.status_code == 200 and me.json()["login"] == "alice"
    assert refreshes(github) == 1


async def test_a_post_without_the_csrf_token_is_refused(
    client: httpx.AsyncClient, redis_url: str
) -> None:
    settings = AppSettings(session_secret="test-session-secret", redis_url=redis_url)
    csrf = await sign_in(client, settings, "alice", {f"{ORG}/widgets": "write"})
    refused = await client.post("/act", data={"what": "stop"}, headers={"Accept": "text/html"})
    assert refused.status_code == 403 and 'id="error" data-status="403"' in refused.text
    assert "security token" in refused.text
    assert refused.headers["content-security-policy"] == CSP
    plain = await client.post("/act", data={"what": "stop"})
    assert plain.status_code == 403 and plain.headers["content-type"].startswith("text/plain")
    wrong = await client.post("/act", data={"what": "stop", "csrf": csrf + "x"})
    assert wrong.status_code == 403
    ok = await client.post("/act", data={"what": "stop", "csrf": csrf})
    assert ok.status_code == 200 and ok.json() == {"done": "stop"}
    by_header = await client.post("/act", data={"what": "retry"}, headers={"X-CSRF-Token": csrf})
    assert by_header.json() == {"done": "retry"}


async def test_a_cross_site_post_is_refused_even_with_the_token(
    client: httpx.AsyncClient, redis_url: str
) -> None:
    settings = AppSettings(session_secret="test-session-secret", redis_url=redis_url)
    csrf = await sign_in(client, settings, "alice")
    answer = await client.post(
        "/act", data={"csrf": csrf}, headers={"Origin": "https://evil.example"}
    )
    assert answer.status_code == 403 and "came from another site" in answer.text
    same = await client.post("/act", data={"csrf": csrf}, headers={"Origin": "http://testserver"})
    assert same.status_code == 200


async def test_every_answer_carries_the_security_headers(client: httpx.AsyncClient) -> None:
    answer = await client.get("/")
    assert answer.headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"


async def test_cookies_are_secure_behind_tls(github: RunningFakeGitHub, redis_url: str) -> None:
    github.state.sign_in_as("alice")
    settings = settings_for(github, redis_url, public_url="https://trimo.example.com")
    transport = httpx.ASGITransport(app=dashboard(settings))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        login = await http.get("/login")
    cookie = login.headers["set-cookie"].lower()
    assert "secure" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    query = parse_qs(urlsplit(login.headers["location"]).query)
    assert query["redirect_uri"] == ["https://trimo.example.com/oauth/callback"]


async def test_signing_out_needs_the_token_and_ends_the_session(
    client: httpx.AsyncClient, redis_url: str
) -> None:
    settings = AppSettings(session_secret="test-session-secret", redis_url=redis_url)
    csrf = await sign_in(client, settings, "alice")
    assert (await client.post("/logout")).status_code == 403
    assert (await client.get("/")).status_code == 200
    out = await client.post("/logout", data={"csrf": csrf})
    assert out.status_code == 200 and "signed out" in out.text
    assert (await client.get("/")).status_code == 303
    assert not redis.Redis.from_url(redis_url).keys(SESSION_KEY_PREFIX + "*")


async def test_without_oauth_credentials_login_explains_the_setup(redis_url: str) -> None:
    settings = AppSettings(session_secret="s", redis_url=redis_url)
    transport = httpx.ASGITransport(app=dashboard(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        answer = await http.get("/login")
    assert answer.status_code == 503 and "trimo setup" in answer.text


def test_viewer_roles_and_visibility() -> None:
    viewer = Viewer("alice", False, {"Octo-Org/Widgets": "write"})
    assert viewer.role("octo-org/widgets") == "write" and viewer.sees("OCTO-ORG/WIDGETS")
    assert not viewer.sees("octo-org/secret-plans") and viewer.role("x/y") is None
    admin = Viewer("carol", True, {})
    assert admin.sees("octo-org/secret-plans") and admin.role("octo-org/secret-plans") is None


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/pipelines/3?x=1", "/pipelines/3?x=1"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/a\r\nSet-Cookie: x", "/"),
        (None, "/"),
    ],
)
def test_only_local_paths_are_returned_to(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


@pytest.mark.parametrize(
    ("permissions", "role"),
    [
        ({"admin": True, "maintain": True, "push": True, "triage": True, "pull": True}, "admin"),
        ({"admin": False, "maintain": True, "push": True, "pull": True}, "maintain"),
        ({"admin": False, "push": True, "pull": True}, "write"),
        ({"triage": True, "pull": True}, "triage"),
        ({"pull": True}, "read"),
        ({"pull": False}, None),
        (None, None),
    ],
)
def test_roles_from_github_permissions(permissions: object, role: str | None) -> None:
    assert role_from_permissions(permissions) == role


def test_token_answers_form_json_and_errors() -> None:
    form = b"access_token=ghu_1&expires_in=28800&refresh_token=ghr_1&scope=&token_type=bearer"
    token = parse_token_answer("application/x-www-form-urlencoded", form, now=1000.0)
    assert (token.access_token, token.refresh_token, token.expires_at) == ("ghu_1", "ghr_1", 29800)
    plain = parse_token_answer("application/json", b'{"access_token": "gho_2"}', now=0.0)
    assert plain.expires_at is None and not plain.expires_within(10**9)
    for body, reason in [
        (b'{"error": "bad_verification_code", "error_description": "x"}', "expired"),
        (b'{"error": "incorrect_client_credentials"}', "refused"),
        (b"[1]", "malformed"),
        (b"{}", "malformed"),
    ]:
        with pytest.raises(OAuthFailure) as caught:
            parse_token_answer("application/json", body, now=0.0)
        assert caught.value.reason == reason


def refreshes(github: RunningFakeGitHub) -> int:
    """How many times a refresh token was handed to GitHub."""
    asked = github.state.requests_to("POST", r"^/login/oauth/access_token$")
    return sum(1 for r in asked if (r.json or {}).get("grant_type") == "refresh_token")


def _age_sessions(redis_url: str, expired_token: bool = False) -> None:
    """Make every session's repository list (and token) old enough to be renewed."""
    client = redis.Redis.from_url(redis_url)
    for key in client.keys(SESSION_KEY_PREFIX + "*"):
        record = json.loads(client.get(key) or b"{}")
        record["repos_at"] = 0
        if expired_token:
            record["expires_at"] = 1
        client.set(key, json.dumps(record))
