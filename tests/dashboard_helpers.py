"""Signing a test client in to the dashboard without the OAuth round trip.

`sign_in` writes the session to Redis as a real sign-in does and hands the client the signed
session cookie; the repository list counts as fresh for `REPOS_TTL_SECONDS`, so no GitHub
call follows. It returns the session's CSRF token, for forms (`csrf`) and `X-CSRF-Token`.
"""

from __future__ import annotations

import json
import secrets
from base64 import b64encode
from collections.abc import Mapping

import httpx
import itsdangerous

from app.dashboard.auth import (
    SESSION_COOKIE,
    SESSION_CSRF,
    SESSION_ID,
    SignIn,
    session_secret,
)
from app.dashboard.oauth import UserToken
from app.settings import AppSettings


def session_cookie(secret: str, session: Mapping[str, str]) -> str:
    """A session cookie's value as starlette's SessionMiddleware signs it."""
    data = b64encode(json.dumps(dict(session)).encode())
    return itsdangerous.TimestampSigner(secret).sign(data).decode()


async def sign_in(
    client: httpx.AsyncClient,
    settings: AppSettings,
    login: str,
    repos: Mapping[str, str] | None = None,
) -> str:
    """Sign `client` in as `login` with `repos` (full name → role); the CSRF token.

    `settings.session_secret` must be set: the App under test signs with the same one.
    """
    assert settings.session_secret is not None, "set session_secret in the test's settings"
    signin = SignIn(settings)
    try:
        token = UserToken("ghu_test_" + secrets.token_hex(8), None, None)
        session_id = await signin.open_session(login, token, dict(repos or {}))
    finally:
        await signin.redis.aclose()
    csrf = secrets.token_urlsafe(32)
    cookie = session_cookie(session_secret(settings), {SESSION_ID: session_id, SESSION_CSRF: csrf})
    client.cookies.set(SESSION_COOKIE, cookie)
    return csrf
